//! The raw inputs under the sources directory (see its README.md): reading
//! them while recording a sha256 of every file read, and extracting the CWE
//! ids that decide which weaknesses are retrieval candidates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::parse_cwe_id;
use crate::{Error, Result};

/// The MITRE CWE catalog, relative to the sources directory.
pub const CWE_XML: &str = "cwe/cwec_v4.14.xml";

/// SafeCoder pair files that exist in the snapshot (`train/sec-desc.jsonl` is
/// missing upstream; its pairs are the SVEN training pairs read below).
pub const SAFECODER_FILES: &[&str] = &[
    "safecoder/data_train_val/train/sec-new-desc.jsonl",
    "safecoder/data_train_val/val/sec-new-desc.jsonl",
    "safecoder/data_train_val/val/sec-desc.jsonl",
];

/// SVEN keeps one `cwe-NNN.jsonl` per CWE in each split.
pub const SVEN_DIRS: &[&str] = &["sven/data_train_val/train", "sven/data_train_val/val"];

/// CodeShield Insecure Code Detector rules (regex + semgrep, CWE-tagged).
pub const CODESHIELD_RULES: &str = "codeshield-rules/rules";

/// The 2024 CWE Top 25 Most Dangerous Software Weaknesses, in rank order
/// (MITRE, November 2024: <https://cwe.mitre.org/top25/archive/2024/2024_cwe_top25.html>).
pub const TOP25_2024: [u32; 25] = [
    79, 787, 89, 352, 22, 125, 78, 416, 862, 434, 94, 20, 77, 287, 269, 502, 200, 863, 918, 119,
    476, 798, 190, 400, 306,
];

/// The catalog's views of the earlier CWE Top 25 lists (2019 to 2023; the
/// 2024 list postdates catalog 4.14, hence [`TOP25_2024`]). A weakness that
/// made any year's list is common enough in real code to be worth knowledge.
pub const TOP25_VIEWS: [u32; 5] = [1200, 1350, 1337, 1387, 1425];

/// The catalog's view of the OWASP Top Ten 2021, the list web teams audit
/// against: its ten categories group 182 weaknesses, among them the web and
/// crypto weaknesses no Top 25 names (header splitting, predictable IVs,
/// log forging, session handling).
pub const OWASP_TOP10_2021_VIEW: u32 = 1344;

/// Reads input files relative to the sources root and remembers the sha256
/// of each, so the built KB records exactly what it was made from.
pub struct SourceFiles {
    root: PathBuf,
    hashes: BTreeMap<String, String>,
}

impl SourceFiles {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            hashes: BTreeMap::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        rel.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    pub fn read(&mut self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path(rel);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path, source })?;
        self.hashes
            .insert(rel.to_owned(), hex::encode(Sha256::digest(&bytes)));
        Ok(bytes)
    }

    pub fn read_text(&mut self, rel: &str) -> Result<String> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes).map_err(|e| Error::KbSource {
            path: self.path(rel),
            message: format!("not valid UTF-8: {e}"),
        })
    }

    /// Relative paths of the files under `rel_dir` (recursively when asked)
    /// whose name satisfies `keep`, sorted so the build reads them in a fixed order.
    pub fn list(
        &self,
        rel_dir: &str,
        recursive: bool,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.list_into(rel_dir, recursive, keep, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn list_into(
        &self,
        rel_dir: &str,
        recursive: bool,
        keep: &dyn Fn(&str) -> bool,
        out: &mut Vec<String>,
    ) -> Result<()> {
        let dir = self.path(rel_dir);
        let io_error = |source| Error::Io {
            path: dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = std::fs::metadata(entry.path()).map_err(io_error)?.is_dir();
            entries.push((name, is_dir));
        }
        for (name, is_dir) in entries {
            let rel = format!("{rel_dir}/{name}");
            if is_dir {
                if recursive {
                    self.list_into(&rel, recursive, keep, out)?;
                }
            } else if keep(&name) {
                out.push(rel);
            }
        }
        Ok(())
    }

    /// Reads a file that lives outside the sources root (one the source
    /// tree ships), recording its hash under `label` rather than its path,
    /// so where the repository is checked out does not change the KB.
    pub fn read_outside(&mut self, label: &str, path: &Path) -> Result<String> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.hashes
            .insert(label.to_owned(), hex::encode(Sha256::digest(&bytes)));
        String::from_utf8(bytes).map_err(|e| Error::KbSource {
            path: path.to_owned(),
            message: format!("not valid UTF-8: {e}"),
        })
    }

    /// sha256 (hex) of every file read, by relative path.
    pub fn into_hashes(self) -> BTreeMap<String, String> {
        self.hashes
    }
}

