//! The knowledge-base build: sources directory in, one self-verifying SQLite
//! file out. Reads the CWE catalog and the code pairs, slices every pair,
//! extracts API sets, summarizes each CWE's pairs (cluster-then-summarize),
//! and writes both levels. Deterministic by construction (sorted inputs,
//! sorted inserts, no timestamps, summaries either computed or cached by
//! request, FTS5 `optimize` + `VACUUM` before hashing), so building twice
//! from the same inputs yields the same content hash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, params};

use super::apis::{api_changes, calls};
use super::catalog::{Catalog, compose_cause};
use super::pairs::{self, Pair, PairStats};
use super::progress::Progress;
use super::schema::{self, SCHEMA_VERSION};
use super::slice::{self, Method, Snippet};
use super::sources::{self, SourceFiles, TOP25_2024};
use super::summarize::llm::Llm;
use super::summarize::offline::Offline;
use super::summarize::{CweBrief, PairDigest, Summarizer, calls_for, cluster_then_summarize};
use super::text::{join_blocks, leading_sentences, sentences};
use super::{BuildOptions, BuildReport, SummarizerChoice, content_hash};
use crate::embed::{self, Embedder};
use crate::{Error, Result};

/// An API called in this many CWEs' examples or more says nothing about any
/// one of them (`len`, `malloc`, `open`): it stays in `cwe_api` and
/// `cwe.apis` but not in the full-text index.
pub const GENERIC_API_CWES: usize = 5;
/// APIs indexed per CWE, at most, and the examples one must appear in.
pub const MAX_INDEXED_APIS: usize = 30;
pub const MIN_API_EXAMPLES: u32 = 2;

/// Why a CWE is in scope, in the order the reasons are written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum ScopeReason {
    Top25,
    Top25Past,
    OwaspTop10,
    SafeCoder,
    Sven,
    CodeShield,
}

impl ScopeReason {
    fn label(self) -> &'static str {
        match self {
            Self::Top25 => "top25-2024",
            Self::Top25Past => "top25-2019-2023",
            Self::OwaspTop10 => "owasp-top10-2021",
            Self::SafeCoder => "safecoder",
            Self::Sven => "sven",
            Self::CodeShield => "codeshield",
        }
    }
}

