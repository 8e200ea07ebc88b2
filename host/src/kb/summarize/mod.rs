//! Cluster-then-summarize (RESCUE's Algorithm 1): the code pairs of one CWE
//! are summarized in batches of [`BATCH`], and the batch summaries merged,
//! [`BATCH`] at a time, until one security guideline (do/don't rules) and
//! one vulnerability cause remain.
//!
//! The algorithm is fixed here; what writes a summary is a [`Summarizer`]:
//! [`offline::Offline`] (deterministic, from the catalog text and the API
//! changes the pairs' fixes make) or [`llm::Llm`] (any OpenAI-compatible
//! chat endpoint, with an on-disk cache keyed by the exact request).

pub mod llm;
pub mod offline;

use std::collections::{BTreeMap, BTreeSet};

use crate::Result;

/// Pairs per summarization call, and summaries per merge call.
pub const BATCH: usize = 10;

/// What a summarizer is told about the weakness besides the pairs.
#[derive(Debug, Clone, Default)]
pub struct CweBrief {
    pub id: u32,
    pub name: String,
    pub description: String,
    /// The offline guideline from the catalog's mitigations ("- " lines).
    pub catalog_guideline: String,
    /// The offline cause from the catalog's description.
    pub catalog_cause: String,
}

/// One vulnerable/fixed pair as a summarizer sees it: the two slices and
/// what the fix changed in the calls.
#[derive(Debug, Clone, Default)]
pub struct PairDigest {
    pub id: String,
    pub language: String,
    /// The project the code comes from ("github.com/owner/repo"): evidence
    /// is counted in distinct projects, so one project's helper functions
    /// do not pass for general practice.
    pub project: String,
    pub vulnerable: String,
    pub fixed: String,
    /// Calls in the vulnerable function that the fixed one no longer makes.
    pub removed: Vec<String>,
    /// Calls the fixed function makes that the vulnerable one did not.
    pub added: Vec<String>,
}

/// How often a fix did something: in how many pairs, from which projects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Support {
    pub pairs: usize,
    pub projects: BTreeSet<String>,
}

impl Support {
    fn add(&mut self, project: &str) {
        self.pairs += 1;
        self.projects.insert(project.to_string());
    }

    fn merge(&mut self, other: &Support) {
        self.pairs += other.pairs;
        self.projects.extend(other.projects.iter().cloned());
    }
}

/// Counts over a set of pairs, computed by the algorithm (not the
/// summarizer) and merged exactly, so an offline summary of a merge equals
/// the summary of all its pairs at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub pairs: usize,
    /// Pairs per language.
    pub languages: BTreeMap<String, usize>,
    /// (language, api) -> fixes that removed the call.
    pub removed: BTreeMap<(String, String), Support>,
    /// (language, api) -> fixes that added the call.
    pub added: BTreeMap<(String, String), Support>,
    /// (language, removed api, added api) -> fixes that did both.
    pub replaced: BTreeMap<(String, String, String), Support>,
}

impl Evidence {
    pub fn of_pairs(pairs: &[PairDigest]) -> Self {
        let mut e = Evidence {
            pairs: pairs.len(),
            ..Evidence::default()
        };
        for p in pairs {
            let lang = &p.language;
            *e.languages.entry(lang.clone()).or_default() += 1;
            for api in &p.removed {
                e.removed
                    .entry((lang.clone(), api.clone()))
                    .or_default()
                    .add(&p.project);
                for new in &p.added {
                    e.replaced
                        .entry((lang.clone(), api.clone(), new.clone()))
                        .or_default()
                        .add(&p.project);
                }
            }
            for api in &p.added {
                e.added
                    .entry((lang.clone(), api.clone()))
                    .or_default()
                    .add(&p.project);
            }
        }
        e
    }

    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Evidence>) -> Self {
        fn union<K: Ord + Clone>(into: &mut BTreeMap<K, Support>, from: &BTreeMap<K, Support>) {
            for (k, v) in from {
                into.entry(k.clone()).or_default().merge(v);
            }
        }
        let mut e = Evidence::default();
        for part in parts {
            e.pairs += part.pairs;
            for (k, v) in &part.languages {
                *e.languages.entry(k.clone()).or_default() += v;
            }
            union(&mut e.removed, &part.removed);
            union(&mut e.added, &part.added);
            union(&mut e.replaced, &part.replaced);
        }
        e
    }
}

/// The two texts RESCUE keeps per CWE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Do/don't rules, one "- " line each.
    pub guideline: String,
    /// What makes code vulnerable to the weakness.
    pub cause: String,
}

/// Writes the summaries of Algorithm 1. Implementations may call out (an
/// LLM) but must be deterministic for the same inputs, or cache so.
pub trait Summarizer {
    /// Names the back-end in `kb_meta.backend`.
    fn backend(&self) -> String;
    /// Round one: at most [`BATCH`] pairs of one CWE.
    fn summarize_batch(
        &mut self,
        cwe: &CweBrief,
        pairs: &[PairDigest],
        evidence: &Evidence,
    ) -> Result<Summary>;
    /// Later rounds: at most [`BATCH`] summaries of one CWE into one;
    /// `evidence` covers all their pairs.
    fn merge(&mut self, cwe: &CweBrief, parts: &[Summary], evidence: &Evidence) -> Result<Summary>;
}

