//! Line diffs of vulnerable/fixed function pairs: which lines a fix deleted
//! and added, for the records that carry no `line_changes` of their own, and
//! where a deletion sits in the other version (a fix that only deletes lines
//! still needs a point of interest in the fixed code).

/// One side's changed lines and the alignment of unchanged lines, as 0-based rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineDiff {
    /// Rows of the old text that are not in the new one.
    pub deleted: Vec<usize>,
    /// Rows of the new text that are not in the old one.
    pub added: Vec<usize>,
    /// (old row, new row) of every unchanged line, ascending in both.
    pub same: Vec<(usize, usize)>,
}

/// Above this many cells the quadratic LCS table is not worth it; such pairs
/// (thousands of lines on both sides with a changed middle) fall back to
/// treating the whole differing middle as changed.
const MAX_TABLE_CELLS: usize = 16_000_000;

/// A longest-common-subsequence diff of the lines of `old` and `new`, after
/// stripping the common prefix and suffix (usually almost all of a function).
pub fn diff_lines(old: &str, new: &str) -> LineDiff {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    let mut diff = LineDiff::default();
    diff.same.extend((0..prefix).map(|i| (i, i)));
    let (n, m) = (a_mid.len(), b_mid.len());
    if n * m <= MAX_TABLE_CELLS {
        // table[i][j] = LCS length of a_mid[i..] and b_mid[j..].
        let width = m + 1;
        let mut table = vec![0u32; (n + 1) * width];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                table[i * width + j] = if a_mid[i] == b_mid[j] {
                    table[(i + 1) * width + j + 1] + 1
                } else {
                    table[(i + 1) * width + j].max(table[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if a_mid[i] == b_mid[j] {
                diff.same.push((prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if table[(i + 1) * width + j] >= table[i * width + j + 1] {
                diff.deleted.push(prefix + i);
                i += 1;
            } else {
                diff.added.push(prefix + j);
                j += 1;
            }
        }
        diff.deleted.extend((i..n).map(|i| prefix + i));
        diff.added.extend((j..m).map(|j| prefix + j));
    } else {
        diff.deleted.extend((0..n).map(|i| prefix + i));
        diff.added.extend((0..m).map(|j| prefix + j));
    }
    diff.same
        .extend((0..suffix).map(|k| (a.len() - suffix + k, b.len() - suffix + k)));
    diff
}

impl LineDiff {
    /// The rows of the new text next to where old rows `old_rows` were
    /// removed: the counterparts of the nearest unchanged line before and
    /// after each removed row. Used as points of interest when a fix only
    /// deletes code.
    pub fn new_rows_around(&self, old_rows: &[usize], new_len: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for &row in old_rows {
            let before = self.same.iter().rev().find(|(o, _)| *o < row);
            let after = self.same.iter().find(|(o, _)| *o > row);
            out.extend(before.map(|&(_, n)| n));
            out.extend(after.map(|&(_, n)| n).filter(|&n| n < new_len));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The same, mapping rows of the new text back onto the old one.
    pub fn old_rows_around(&self, new_rows: &[usize], old_len: usize) -> Vec<usize> {
        let flipped = LineDiff {
            deleted: self.added.clone(),
            added: self.deleted.clone(),
            same: self.same.iter().map(|&(o, n)| (n, o)).collect(),
        };
        flipped.new_rows_around(new_rows, old_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_changed_lines() {
        let old = "a\nb\nc\nd\n";
        let new = "a\nB\nc\nx\nd\n";
        let d = diff_lines(old, new);
        assert_eq!(d.deleted, [1]);
        assert_eq!(d.added, [1, 3]);
        assert_eq!(d.same, [(0, 0), (2, 2), (3, 4)]);
    }

    #[test]
    fn maps_a_pure_deletion_onto_its_neighbours() {
        let old = "a\nb\nbad()\nc\n";
        let new = "a\nb\nc\n";
        let d = diff_lines(old, new);
        assert_eq!(d.deleted, [2]);
        assert!(d.added.is_empty());
        assert_eq!(d.new_rows_around(&d.deleted, 3), [1, 2]);
        let d = diff_lines(new, old);
        assert_eq!(d.old_rows_around(&d.added, 3), [1, 2]);
    }

    #[test]
    fn identical_texts_have_no_changes() {
        let d = diff_lines("x\ny", "x\ny");
        assert!(d.deleted.is_empty() && d.added.is_empty());
        assert_eq!(d.same.len(), 2);
    }
}
