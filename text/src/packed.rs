//! The KB's packed columns: fixed-width little-endian records in one blob,
//! read whole by the plugin instead of as one SQLite row per record (a row
//! costs ~2,000 instructions of SQLite's machinery; a record here, a few).
//! The KB build writes them, the plugin and the host's SQL functions read
//! them; the layouts live here so the two sides cannot disagree.

/// How many candidate examples the code level ranks per CWE (and the KB
/// keeps per CWE and language): the shortest ones, which show a fix with
/// the fewest tokens.
pub const EXAMPLE_POOL_SIZE: usize = 32;

/// The id under which the KB stores ordinary coding tasks (no weakness; no
/// CWE has id 0) among the scenarios, and the scenario facet reads them.
pub const ORDINARY_TASKS: u32 = 0;

/// Bytes of one CWE id (u32).
const ID: usize = 4;
/// Bytes of one posting: CWE id (u32) and score (f64).
const POSTING: usize = 12;
/// Bytes of one score (f64).
const SCORE: usize = 8;

/// CWE ids, each a u32.
pub fn write_ids(ids: impl IntoIterator<Item = i64>) -> Vec<u8> {
    ids.into_iter()
        .flat_map(|id| (id as u32).to_le_bytes())
        .collect()
}

/// The ids of a [`write_ids`] blob; `None` when it is not one.
pub fn read_ids(bytes: &[u8]) -> Option<Vec<i64>> {
    if !bytes.len().is_multiple_of(ID) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(ID)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    )
}

/// A posting list: (CWE id, score) records.
pub fn write_postings(postings: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(postings.len() * POSTING);
    for (id, score) in postings {
        out.extend((*id as u32).to_le_bytes());
        out.extend(score.to_le_bytes());
    }
    out
}

/// Calls `f` with each record of a [`write_postings`] blob; `None` (and no
/// call) when it is not one.
pub fn for_each_posting(bytes: &[u8], mut f: impl FnMut(i64, f64)) -> Option<()> {
    if !bytes.len().is_multiple_of(POSTING) {
        return None;
    }
    for record in bytes.chunks_exact(POSTING) {
        let (id, score) = record.split_at(ID);
        f(
            i64::from(u32::from_le_bytes(id.try_into().ok()?)),
            f64::from_le_bytes(score.try_into().ok()?),
        );
    }
    Some(())
}

/// Scores, each an f64.
pub fn write_scores(scores: impl IntoIterator<Item = f64>) -> Vec<u8> {
    scores.into_iter().flat_map(f64::to_le_bytes).collect()
}

/// The scores of a [`write_scores`] blob; `None` when it is not one.
pub fn read_scores(bytes: &[u8]) -> Option<Vec<f64>> {
    if !bytes.len().is_multiple_of(SCORE) {
        return None;
    }
    bytes
        .chunks_exact(SCORE)
        .map(|c| c.try_into().ok().map(f64::from_le_bytes))
        .collect()
}

/// Counts, each a u32.
pub fn write_counts(counts: impl IntoIterator<Item = usize>) -> Vec<u8> {
    counts
        .into_iter()
        .flat_map(|n| (n as u32).to_le_bytes())
        .collect()
}

/// The counts of a [`write_counts`] blob; `None` when it is not one.
pub fn read_counts(bytes: &[u8]) -> Option<Vec<usize>> {
    read_ids(bytes).map(|ids| ids.into_iter().map(|n| n as usize).collect())
}

/// A sequence of word sets (`crate::word_set`): each a u32 count of hashes,
/// then the hashes.
pub fn write_word_sets<'a>(sets: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for set in sets {
        out.extend(((set.len() / 8) as u32).to_le_bytes());
        out.extend(set);
    }
    out
}

/// Calls `f` with each word set of a [`write_word_sets`] blob; `None` when
/// it is not one (after calling `f` for the sets before the damage).
pub fn for_each_word_set(mut bytes: &[u8], mut f: impl FnMut(&[u8])) -> Option<()> {
    while !bytes.is_empty() {
        let (count, rest) = bytes.split_first_chunk::<ID>()?;
        let len = (u32::from_le_bytes(*count) as usize).checked_mul(8)?;
        if rest.len() < len {
            return None;
        }
        let (set, rest) = rest.split_at(len);
        f(set);
        bytes = rest;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        assert_eq!(
            read_ids(&write_ids([89, 79, 1333])),
            Some(vec![89, 79, 1333])
        );
        let postings = [(89, 7.25), (79, -0.5)];
        let mut read = Vec::new();
        for_each_posting(&write_postings(&postings), |id, s| read.push((id, s))).unwrap();
        assert_eq!(read, postings);
        assert_eq!(read_scores(&write_scores([0.5, 1.0])), Some(vec![0.5, 1.0]));
    }

    #[test]
    fn word_set_sequences_round_trip() {
        let sets = [
            crate::word_set("cursor.execute"),
            Vec::new(),
            crate::word_set("a b c"),
        ];
        let blob = write_word_sets(sets.iter().map(Vec::as_slice));
        let mut read = Vec::new();
        for_each_word_set(&blob, |set| read.push(set.to_vec())).unwrap();
        assert_eq!(read, sets);
        assert_eq!(read_counts(&write_counts([3, 0, 7])), Some(vec![3, 0, 7]));
        // A count that runs past the end, or a torn count, is refused.
        assert_eq!(for_each_word_set(&blob[..blob.len() - 1], |_| {}), None);
        assert_eq!(for_each_word_set(&[1, 0], |_| {}), None);
    }

    #[test]
    fn truncated_blobs_are_refused() {
        assert_eq!(read_ids(&[1, 2, 3]), None);
        assert_eq!(read_scores(&[0; 9]), None);
        let mut calls = 0;
        assert_eq!(for_each_posting(&[0; 13], |_, _| calls += 1), None);
        assert_eq!(calls, 0);
    }
}