#[derive(Deserialize)]
struct PairRecord {
    vul_type: String,
    #[serde(default)]
    description: Option<String>,
}

/// CWE labels (`vul_type`, e.g. "cwe-022") of every pair in a JSON-lines file.
pub fn dataset_cwes(files: &mut SourceFiles, rel: &str) -> Result<BTreeSet<u32>> {
    let text = files.read_text(rel)?;
    let mut cwes = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::KbSource {
            path: files.path(rel),
            message: format!("line {}: {message}", n + 1),
        };
        let record: PairRecord = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let id = parse_cwe_id(&record.vul_type)
            .ok_or_else(|| bad(format!("vul_type {:?} is not a CWE id", record.vul_type)))?;
        cwes.insert(id);
    }
    if cwes.is_empty() {
        return Err(Error::KbSource {
            path: files.path(rel),
            message: "no labelled pairs".into(),
        });
    }
    Ok(cwes)
}

/// Every CWE labelled in the SafeCoder pair files.
pub fn safecoder_cwes(files: &mut SourceFiles) -> Result<BTreeSet<u32>> {
    let mut cwes = BTreeSet::new();
    for rel in SAFECODER_FILES {
        cwes.extend(dataset_cwes(files, rel)?);
    }
    Ok(cwes)
}

/// The natural-language task descriptions of the SafeCoder pairs ("Write a
/// Python function that ..."), per CWE, deduplicated and sorted so the build
/// is deterministic. SVEN pairs carry no descriptions.
pub fn safecoder_tasks(files: &mut SourceFiles) -> Result<BTreeMap<u32, Vec<String>>> {
    let mut tasks: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for rel in SAFECODER_FILES {
        let text = files.read_text(rel)?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: PairRecord = serde_json::from_str(line).map_err(|e| Error::KbSource {
                path: files.path(rel),
                message: format!("line {}: {e}", n + 1),
            })?;
            let (Some(id), Some(description)) =
                (parse_cwe_id(&record.vul_type), record.description)
            else {
                continue;
            };
            let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
            if !description.is_empty() {
                tasks.entry(id).or_default().insert(description);
            }
        }
    }
    Ok(tasks
        .into_iter()
        .map(|(id, set)| (id, set.into_iter().collect()))
        .collect())
}

/// One line of the developer-scenario file (`scenarios/developer-tasks.jsonl`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRecord {
    cwe: u32,
    lang: String,
    task: String,
}

/// One line of the ordinary-task file (`scenarios/ordinary-tasks.jsonl`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdinaryRecord {
    lang: String,
    task: String,
}

/// The developer-phrased task scenarios per CWE (scenarios/README.md): what
/// a request looks like when the weakness is a natural risk of the code it
/// asks for, as (language, task). In file order per CWE (the build is
/// deterministic because the file is).
pub fn developer_scenarios(
    files: &mut SourceFiles,
    label: &str,
    path: &Path,
) -> Result<BTreeMap<u32, Vec<(String, String)>>> {
    let mut scenarios: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for (cwe, lang, task) in task_lines(files, label, path, |r: ScenarioRecord| {
        (r.cwe, r.lang, r.task)
    })? {
        scenarios.entry(cwe).or_default().push((lang, task));
    }
    Ok(scenarios)
}

