//! The vulnerable/fixed code pairs of SafeCoder and SVEN: reading them,
//! naming their language, deduplicating them and finding their points of
//! interest (the lines each fix changed).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::diff::diff_lines;
use super::parse_cwe_id;
use super::sources::{SAFECODER_FILES, SVEN_DIRS, SourceFiles};
use crate::{Error, Result};

/// One labelled pair, as read, with its changed lines as 0-based rows.
#[derive(Debug, Clone)]
pub struct Pair {
    /// "safecoder:train:sec-new-desc:12": dataset, split, file stem, 1-based line.
    pub id: String,
    /// "safecoder" or "sven".
    pub dataset: &'static str,
    /// "train" or "val".
    pub split: String,
    /// "sec-new-desc.jsonl:12": file name and 1-based line in the split.
    pub record: String,
    pub cwe: u32,
    /// Lowercase, as the plugin names languages: python, c, cpp, javascript,
    /// go, java, ruby.
    pub language: &'static str,
    pub func_name: String,
    pub file_name: String,
    pub commit_link: String,
    /// SafeCoder's one-sentence task ("Write a Python function that ..."), or ''.
    pub description: String,
    pub before: String,
    pub after: String,
    /// Rows of `before` the fix deleted.
    pub deleted: Vec<usize>,
    /// Rows of `after` the fix added.
    pub added: Vec<usize>,
    /// Whether `deleted`/`added` come from the record's `line_changes` (else
    /// from our own line diff).
    pub from_line_changes: bool,
}

impl Pair {
    /// Points of interest in the fixed version: the added rows, or, for a
    /// fix that only deleted code, the rows around the deletion.
    pub fn fixed_points(&self) -> Vec<usize> {
        if !self.added.is_empty() {
            return self.added.clone();
        }
        let diff = diff_lines(&self.before, &self.after);
        diff.new_rows_around(&self.deleted, self.after.lines().count())
    }

    /// Points of interest in the vulnerable version: the deleted rows, or
    /// the rows around where code was added.
    pub fn vulnerable_points(&self) -> Vec<usize> {
        if !self.deleted.is_empty() {
            return self.deleted.clone();
        }
        let diff = diff_lines(&self.before, &self.after);
        diff.old_rows_around(&self.added, self.before.lines().count())
    }
}

/// What was skipped while reading, for the build report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairStats {
    pub read: usize,
    pub duplicates: usize,
    pub unchanged: usize,
    pub unknown_language: usize,
}

#[derive(Deserialize)]
struct RawPair {
    func_name: String,
    func_src_before: String,
    func_src_after: String,
    #[serde(default)]
    commit_link: String,
    file_name: String,
    vul_type: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    line_changes: Option<LineChanges>,
}

#[derive(Deserialize)]
struct LineChanges {
    deleted: Vec<LineChange>,
    added: Vec<LineChange>,
}

#[derive(Deserialize)]
struct LineChange {
    line_no: usize,
}

/// The language of a file, from its extension, as SafeCoder decides it.
pub fn language_of(file_name: &str) -> Option<&'static str> {
    let ext = file_name.rsplit_once('.')?.1;
    Some(match ext {
        "py" => "python",
        "c" | "h" => "c",
        "C" | "cc" | "cpp" | "cxx" | "hpp" | "hh" => "cpp",
        "js" | "jsx" | "mjs" => "javascript",
        "go" => "go",
        "java" => "java",
        "rb" => "ruby",
        _ => return None,
    })
}