/// Everything a knowledge-base file holds, ready to insert.
#[derive(Debug, Default)]
pub(crate) struct KbContent {
    /// All `kb_meta` rows except `schema_version` and `content_hash`, which
    /// [`write_kb`] adds itself.
    pub meta: BTreeMap<String, String>,
    /// Sorted by id.
    pub cwes: Vec<CweRow>,
    /// (child, parent), sorted.
    pub parents: Vec<(u32, u32)>,
    /// Sorted by (cwe, ordinal).
    pub examples: Vec<ExampleRow>,
    /// (cwe, api, count), sorted.
    pub apis: Vec<(u32, String, u32)>,
    /// The developer scenarios of in-scope CWEs, by CWE, in file order.
    pub scenarios: Vec<ScenarioRow>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ScenarioRow {
    pub cwe: u32,
    pub language: String,
    pub task: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CweRow {
    /// Indexed API names (cwe_fts.apis), comma-separated.
    pub fts_apis: String,
    pub id: u32,
    pub name: String,
    pub abstraction: String,
    pub status: String,
    pub description: String,
    pub extended_description: String,
    pub guideline: String,
    pub cause: String,
    pub languages: String,
    pub tasks: String,
    pub in_scope: bool,
    pub scope_reason: String,
    pub apis: String,
    pub pairs: usize,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ExampleRow {
    pub id: String,
    pub cwe: u32,
    pub language: String,
    pub code: String,
    pub intro: String,
    pub source: String,
    pub license: String,
    pub apis: String,
    pub cause: String,
    pub lines_before: usize,
    pub lines_after: usize,
    pub slicing: String,
    pub dataset: String,
    pub split: String,
    pub record: String,
    pub commit_link: String,
}

/// The summarizer of a build, concretely, so its counters can be reported.
enum Backend {
    Offline(Offline),
    Llm(Box<Llm>),
}

impl Backend {
    fn summarizer(&mut self) -> &mut dyn Summarizer {
        match self {
            Backend::Offline(o) => o,
            Backend::Llm(l) => l.as_mut(),
        }
    }
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let progress = Progress::new(opts.progress);
    let mut backend = match &opts.summarizer {
        SummarizerChoice::Offline => Backend::Offline(Offline),
        SummarizerChoice::Llm(config) => Backend::Llm(Box::new(Llm::new(config.clone())?)),
    };
    let embedder = Embedder::from_dir(&opts.embeddings).map_err(|e| Error::KbSource {
        path: opts.embeddings.clone(),
        message: e.to_string(),
    })?;
    let (mut content, pair_report) = collect(opts, backend.summarizer(), &progress)?;
    content.meta.insert(
        schema::META_EMBEDDING_MODEL.to_owned(),
        serde_json::json!({
            "name": "m2v-minilm-256",
            "dimensions": embed::DIM,
            "vocabulary": embedder.vocab_size(),
            "source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), distilled with model2vec 0.10.0, PCA 256, SIF 1e-4, int8 per-token scale",
        })
        .to_string(),
    );
    let collected = started.elapsed();

    progress.stage("writing", 1);
    let examples = content.examples.len();
    let pair_examples = content
        .examples
        .iter()
        .filter(|e| e.dataset != schema::CATALOG_DATASET)
        .count();
    let (cwes_total, cwes_in_scope) = (
        content.cwes.len(),
        content.cwes.iter().filter(|c| c.in_scope).count(),
    );
    let backend_name = content.meta[schema::META_BACKEND].clone();
    let content_hash = write_atomically(&opts.out, &content, &embedder)?;
    progress.finish();
    let (llm_requests, llm_cache_hits) = match &backend {
        Backend::Llm(l) => (l.requests(), l.cache_hits()),
        Backend::Offline(_) => (0, 0),
    };
    tracing::info!(
        out = %opts.out.display(),
        cwes_total,
        cwes_in_scope,
        examples,
        pair_examples,
        backend = %backend_name,
        llm_requests,
        llm_cache_hits,
        content_hash = %content_hash,
        read_ms = collected.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "knowledge base built"
    );
    Ok(BuildReport {
        cwes_total,
        cwes_in_scope,
        examples,
        pair_examples,
        pairs_read: pair_report.stats.read,
        lines_before_avg: pair_report.lines_before_avg,
        lines_after_avg: pair_report.lines_after_avg,
        backend: backend_name,
        summarizer_calls: pair_report.summarizer_calls,
        llm_requests,
        llm_cache_hits,
        content_hash,
    })
}

/// One pair after slicing, with what its fix changed in the calls.
struct SlicedPair<'p> {
    pair: &'p Pair,
    fixed: Snippet,
    vulnerable: Snippet,
    removed: Vec<String>,
    added: Vec<String>,
    fixed_apis: Vec<String>,
    vulnerable_apis: Vec<String>,
}

/// What the pairs contributed, for the report and `kb_meta.pair_stats`.
#[derive(Debug, Default)]
struct PairReport {
    stats: PairStats,
    out_of_scope: usize,
    lines_before_avg: f64,
    lines_after_avg: f64,
    summarizer_calls: usize,
    json: String,
}

/// Slices every pair (both versions) on a few threads; the result is in
/// input order whatever the scheduling.
fn slice_pairs<'p>(pairs: &[&'p Pair], progress: &Progress) -> Vec<SlicedPair<'p>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let one = |pair: &'p Pair| {
        let fixed = slice::slice(pair.language, &pair.after, &pair.fixed_points());
        let vulnerable = slice::slice(pair.language, &pair.before, &pair.vulnerable_points());
        let (removed, added) = api_changes(pair.language, &pair.before, &pair.after);
        let fixed_apis = calls(pair.language, &fixed.code);
        let vulnerable_apis = calls(pair.language, &vulnerable.code);
        progress.inc();
        SlicedPair {
            pair,
            fixed,
            vulnerable,
            removed,
            added,
            fixed_apis,
            vulnerable_apis,
        }
    };
    let mut out: Vec<(usize, SlicedPair<'p>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let one = &one;
                scope.spawn(move || {
                    pairs
                        .iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, p)| (i, one(p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a slicing thread panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

/// "github.com/owner/repo" of a commit link.
fn project_of(commit_link: &str) -> String {
    let link = commit_link
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match link.find("/commit") {
        Some(i) => link[..i].to_string(),
        None => link.to_string(),
    }
}

fn first_sentence(text: &str) -> String {
    leading_sentences(&sentences(text), 240)
}

/// Pair-specific cause: what the fix changed in the calls, then what the
/// weakness is.
fn example_cause(removed: &[String], added: &[String], cwe_cause: &str) -> String {
    let list = |apis: &[String]| {
        apis.iter()
            .take(3)
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let change = match (removed.is_empty(), added.is_empty()) {
        (false, false) => format!(
            "The vulnerable version called {}; the fix calls {} instead.",
            list(removed),
            list(added)
        ),
        (false, true) => format!("The fix removes the calls to {}.", list(removed)),
        (true, false) => format!("The fix adds calls to {}.", list(added)),
        (true, true) => String::new(),
    };
    let cause = first_sentence(cwe_cause);
    match (change.is_empty(), cause.is_empty()) {
        (true, _) => cause,
        (false, true) => change,
        (false, false) => format!("{change} {cause}"),
    }
}

/// Why the fixed slice of `pair` is not stored as an example, if it is not.
/// The plugin shows the shortest example of a CWE and language, so a snippet
/// that does not show the fix (a fix that only deletes code, a change to the
/// signature alone), does not parse, or is a fragment rather than a function
/// would be shown first and teach nothing. Such pairs still count for the
/// API sets and the summaries.
fn rejection(pair: &Pair, snippet: &Snippet) -> Option<&'static str> {
    let after: Vec<&str> = pair.after.lines().collect();
    let fix: BTreeSet<&str> = pair
        .added
        .iter()
        .filter(|&&r| r > 0)
        .filter_map(|&r| after.get(r))
        .map(|l| l.trim())
        .filter(|l| {
            l.chars().filter(|c| c.is_alphanumeric()).count() >= 2
                && !["#", "//", "/*", "*"].iter().any(|c| l.starts_with(c))
        })
        .collect();
    if fix.is_empty() {
        return Some("no added code");
    }
    if !snippet.code.lines().any(|l| fix.contains(l.trim())) {
        return Some("fix not in slice");
    }
    if snippet.errors.is_some_and(|e| e > 0) {
        return Some("syntax errors");
    }
    if !snippet.function {
        return Some("not a whole function");
    }
    if snippet.lines_after < 2 || snippet.lines_after > 2 * slice::MAX_LINES {
        return Some("size");
    }
    None
}

fn dataset_name(dataset: &str) -> &str {
    match dataset {
        "safecoder" => "SafeCoder",
        "sven" => "SVEN",
        other => other,
    }
}

/// Catalog language labels in the plugin's spelling where it has one.
fn example_language(catalog: &str) -> String {
    match catalog {
        "c++" => "cpp".to_string(),
        other => other.to_string(),
    }
}

/// Reads and parses every input and derives the rows.
fn collect(
    opts: &BuildOptions,
    summarizer: &mut dyn Summarizer,
    progress: &Progress,
) -> Result<(KbContent, PairReport)> {
    let mut files = SourceFiles::new(&opts.sources);
    progress.stage("reading", 1);
    progress.message("CWE catalog");

    let xml = files.read_text(sources::CWE_XML)?;
    let xml_path = files.path(sources::CWE_XML);
    let catalog = Catalog::parse(&xml, &xml_path)?;
    drop(xml);
    if catalog.version != schema::CWE_CATALOG_VERSION {
        return Err(Error::KbSource {
            path: xml_path,
            message: format!(
                "catalog version {}, expected {}",
                catalog.version,
                schema::CWE_CATALOG_VERSION
            ),
        });
    }

    let mut wanted: BTreeMap<u32, BTreeSet<ScopeReason>> = BTreeMap::new();
    let mut add = |ids: &mut dyn Iterator<Item = u32>, reason| {
        for id in ids {
            wanted.entry(id).or_default().insert(reason);
        }
    };
    let missing_view = |view: u32, list: &str| Error::KbSource {
        path: xml_path.clone(),
        message: format!("the catalog has no view {view} ({list})"),
    };
    add(&mut TOP25_2024.into_iter(), ScopeReason::Top25);
    for view in sources::TOP25_VIEWS {
        let members = catalog
            .view_members
            .get(&view)
            .ok_or_else(|| missing_view(view, "a CWE Top 25 list"))?;
        add(&mut members.iter().copied(), ScopeReason::Top25Past);
    }
    if opts.owasp_top10 {
        let view = sources::OWASP_TOP10_2021_VIEW;
        let owasp = catalog
            .view_weaknesses(view)
            .ok_or_else(|| missing_view(view, "the OWASP Top Ten 2021"))?;
        add(&mut owasp.into_iter(), ScopeReason::OwaspTop10);
    }
    add(
        &mut sources::safecoder_cwes(&mut files)?.into_iter(),
        ScopeReason::SafeCoder,
    );
    add(
        &mut sources::sven_cwes(&mut files)?.into_iter(),
        ScopeReason::Sven,
    );
    add(
        &mut sources::codeshield_cwes(&mut files)?.into_iter(),
        ScopeReason::CodeShield,
    );

    let mut scope: BTreeMap<u32, String> = BTreeMap::new();
    for (id, reasons) in wanted {
        let labels: Vec<&str> = reasons.iter().map(|r| r.label()).collect();
        if catalog.weaknesses.contains_key(&id) {
            scope.insert(id, labels.join(","));
        } else {
            let what = if catalog.deprecated.contains(&id) {
                "a deprecated weakness"
            } else if catalog.non_weaknesses.contains(&id) {
                "a category or view"
            } else {
                "not in the catalog"
            };
            tracing::warn!(cwe = id, sources = %labels.join(","), "CWE-{id} is {what}; not indexed");
        }
    }

    let tasks = sources::safecoder_tasks(&mut files)?;
    // Scenarios are the scenario facet's own knowledge, not lexical text:
    // in the BM25 index they read like ordinary coding requests and lifted
    // the scores of non-security tasks more than those of security ones
    // (EVAL.md).
    let mut scenarios = Vec::new();
    // The file also holds the scenarios of the opt-in scope (`--owasp-top10`).
    let mut skipped = Vec::new();
    for (id, list) in
        sources::developer_scenarios(&mut files, super::DEFAULT_SCENARIOS, &opts.scenarios)?
    {
        if scope.contains_key(&id) {
            scenarios.extend(list.into_iter().map(|(language, task)| ScenarioRow {
                cwe: id,
                language,
                task,
            }));
        } else {
            skipped.push(id);
        }
    }
    if !skipped.is_empty() {
        tracing::info!(
            cwes = skipped.len(),
            first = skipped[0],
            "scenarios of weaknesses outside the scope skipped"
        );
    }
    // Ordinary tasks are stored as the scenarios of "CWE-0": no weakness.
    scenarios.extend(
        sources::ordinary_tasks(&mut files, super::DEFAULT_ORDINARY, &opts.ordinary)?
            .into_iter()
            .map(|(language, task)| ScenarioRow {
                cwe: rescue_text::packed::ORDINARY_TASKS,
                language,
                task,
            }),
    );
    progress.inc();

    // Code pairs: read, keep those of indexed CWEs, slice.
    let (all_pairs, stats) = pairs::read_pairs(&mut files)?;
    let in_scope_pairs: Vec<&Pair> = all_pairs
        .iter()
        .filter(|p| scope.contains_key(&p.cwe))
        .collect();
    let mut report = PairReport {
        out_of_scope: all_pairs.len() - in_scope_pairs.len(),
        stats,
        ..PairReport::default()
    };
    progress.stage("slicing", in_scope_pairs.len());
    let sliced = slice_pairs(&in_scope_pairs, progress);

    // Summaries: Algorithm 1 per CWE, pairs in read order.
    let mut by_cwe: BTreeMap<u32, Vec<&SlicedPair<'_>>> = BTreeMap::new();
    for s in &sliced {
        by_cwe.entry(s.pair.cwe).or_default().push(s);
    }
    let total_calls: usize = by_cwe.values().map(|v| calls_for(v.len())).sum();
    progress.stage("summarizing", total_calls);
    let mut summaries = BTreeMap::new();
    for (&id, group) in &by_cwe {
        let weakness = &catalog.weaknesses[&id];
        progress.message(format!("CWE-{id} ({} pairs)", group.len()));
        let brief = CweBrief {
            id,
            name: weakness.name.clone(),
            description: weakness.description.clone(),
            catalog_guideline: catalog.guideline(id),
            catalog_cause: compose_cause(weakness),
        };
        let digests: Vec<PairDigest> = group
            .iter()
            .map(|s| PairDigest {
                id: s.pair.id.clone(),
                language: s.pair.language.to_string(),
                project: project_of(&s.pair.commit_link),
                vulnerable: s.vulnerable.code.clone(),
                fixed: s.fixed.code.clone(),
                removed: s.removed.clone(),
                added: s.added.clone(),
            })
            .collect();
        let summary = cluster_then_summarize(summarizer, &brief, &digests, &mut || {
            progress.inc();
        })?;
        if let Some(summary) = summary {
            summaries.insert(id, summary);
        }
    }
    report.summarizer_calls = total_calls;

    let mut content = KbContent {
        scenarios,
        ..KbContent::default()
    };
    for (&id, weakness) in &catalog.weaknesses {
        let scope_reason = scope.get(&id).cloned();
        let (guideline, cause) = match summaries.get(&id) {
            Some(s) => (s.guideline.clone(), s.cause.clone()),
            None => (catalog.guideline(id), compose_cause(weakness)),
        };
        content.cwes.push(CweRow {
            id,
            name: weakness.name.clone(),
            abstraction: weakness.abstraction.clone(),
            status: weakness.status.clone(),
            description: weakness.description.clone(),
            extended_description: join_blocks(&weakness.extended_blocks),
            guideline,
            cause,
            languages: weakness.languages.join(","),
            tasks: tasks.get(&id).map(|t| t.join("\n")).unwrap_or_default(),
            in_scope: scope_reason.is_some(),
            scope_reason: scope_reason.unwrap_or_default(),
            pairs: by_cwe.get(&id).map_or(0, Vec::len),
            ..CweRow::default()
        });
        for &parent in &weakness.parents {
            if catalog.weaknesses.contains_key(&parent) {
                content.parents.push((id, parent));
            } else {
                tracing::warn!(
                    cwe = id,
                    parent,
                    "ChildOf target is not a current weakness; relation dropped"
                );
            }
        }
        if scope.contains_key(&id) {
            let cause = first_sentence(
                &content
                    .cwes
                    .last()
                    .map(|c| c.cause.clone())
                    .unwrap_or_default(),
            );
            for (n, example) in weakness.good_examples.iter().enumerate() {
                let language = example_language(&example.language);
                let lines = example.code.lines().count();
                content.examples.push(ExampleRow {
                    id: format!("{}:{id}:{}", schema::CATALOG_DATASET, n + 1),
                    cwe: id,
                    apis: calls(&language, &example.code).join(","),
                    language,
                    code: example.code.clone(),
                    intro: example.intro.clone(),
                    source: schema::EXAMPLE_SOURCE.to_owned(),
                    license: schema::EXAMPLE_LICENSE.to_owned(),
                    cause: cause.clone(),
                    lines_before: lines,
                    lines_after: lines,
                    slicing: "none".to_owned(),
                    dataset: schema::CATALOG_DATASET.to_owned(),
                    ..ExampleRow::default()
                });
            }
        }
    }
    content.parents.sort_unstable();

    // Code level: the sliced fixed version of every pair.
    let causes: BTreeMap<u32, String> = content
        .cwes
        .iter()
        .map(|c| (c.id, c.cause.clone()))
        .collect();
    let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sliced {
        let p = s.pair;
        if let Some(why) = rejection(p, &s.fixed) {
            *rejected.entry(why).or_default() += 1;
            continue;
        }
        let intro = if p.description.is_empty() {
            format!("The fixed `{}` of {}.", p.func_name, p.file_name)
        } else {
            p.description.clone()
        };
        content.examples.push(ExampleRow {
            id: p.id.clone(),
            cwe: p.cwe,
            language: p.language.to_owned(),
            code: s.fixed.code.clone(),
            intro,
            source: format!("{} {} {}", dataset_name(p.dataset), p.split, p.record),
            license: schema::PAIR_LICENSE.to_owned(),
            apis: s.fixed_apis.join(","),
            cause: example_cause(&s.removed, &s.added, &causes[&p.cwe]),
            lines_before: s.fixed.lines_before,
            lines_after: s.fixed.lines_after,
            slicing: s.fixed.method.as_str().to_owned(),
            dataset: p.dataset.to_owned(),
            split: p.split.clone(),
            record: p.record.clone(),
            commit_link: p.commit_link.clone(),
        });
    }
    content
        .examples
        .sort_by(|a, b| (a.cwe, &a.id).cmp(&(b.cwe, &b.id)));

    // API sets: per CWE, in how many examples each call appears (a pair
    // counts once, whether the call is in its vulnerable or fixed slice).
    let mut api_counts: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    for s in &sliced {
        let set: BTreeSet<&String> = s.fixed_apis.iter().chain(&s.vulnerable_apis).collect();
        let counts = api_counts.entry(s.pair.cwe).or_default();
        for api in set {
            *counts.entry(api.clone()).or_default() += 1;
        }
    }
    for e in content
        .examples
        .iter()
        .filter(|e| e.dataset == schema::CATALOG_DATASET)
    {
        let set: BTreeSet<&str> = e.apis.split(',').filter(|a| !a.is_empty()).collect();
        let counts = api_counts.entry(e.cwe).or_default();
        for api in set {
            *counts.entry(api.to_string()).or_default() += 1;
        }
    }
    let mut cwes_of_api: BTreeMap<&str, usize> = BTreeMap::new();
    for counts in api_counts.values() {
        for api in counts.keys() {
            *cwes_of_api.entry(api).or_default() += 1;
        }
    }
    for cwe in &mut content.cwes {
        let Some(counts) = api_counts.get(&cwe.id) else {
            continue;
        };
        let mut ranked: Vec<(&String, &u32)> = counts.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        cwe.apis = ranked
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        cwe.fts_apis = ranked
            .iter()
            .filter(|(a, n)| **n >= MIN_API_EXAMPLES && cwes_of_api[a.as_str()] < GENERIC_API_CWES)
            .take(MAX_INDEXED_APIS)
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        for (api, n) in counts {
            content.apis.push((cwe.id, api.clone(), *n));
        }
    }

    // What slicing did, over every pair and per language.
    let n = sliced.len().max(1) as f64;
    let before: usize = sliced.iter().map(|s| s.fixed.lines_before).sum();
    let after: usize = sliced.iter().map(|s| s.fixed.lines_after).sum();
    report.lines_before_avg = (before as f64 / n * 10.0).round() / 10.0;
    report.lines_after_avg = (after as f64 / n * 10.0).round() / 10.0;
    let mut by_language: BTreeMap<&str, (usize, usize, usize, usize, usize)> = BTreeMap::new();
    for s in &sliced {
        let e = by_language.entry(s.pair.language).or_default();
        e.0 += 1;
        e.1 += s.fixed.lines_before;
        e.2 += s.fixed.lines_after;
        e.3 += usize::from(s.fixed.method == Method::Window);
        e.4 += usize::from(s.fixed.errors > s.fixed.errors_before);
    }
    let avg = |total: usize, n: usize| (total as f64 / n.max(1) as f64 * 10.0).round() / 10.0;
    let languages: serde_json::Map<String, serde_json::Value> = by_language
        .iter()
        .map(|(lang, &(n, b, a, w, np))| {
            (
                lang.to_string(),
                serde_json::json!({
                    "pairs": n, "lines_before_avg": avg(b, n), "lines_after_avg": avg(a, n),
                    "window": w, "not_parsing": np,
                }),
            )
        })
        .collect();
    report.json = serde_json::json!({
        "read": report.stats.read,
        "duplicates": report.stats.duplicates,
        "unchanged": report.stats.unchanged,
        "unknown_language": report.stats.unknown_language,
        "out_of_scope": report.out_of_scope,
        "sliced": sliced.len(),
        "points_from_line_changes": sliced.iter().filter(|s| s.pair.from_line_changes).count(),
        "hops": slice::HOPS,
        "max_lines": slice::MAX_LINES,
        "lines_before_avg": report.lines_before_avg,
        "lines_after_avg": report.lines_after_avg,
        "by_language": languages,
        "examples": sliced.len() - rejected.values().sum::<usize>(),
        "rejected": rejected,
        "summarizer_calls": report.summarizer_calls,
    })
    .to_string();

    let hashes = files.into_hashes();
    content.meta = BTreeMap::from([
        (schema::META_BACKEND.to_owned(), summarizer.backend()),
        (schema::META_PAIR_STATS.to_owned(), report.json.clone()),
        (
            schema::META_CWE_CATALOG_VERSION.to_owned(),
            catalog.version.clone(),
        ),
        (
            schema::META_SOURCE_HASHES.to_owned(),
            serde_json::to_string(&hashes).expect("a map of strings serialises"),
        ),
        (
            schema::META_LICENSE_NOTICE.to_owned(),
            schema::LICENSE_NOTICE.to_owned(),
        ),
    ]);
    Ok((content, report))
}

/// Builds into a temporary file beside `out` and renames it over `out`, so a
/// reader never sees a half-written knowledge base.
fn write_atomically(out: &Path, content: &KbContent, embedder: &Embedder) -> Result<String> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::Io {
            path: out.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "output path has no file name",
            ),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    remove_if_exists(&tmp).map_err(io_error(&tmp))?;

    let result = (|| {
        let sqlite_error = |source| Error::Sqlite {
            path: tmp.clone(),
            source,
        };
        let mut conn = Connection::open(&tmp).map_err(sqlite_error)?;
        // The temporary file is discarded on any failure, so crash safety
        // during the build buys nothing; durability comes from the fsync below.
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            .map_err(sqlite_error)?;
        let hash = write_kb(&mut conn, content, embedder).map_err(sqlite_error)?;
        conn.close().map_err(|(_, e)| sqlite_error(e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io_error(out))?;
        Ok(hash)
    })();
    if result.is_err() {
        let _ = remove_if_exists(&tmp);
    }
    result
}

/// What the semantic facet compares a request with: the weakness's name,
/// description, vulnerability cause and guideline. Measured against the
/// alternatives (without the guideline; with the pairs' task lines) in
/// EVAL.md: task lines read like ordinary coding requests and pull in
/// non-security tasks.
pub(crate) fn semantic_document(c: &CweRow) -> String {
    format!("{}. {} {} {}", c.name, c.description, c.cause, c.guideline)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates the schema in the empty database `conn`, inserts `content` and
/// the embedding model with the embedding of every weakness, compacts it and
/// stores the content hash, which it returns.
pub(crate) fn write_kb(
    conn: &mut Connection,
    content: &KbContent,
    embedder: &Embedder,
) -> rusqlite::Result<String> {
    conn.execute_batch(schema::DDL)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;

    let tx = conn.transaction()?;
    {
        let mut meta = content.meta.clone();
        meta.insert(
            schema::META_SCHEMA_VERSION.to_owned(),
            SCHEMA_VERSION.to_string(),
        );
        // A placeholder, so the final hash is an in-place update of a row
        // that the hash itself skips.
        meta.insert(schema::META_CONTENT_HASH.to_owned(), String::new());
        let mut insert = tx.prepare("INSERT INTO kb_meta (key, value) VALUES (?1, ?2)")?;
        for (key, value) in &meta {
            insert.execute(params![key, value])?;
        }

        let mut insert = tx.prepare(
            "INSERT INTO cwe (id, name, abstraction, status, description, extended_description, \
             guideline, cause, languages, tasks, in_scope, scope_reason, apis, pairs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut insert_fts = tx.prepare(
            "INSERT INTO cwe_fts (rowid, name, description, guideline, cause, tasks, apis) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut cwes: Vec<&CweRow> = content.cwes.iter().collect();
        cwes.sort_by_key(|c| c.id);
        for c in cwes {
            insert.execute(params![
                c.id,
                c.name,
                c.abstraction,
                c.status,
                c.description,
                c.extended_description,
                c.guideline,
                c.cause,
                c.languages,
                c.tasks,
                c.in_scope,
                c.scope_reason,
                c.apis,
                c.pairs as i64
            ])?;
            if c.in_scope {
                insert_fts.execute(params![
                    c.id,
                    c.name,
                    c.description,
                    c.guideline,
                    c.cause,
                    c.tasks,
                    c.fts_apis
                ])?;
            }
        }

        let mut insert = tx.prepare("INSERT INTO cwe_parent (child, parent) VALUES (?1, ?2)")?;
        let mut parents = content.parents.clone();
        parents.sort_unstable();
        parents.dedup();
        for (child, parent) in parents {
            insert.execute(params![child, parent])?;
        }

        let mut insert = tx.prepare(
            "INSERT INTO example (id, cwe, language, code, intro, source, license, apis, cause, \
             lines_before, lines_after, slicing, dataset, split, record, commit_link) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        let mut examples: Vec<&ExampleRow> = content.examples.iter().collect();
        examples.sort_by(|a, b| a.id.cmp(&b.id));
        for e in examples {
            insert.execute(params![
                e.id,
                e.cwe,
                e.language,
                e.code,
                e.intro,
                e.source,
                e.license,
                e.apis,
                e.cause,
                e.lines_before as i64,
                e.lines_after as i64,
                e.slicing,
                e.dataset,
                e.split,
                e.record,
                e.commit_link
            ])?;
        }

        let mut insert = tx.prepare(
            "INSERT INTO embedding_token (id, piece, scale, vector) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for id in 0..embedder.vocab_size() {
            let (piece, scale, vector) = embedder.token(id);
            let bytes: Vec<u8> = vector.iter().map(|&q| q as u8).collect();
            insert.execute(params![id as i64, piece, f64::from(scale), bytes])?;
        }

        let mut insert = tx.prepare(
            "INSERT INTO cwe_vector (in_scope, cwe, languages, name, vector) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut cwes: Vec<&CweRow> = content.cwes.iter().collect();
        cwes.sort_by_key(|c| c.id);
        let mut vectors: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for c in &cwes {
            let vector = embedder.embed(&semantic_document(c));
            // A text with no known token has no direction; leaving the row
            // out keeps it from matching everything equally (cosine 0).
            if vector.iter().any(|x| *x != 0.0) {
                let vector = embed::to_f16_le_bytes(&vector);
                insert.execute(params![c.in_scope, c.id, c.languages, c.name, vector])?;
                vectors.insert(c.id, vector);
            }
        }
        write_cwe_languages(&tx, &cwes, &vectors)?;

        write_example_pools(&tx, &content.examples, embedder)?;
        let scenario_vectors = write_scenarios(&tx, &content.scenarios, embedder)?;
        write_classifier(&tx, &content.cwes, scenario_vectors, embedder)?;

        let mut insert = tx.prepare("INSERT INTO cwe_api (cwe, api, count) VALUES (?1, ?2, ?3)")?;
        let mut apis = content.apis.clone();
        apis.sort();
        apis.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        for (cwe, api, count) in apis {
            insert.execute(params![cwe, api, count])?;
        }
    }
    tx.commit()?;

    // Merges the FTS5 segments into one b-tree and rewrites the file in
    // canonical page order: both make the shadow tables and the bytes a
    // function of the content alone.
    conn.execute("INSERT INTO cwe_fts (cwe_fts) VALUES ('optimize')", [])?;
    let tx = conn.transaction()?;
    super::lexical::build_index(&tx)?;
    tx.commit()?;
    conn.execute_batch("VACUUM")?;

    let hash = content_hash(conn)?;
    conn.execute(
        "UPDATE kb_meta SET value = ?1 WHERE key = ?2",
        params![hash, schema::META_CONTENT_HASH],
    )?;
    Ok(hash)
}

/// The `cwe_language` rows: for every language an in-scope weakness lists,
/// plus '' (no language: all of them) and '*' (a language none lists: those
/// that list none), the in-scope weaknesses that apply and the vectors of
/// those that have one.
fn write_cwe_languages(
    tx: &rusqlite::Transaction<'_>,
    cwes: &[&CweRow],
    vectors: &BTreeMap<u32, Vec<u8>>,
) -> rusqlite::Result<()> {
    let in_scope: Vec<&CweRow> = cwes.iter().copied().filter(|c| c.in_scope).collect();
    let listed = |c: &CweRow| -> Vec<String> {
        c.languages
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut languages: BTreeSet<String> = in_scope.iter().flat_map(|c| listed(c)).collect();
    languages.insert(String::new());
    languages.insert("*".into());
    let mut insert = tx.prepare(
        "INSERT INTO cwe_language (language, cwes, vector_cwes, vectors) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for language in &languages {
        let applies = |c: &CweRow| {
            let listed = listed(c);
            language.is_empty() || listed.is_empty() || listed.contains(language)
        };
        let members: Vec<&CweRow> = in_scope.iter().copied().filter(|c| applies(c)).collect();
        let with_vector: Vec<(u32, &Vec<u8>)> = members
            .iter()
            .filter_map(|c| vectors.get(&c.id).map(|v| (c.id, v)))
            .collect();
        insert.execute(params![
            language,
            rescue_text::packed::write_ids(members.iter().map(|c| i64::from(c.id))),
            rescue_text::packed::write_ids(with_vector.iter().map(|(id, _)| i64::from(*id))),
            with_vector
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .collect::<Vec<u8>>(),
        ])?;
    }
    Ok(())
}

/// The `scenario` rows and the one `scenario_index` row: every scenario's
/// embedding, made as the plugin embeds a request (its retrieval terms), by
/// CWE, as int8 with one scale each (the host scores them with exact
/// integer dot products). A scenario with no known token has no direction
/// and no vector. Returns each vector (unquantised) with its CWE: the
/// classifier's training samples.
fn write_scenarios(
    tx: &rusqlite::Transaction<'_>,
    scenarios: &[ScenarioRow],
    embedder: &Embedder,
) -> rusqlite::Result<Vec<(u32, Vec<f32>)>> {
    let mut insert =
        tx.prepare("INSERT INTO scenario (id, cwe, language, task) VALUES (?1, ?2, ?3, ?4)")?;
    let mut ordered: Vec<&ScenarioRow> = scenarios.iter().collect();
    ordered.sort_by_key(|s| s.cwe);
    let mut embedded = Vec::new();
    let mut scales = Vec::new();
    let mut vectors = Vec::new();
    for (n, s) in ordered.iter().enumerate() {
        insert.execute(params![n as i64 + 1, s.cwe, s.language, s.task])?;
        let vector = embedder.embed(&rescue_text::terms(&s.task).join(" "));
        if vector.iter().any(|x| *x != 0.0) {
            let (quantized, scale) = embed::quantize_i8(&vector);
            scales.extend(scale.to_le_bytes());
            vectors.extend(quantized.into_iter().map(|q| q as u8));
            embedded.push((s.cwe, vector));
        }
    }
    let cwes = embedded.iter().map(|(cwe, _)| i64::from(*cwe));
    tx.execute(
        "INSERT INTO scenario_index (cwes, scales, vectors) VALUES (?1, ?2, ?3)",
        params![rescue_text::packed::write_ids(cwes), scales, vectors],
    )?;
    Ok(embedded)
}

/// The `cwe_classifier` row: the model trained on every task text of the
/// KB, embedded as the plugin embeds a request: each scenario (ordinary
/// tasks as their own class; `scenario_vectors`, as `write_scenarios`
/// embedded them) and each code-pair task description of an in-scope
/// weakness, labelled with its CWE.
fn write_classifier(
    tx: &rusqlite::Transaction<'_>,
    cwes: &[CweRow],
    scenario_vectors: Vec<(u32, Vec<f32>)>,
    embedder: &Embedder,
) -> rusqlite::Result<()> {
    let pair_tasks = cwes
        .iter()
        .filter(|c| c.in_scope)
        .flat_map(|c| c.tasks.lines().map(move |task| (c.id, task)))
        .map(|(cwe, text)| (cwe, embedder.embed(&rescue_text::terms(text).join(" "))))
        .filter(|(_, vector)| vector.iter().any(|x| *x != 0.0));
    let mut samples: Vec<(u32, Vec<f32>)> =
        scenario_vectors.into_iter().chain(pair_tasks).collect();
    // Training visits samples in this order; sorting makes the model a
    // function of the set of texts, not of the order they were read in.
    samples.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            a.1.iter()
                .zip(&b.1)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    let Some(model) = rescue_learn::train(&samples, rescue_learn::REGULARISATION) else {
        tracing::info!(
            samples = samples.len(),
            "no classifier: fewer than two classes of task texts"
        );
        return Ok(());
    };
    tracing::info!(
        samples = samples.len(),
        classes = model.classes.len(),
        iterations = model.iterations,
        "trained the classifier facet's model"
    );
    tx.execute(
        "INSERT INTO cwe_classifier (classes, biases, weights) VALUES (?1, ?2, ?3)",
        params![
            rescue_text::packed::write_ids(model.classes.iter().map(|&c| i64::from(c))),
            rescue_text::packed::write_scores(model.biases.iter().copied()),
            model
                .weights
                .iter()
                .flat_map(|row| embed::to_f16_le_bytes(row))
                .collect::<Vec<u8>>(),
        ],
    )?;
    Ok(())
}

/// The `example_pool` rows: per CWE and language, the shortest examples
/// (at most `EXAMPLE_POOL_SIZE`) with what the code level ranks them by.
fn write_example_pools(
    tx: &rusqlite::Transaction<'_>,
    examples: &[ExampleRow],
    embedder: &Embedder,
) -> rusqlite::Result<()> {
    use rescue_text::packed;
    let mut pools: BTreeMap<(u32, &str), Vec<(usize, &ExampleRow)>> = BTreeMap::new();
    for e in examples.iter().filter(|e| !e.language.is_empty()) {
        pools
            .entry((e.cwe, e.language.as_str()))
            .or_default()
            .push((e.code.chars().count(), e));
    }
    let mut insert = tx.prepare(
        "INSERT INTO example_pool \
         (cwe, language, ids, code_lengths, lines, api_words, intro_words, vectors) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for ((cwe, language), mut pool) in pools {
        pool.sort_by(|(a_len, a), (b_len, b)| a_len.cmp(b_len).then(a.id.cmp(&b.id)));
        pool.truncate(packed::EXAMPLE_POOL_SIZE);
        let ids: Vec<&str> = pool.iter().map(|(_, e)| e.id.as_str()).collect();
        let api_words: Vec<Vec<u8>> = pool
            .iter()
            .map(|(_, e)| rescue_text::word_set(&e.apis))
            .collect();
        let intro_words: Vec<Vec<u8>> = pool
            .iter()
            .map(|(_, e)| rescue_text::word_set(&e.intro))
            .collect();
        let vectors: Vec<u8> = pool
            .iter()
            .flat_map(|(_, e)| {
                // A zero vector (no known token) scores 0, as no vector did.
                embed::to_f16_le_bytes(&embedder.embed(&format!("{} {}", e.intro, e.cause)))
            })
            .collect();
        insert.execute(params![
            cwe,
            language,
            ids.join("\n"),
            packed::write_counts(pool.iter().map(|(len, _)| *len)),
            packed::write_counts(pool.iter().map(|(_, e)| e.lines_after)),
            packed::write_word_sets(api_words.iter().map(Vec::as_slice)),
            packed::write_word_sets(intro_words.iter().map(Vec::as_slice)),
            vectors,
        ])?;
    }
    Ok(())
}
