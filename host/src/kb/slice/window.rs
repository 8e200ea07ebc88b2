//! The fallback snippet: rows around the change, completed by indentation
//! so the block structure stays whole. Used for languages without a grammar
//! here (Ruby) and when a dependence-graph slice would not parse.

use std::collections::BTreeSet;

/// Rows of context kept on each side of a changed row.
pub const CONTEXT: usize = 2;

/// Keywords that continue a block at the opener's indentation.
const CONTINUATIONS: &[&str] = &[
    "else", "elsif", "elif", "when", "rescue", "ensure", "except", "finally", "catch", "}",
];
/// Keywords (or characters) that close a block at the opener's indentation.
const CLOSERS: &[&str] = &["end", "}", ")", "]"];

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn starts_with_any(line: &str, words: &[&str]) -> bool {
    let t = line.trim_start();
    words.iter().any(|w| {
        t.starts_with(w)
            && t[w.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
    })
}

/// The first row, rows within [`CONTEXT`] of a point, and for every kept
/// row the lines that open its enclosing blocks and close them.
pub fn window(text: &str, points: &[usize]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let blank = |r: usize| lines[r].trim().is_empty();
    let mut kept: BTreeSet<usize> = BTreeSet::from([0]);
    for &p in points {
        let lo = p.saturating_sub(CONTEXT);
        let hi = (p + CONTEXT).min(lines.len() - 1);
        kept.extend((lo..=hi).filter(|&r| !blank(r)));
    }

    // Openers: the nearest less-indented row above, up to the first row; a
    // continuation (`else`, `rescue`) also needs the row that began its block.
    let mut todo: Vec<usize> = kept.iter().copied().collect();
    while let Some(r) = todo.pop() {
        let mut level = indent(lines[r]);
        let mut row = r;
        while level > 0 && row > 0 {
            let Some(open) = (0..row)
                .rev()
                .find(|&k| !blank(k) && indent(lines[k]) < level)
            else {
                break;
            };
            if kept.insert(open) {
                todo.push(open);
            }
            if starts_with_any(lines[open], CONTINUATIONS) {
                let start = (0..open).rev().find(|&k| {
                    !blank(k)
                        && indent(lines[k]) == indent(lines[open])
                        && !starts_with_any(lines[k], CONTINUATIONS)
                });
                if let Some(s) = start
                    && kept.insert(s)
                {
                    todo.push(s);
                }
            }
            level = indent(lines[open]);
            row = open;
        }
    }

    // Closers: for every kept row that opens a block, the row at its own
    // indentation that ends the block.
    let openers: Vec<usize> = kept.iter().copied().collect();
    for r in openers {
        let level = indent(lines[r]);
        let Some(next) = (r + 1..lines.len()).find(|&k| !blank(k)) else {
            continue;
        };
        if indent(lines[next]) <= level {
            continue;
        }
        for (k, line) in lines.iter().enumerate().skip(next) {
            if line.trim().is_empty() || indent(line) > level {
                continue;
            }
            if indent(line) < level {
                break;
            }
            if starts_with_any(line, CLOSERS) {
                kept.insert(k);
                break;
            }
            if !starts_with_any(line, CONTINUATIONS) {
                break;
            }
        }
    }
    kept.iter()
        .map(|&r| lines[r].trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_window_keeps_block_structure() {
        let src = "def load_file(path)\n  data = IO.read(path)\n  if data.empty?\n    return {}\n  else\n    x = 1\n    y = 2\n    z = 3\n    w = 4\n    YAML.safe_load(data)\n  end\nend";
        let out = window(src, &[9]);
        assert_eq!(
            out,
            "def load_file(path)\n  if data.empty?\n  else\n    z = 3\n    w = 4\n    YAML.safe_load(data)\n  end\nend"
        );
    }
}
