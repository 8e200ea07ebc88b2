//! The deterministic summarizer: no model, the same text on every build.
//! The guideline is the catalog's (mitigations turned into rules) plus, when
//! the fixes of several projects agree on it, a rule naming the call they
//! replaced; the cause is the catalog's plus what the fixes changed in the
//! calls. Both are functions of the [`Evidence`] only, so merging is exact.

use super::{CweBrief, Evidence, PairDigest, Summarizer, Summary};
use crate::Result;

/// `kb_meta.backend` of knowledge bases summarized offline.
pub const BACKEND: &str = "offline-catalog+pairs-v1";

/// A call replacement becomes a rule when the fixes of this many projects
/// made it.
pub const MIN_PROJECTS_FOR_RULE: usize = 3;
/// Calls named in the cause appear in this many projects' fixes at least.
pub const MIN_PROJECTS_FOR_CAUSE: usize = 2;
/// Replacement rules added to a guideline, at most.
pub const MAX_PAIR_RULES: usize = 2;
/// Calls named in the cause, at most, per direction.
pub const MAX_CAUSE_APIS: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
pub struct Offline;

impl Summarizer for Offline {
    fn backend(&self) -> String {
        BACKEND.to_string()
    }

    fn summarize_batch(
        &mut self,
        cwe: &CweBrief,
        _pairs: &[PairDigest],
        evidence: &Evidence,
    ) -> Result<Summary> {
        Ok(summarize(cwe, evidence))
    }

    fn merge(
        &mut self,
        cwe: &CweBrief,
        _parts: &[Summary],
        evidence: &Evidence,
    ) -> Result<Summary> {
        Ok(summarize(cwe, evidence))
    }
}

/// The display name of a language as the KB stores it.
pub fn language_name(language: &str) -> &str {
    match language {
        "python" => "Python",
        "c" => "C",
        "cpp" | "c++" => "C++",
        "javascript" => "JavaScript",
        "go" => "Go",
        "java" => "Java",
        "ruby" => "Ruby",
        other => other,
    }
}

pub fn summarize(cwe: &CweBrief, evidence: &Evidence) -> Summary {
    let mut guideline: Vec<String> = cwe
        .catalog_guideline
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    guideline.extend(replacement_rules(evidence));
    let mut cause = cwe.catalog_cause.clone();
    let changes = api_sentence(evidence);
    if !changes.is_empty() {
        if !cause.is_empty() {
            cause.push(' ');
        }
        cause.push_str(&changes);
    }
    Summary {
        guideline: guideline.join("\n"),
        cause,
    }
}

/// "- Call `yaml.safe_load` instead of `yaml.load` (Python; 12 fixes in 9
/// projects do so)." A replacement qualifies when the fixes of
/// [`MIN_PROJECTS_FOR_RULE`] projects made it; among the qualifying
/// replacements of one call, the one made by most fixes wins (a fix that
/// moves to `tempfile.mkstemp` also adds the `os.close` its descriptor needs,
/// in fewer pairs).
fn replacement_rules(evidence: &Evidence) -> Vec<String> {
    type Best<'a> = (usize, usize, &'a str, &'a str, &'a str);
    let mut best: Vec<Best<'_>> = Vec::new();
    for ((lang, old, new), support) in &evidence.replaced {
        let (pairs, projects) = (support.pairs, support.projects.len());
        if projects < MIN_PROJECTS_FOR_RULE || old == new {
            continue;
        }
        let candidate = (pairs, projects, lang.as_str(), old.as_str(), new.as_str());
        match best.iter_mut().find(|b| b.2 == lang && b.3 == old) {
            Some(b) if (b.0, b.1) >= (pairs, projects) => {}
            Some(b) => *b = candidate,
            None => best.push(candidate),
        }
    }
    best.sort_by(|a, b| {
        (b.0, b.1)
            .cmp(&(a.0, a.1))
            .then_with(|| (a.2, a.3, a.4).cmp(&(b.2, b.3, b.4)))
    });
    best.into_iter()
        .take(MAX_PAIR_RULES)
        .map(|(pairs, projects, lang, old, new)| {
            format!(
                "- Call `{new}` instead of `{old}` ({}; {pairs} fixes in {projects} projects do so).",
                language_name(lang)
            )
        })
        .collect()
}