/// Ordinary coding requests in which no weakness is a natural risk, as
/// (language, task), in file order: the scenario facet's counterweight
/// (scenarios/README.md).
pub fn ordinary_tasks(
    files: &mut SourceFiles,
    label: &str,
    path: &Path,
) -> Result<Vec<(String, String)>> {
    Ok(
        task_lines(files, label, path, |r: OrdinaryRecord| ((), r.lang, r.task))?
            .into_iter()
            .map(|((), lang, task)| (lang, task))
            .collect(),
    )
}

/// The records of a task file of JSON lines, each split by `parts` into a
/// key, a language and a task, in file order: blank lines skipped, the task's
/// whitespace collapsed, the language trimmed; a line that is not a record,
/// or has an empty task or language, is an error naming the line.
fn task_lines<R: serde::de::DeserializeOwned, K>(
    files: &mut SourceFiles,
    label: &str,
    path: &Path,
    parts: impl Fn(R) -> (K, String, String),
) -> Result<Vec<(K, String, String)>> {
    let text = files.read_outside(label, path)?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::KbSource {
            path: path.to_owned(),
            message: format!("line {}: {message}", n + 1),
        };
        let record: R = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let (key, lang, task) = parts(record);
        let task = task.split_whitespace().collect::<Vec<_>>().join(" ");
        let lang = lang.trim().to_owned();
        if task.is_empty() || lang.is_empty() {
            return Err(bad("empty task or language".into()));
        }
        lines.push((key, lang, task));
    }
    Ok(lines)
}

/// Every CWE labelled in the SVEN pair files of both splits.
pub fn sven_cwes(files: &mut SourceFiles) -> Result<BTreeSet<u32>> {
    let mut cwes = BTreeSet::new();
    for dir in SVEN_DIRS {
        let names = files.list(dir, false, &|name| {
            name.starts_with("cwe-") && name.ends_with(".jsonl")
        })?;
        if names.is_empty() {
            return Err(Error::KbSource {
                path: files.path(dir),
                message: "no cwe-*.jsonl files".into(),
            });
        }
        for rel in names {
            cwes.extend(dataset_cwes(files, &rel)?);
        }
    }
    Ok(cwes)
}

/// Every `CWE-<n>` referenced by a CodeShield rule file (YAML sources and the
/// compiled JSON rule sets; test fixtures and the README are not rules).
pub fn codeshield_cwes(files: &mut SourceFiles) -> Result<BTreeSet<u32>> {
    let names = files.list(CODESHIELD_RULES, true, &|name| {
        name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
    })?;
    let mut cwes = BTreeSet::new();
    for rel in names {
        let bytes = files.read(&rel)?;
        cwes.extend(scan_cwe_refs(&String::from_utf8_lossy(&bytes)));
    }
    if cwes.is_empty() {
        return Err(Error::KbSource {
            path: files.path(CODESHIELD_RULES),
            message: "no CWE-<n> references in any rule file".into(),
        });
    }
    Ok(cwes)
}

/// The ids of all `CWE-<digits>` occurrences (the `\bCWE-\d+` of a grep).
pub fn scan_cwe_refs(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find("CWE-") {
        let start = from + pos;
        let digits_start = start + 4;
        let digits = bytes[digits_start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let at_word_start = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if digits > 0
            && at_word_start
            && let Ok(id) = text[digits_start..digits_start + digits].parse()
        {
            out.push(id);
        }
        from = digits_start + digits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cwe_references() {
        assert_eq!(
            scan_cwe_refs("cwe_id: CWE-022\n  cwe: \"CWE-89: SQLi\" XCWE-1 CWE-x CWE-1240"),
            [22, 89, 1240]
        );
    }
}