/// Algorithm 1 for one CWE: batches of [`BATCH`] pairs, then merges of
/// [`BATCH`] summaries per round until one is left (a lone summary at the
/// end of a round moves up unchanged). `step` is called after every
/// summarizer call. None for a CWE without pairs.
pub fn cluster_then_summarize(
    summarizer: &mut dyn Summarizer,
    cwe: &CweBrief,
    pairs: &[PairDigest],
    step: &mut dyn FnMut(),
) -> Result<Option<Summary>> {
    let mut level: Vec<(Summary, Evidence)> = Vec::new();
    for batch in pairs.chunks(BATCH) {
        let evidence = Evidence::of_pairs(batch);
        let summary = summarizer.summarize_batch(cwe, batch, &evidence)?;
        step();
        level.push((summary, evidence));
    }
    while level.len() > 1 {
        let mut next = Vec::new();
        for group in level.chunks(BATCH) {
            if let [single] = group {
                next.push(single.clone());
                continue;
            }
            let evidence = Evidence::merge(group.iter().map(|(_, e)| e));
            let parts: Vec<Summary> = group.iter().map(|(s, _)| s.clone()).collect();
            let summary = summarizer.merge(cwe, &parts, &evidence)?;
            step();
            next.push((summary, evidence));
        }
        level = next;
    }
    Ok(level.pop().map(|(summary, _)| summary))
}

/// Summarizer calls Algorithm 1 makes for `pairs` pairs (for progress bars
/// and tests): the batches, then the merges of every round.
pub fn calls_for(pairs: usize) -> usize {
    let mut n = pairs.div_ceil(BATCH);
    let mut calls = n;
    while n > 1 {
        let groups = n.div_ceil(BATCH);
        // A lone summary at the end of a round is not a call.
        let lone = usize::from(n % BATCH == 1);
        calls += groups - lone;
        n = groups;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call and answers with the batch or merge it was given.
    #[derive(Default)]
    struct Recorder {
        batches: Vec<usize>,
        merges: Vec<usize>,
    }

    impl Summarizer for Recorder {
        fn backend(&self) -> String {
            "recorder".into()
        }
        fn summarize_batch(
            &mut self,
            _: &CweBrief,
            pairs: &[PairDigest],
            evidence: &Evidence,
        ) -> Result<Summary> {
            assert_eq!(evidence.pairs, pairs.len());
            self.batches.push(pairs.len());
            Ok(Summary {
                guideline: format!("- {} pairs", pairs.len()),
                cause: String::new(),
            })
        }
        fn merge(
            &mut self,
            _: &CweBrief,
            parts: &[Summary],
            evidence: &Evidence,
        ) -> Result<Summary> {
            self.merges.push(parts.len());
            Ok(Summary {
                guideline: format!("- {} pairs", evidence.pairs),
                cause: String::new(),
            })
        }
    }

    fn pairs(n: usize) -> Vec<PairDigest> {
        (0..n)
            .map(|i| PairDigest {
                id: i.to_string(),
                language: "python".into(),
                ..PairDigest::default()
            })
            .collect()
    }

    #[test]
    fn batches_of_ten_then_recursive_merges() {
        let mut hundred_and_one = vec![10; 10];
        hundred_and_one.push(1);
        for (n, batches, merges) in [
            (0, vec![], vec![]),
            (7, vec![7], vec![]),
            (10, vec![10], vec![]),
            (23, vec![10, 10, 3], vec![3]),
            (101, hundred_and_one, vec![10, 2]),
        ] {
            let mut r = Recorder::default();
            let mut steps = 0;
            let out =
                cluster_then_summarize(&mut r, &CweBrief::default(), &pairs(n), &mut || steps += 1)
                    .unwrap();
            assert_eq!(r.batches, batches, "n = {n}");
            assert_eq!(r.merges, merges, "n = {n}");
            assert_eq!(steps, calls_for(n), "n = {n}");
            match out {
                Some(s) => assert_eq!(s.guideline, format!("- {n} pairs")),
                None => assert_eq!(n, 0),
            }
        }
    }

    #[test]
    fn evidence_merges_exactly() {
        let mut a = pairs(2);
        a[1].project = "other".into();
        a[0].removed = vec!["yaml.load".into()];
        a[0].added = vec!["yaml.safe_load".into()];
        a[1].removed = vec!["yaml.load".into()];
        let whole = Evidence::of_pairs(&a);
        let halves = Evidence::merge([&Evidence::of_pairs(&a[..1]), &Evidence::of_pairs(&a[1..])]);
        assert_eq!(whole, halves);
        assert_eq!(
            whole.removed[&("python".into(), "yaml.load".into())]
                .projects
                .len(),
            2
        );
        assert_eq!(
            whole.replaced[&("python".into(), "yaml.load".into(), "yaml.safe_load".into())].pairs,
            1
        );
    }
}