/// Every distinct pair of SafeCoder (`sec-new-desc`, both splits) and SVEN
/// (both splits), in a fixed order: SafeCoder before SVEN, train before val,
/// file order within. SafeCoder's `val/sec-desc.jsonl` holds the SVEN val
/// pairs again (with task descriptions): its descriptions are attached to
/// those pairs instead of reading them twice. A pair whose before/after text
/// was already read is a duplicate and skipped; so is a "fix" that changes
/// nothing.
pub fn read_pairs(files: &mut SourceFiles) -> Result<(Vec<Pair>, PairStats)> {
    let mut descriptions: HashMap<(String, String), String> = HashMap::new();
    let mut inputs: Vec<(&'static str, String, String)> = Vec::new();
    for rel in SAFECODER_FILES {
        if rel.ends_with("/sec-desc.jsonl") {
            for (_, raw) in parse_file(files, rel)? {
                if let Some(d) = raw.description.filter(|d| !d.trim().is_empty()) {
                    descriptions.insert((raw.func_src_before, raw.func_src_after), d);
                }
            }
        } else {
            inputs.push(("safecoder", split_of(rel), rel.to_string()));
        }
    }
    for dir in SVEN_DIRS {
        let names = files.list(dir, false, &|name| {
            name.starts_with("cwe-") && name.ends_with(".jsonl")
        })?;
        for rel in names {
            inputs.push(("sven", split_of(&rel), rel));
        }
    }

    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut stats = PairStats::default();
    let mut pairs = Vec::new();
    for (dataset, split, rel) in inputs {
        let file = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        let stem = file.trim_end_matches(".jsonl").to_string();
        for (line_no, raw) in parse_file(files, &rel)? {
            stats.read += 1;
            let bad = |message: String| Error::KbSource {
                path: files.path(&rel),
                message: format!("line {line_no}: {message}"),
            };
            let cwe = parse_cwe_id(&raw.vul_type)
                .ok_or_else(|| bad(format!("vul_type {:?} is not a CWE id", raw.vul_type)))?;
            let Some(language) = language_of(&raw.file_name) else {
                stats.unknown_language += 1;
                continue;
            };
            if raw.func_src_before == raw.func_src_after {
                stats.unchanged += 1;
                continue;
            }
            let key = (raw.func_src_before.clone(), raw.func_src_after.clone());
            if !seen.insert(key.clone()) {
                stats.duplicates += 1;
                continue;
            }
            let (deleted, added, from_line_changes) = match &raw.line_changes {
                Some(lc) if !(lc.deleted.is_empty() && lc.added.is_empty()) => {
                    let rows = |changes: &[LineChange], text: &str| -> Vec<usize> {
                        let len = text.lines().count();
                        let mut rows: Vec<usize> = changes
                            .iter()
                            .filter(|c| c.line_no >= 1 && c.line_no <= len)
                            .map(|c| c.line_no - 1)
                            .collect();
                        rows.sort_unstable();
                        rows.dedup();
                        rows
                    };
                    (
                        rows(&lc.deleted, &raw.func_src_before),
                        rows(&lc.added, &raw.func_src_after),
                        true,
                    )
                }
                _ => {
                    let d = diff_lines(&raw.func_src_before, &raw.func_src_after);
                    (d.deleted, d.added, false)
                }
            };
            let description = raw
                .description
                .clone()
                .or_else(|| descriptions.get(&key).cloned())
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            pairs.push(Pair {
                id: format!("{dataset}:{split}:{stem}:{line_no}"),
                dataset,
                split: split.clone(),
                record: format!("{file}:{line_no}"),
                cwe,
                language,
                func_name: raw.func_name,
                file_name: raw.file_name,
                commit_link: raw.commit_link,
                description,
                before: raw.func_src_before,
                after: raw.func_src_after,
                deleted,
                added,
                from_line_changes,
            });
        }
    }
    Ok((pairs, stats))
}

/// "train" or "val", from a path like `sven/data_train_val/val/cwe-022.jsonl`.
fn split_of(rel: &str) -> String {
    let parts: Vec<&str> = rel.split('/').collect();
    parts
        .len()
        .checked_sub(2)
        .map(|i| parts[i].to_string())
        .unwrap_or_default()
}

/// The records of one JSON-lines file with their 1-based line numbers.
fn parse_file(files: &mut SourceFiles, rel: &str) -> Result<Vec<(usize, RawPair)>> {
    let text = files.read_text(rel)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawPair = serde_json::from_str(line).map_err(|e| Error::KbSource {
            path: files.path(rel),
            message: format!("line {}: {e}", n + 1),
        })?;
        out.push((n + 1, raw));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_follow_the_file_extension() {
        assert_eq!(language_of("a/b.py"), Some("python"));
        assert_eq!(language_of("x.h"), Some("c"));
        assert_eq!(language_of("x.C"), Some("cpp"));
        assert_eq!(language_of("x.jsx"), Some("javascript"));
        assert_eq!(language_of("lib/x.rb"), Some("ruby"));
        assert_eq!(language_of("Makefile"), None);
        assert_eq!(split_of("sven/data_train_val/val/cwe-022.jsonl"), "val");
    }
}