/// "In N fixed code pairs (Python 20, C 3), the fixes removed calls such as
/// `os.system` (Python) and added calls such as `subprocess.run` (Python)."
/// Calls made by the fixes of [`MIN_PROJECTS_FOR_CAUSE`] projects, most
/// fixes first.
fn api_sentence(evidence: &Evidence) -> String {
    if evidence.pairs == 0 {
        return String::new();
    }
    let top = |map: &std::collections::BTreeMap<(String, String), super::Support>| {
        let mut v: Vec<(usize, usize, &String, &String)> = map
            .iter()
            .filter(|(_, s)| s.projects.len() >= MIN_PROJECTS_FOR_CAUSE)
            .map(|((lang, api), s)| (s.pairs, s.projects.len(), lang, api))
            .collect();
        v.sort_by(|a, b| {
            (b.0, b.1)
                .cmp(&(a.0, a.1))
                .then_with(|| (a.2, a.3).cmp(&(b.2, b.3)))
        });
        v.into_iter()
            .take(MAX_CAUSE_APIS)
            .map(|(_, _, lang, api)| format!("`{api}` ({})", language_name(lang)))
            .collect::<Vec<_>>()
    };
    let removed = top(&evidence.removed);
    let added = top(&evidence.added);
    if removed.is_empty() && added.is_empty() {
        return String::new();
    }
    let mut languages: Vec<(&String, &usize)> = evidence.languages.iter().collect();
    languages.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let langs = languages
        .iter()
        .map(|(l, n)| format!("{} {n}", language_name(l)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut parts = Vec::new();
    if !removed.is_empty() {
        parts.push(format!("removed calls such as {}", removed.join(", ")));
    }
    if !added.is_empty() {
        parts.push(format!("added calls such as {}", added.join(", ")));
    }
    format!(
        "In {} fixed code pairs ({langs}), the fixes {}.",
        evidence.pairs,
        parts.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(project: &str, removed: &[&str], added: &[&str]) -> PairDigest {
        PairDigest {
            id: project.into(),
            language: "python".into(),
            project: project.into(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
            added: added.iter().map(|s| s.to_string()).collect(),
            ..PairDigest::default()
        }
    }

    #[test]
    fn rules_need_several_projects() {
        let cwe = CweBrief {
            catalog_guideline: "- Validate input.".into(),
            catalog_cause: "Untrusted data is deserialized.".into(),
            ..CweBrief::default()
        };
        let mut pairs = vec![
            pair("a", &["yaml.load"], &["yaml.safe_load"]),
            pair("b", &["yaml.load"], &["yaml.safe_load"]),
            pair("c", &["yaml.load", "open"], &["yaml.safe_load"]),
            pair("c", &["pickle.loads"], &["helper_of_c"]),
        ];
        let s = summarize(&cwe, &Evidence::of_pairs(&pairs));
        assert_eq!(
            s.guideline,
            "- Validate input.\n- Call `yaml.safe_load` instead of `yaml.load` (Python; 3 fixes in 3 projects do so)."
        );
        assert_eq!(
            s.cause,
            "Untrusted data is deserialized. In 4 fixed code pairs (Python 4), the fixes removed calls such as `yaml.load` (Python) and added calls such as `yaml.safe_load` (Python)."
        );
        pairs.truncate(2);
        let s = summarize(&cwe, &Evidence::of_pairs(&pairs));
        assert_eq!(
            s.guideline, "- Validate input.",
            "two projects are not enough"
        );
    }
}
