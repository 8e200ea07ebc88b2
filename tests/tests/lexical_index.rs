//! The lexical facet's precomputed index (KB tables lexical_word and
//! lexical_stem, summed by the plugin's own code) against the FTS5 query it
//! replaced, on the shipped KB and every prompt of the dev sets
//! (../shared/data/eval-dev), in four languages: the same CWEs with
//! the same BM25 scores, except where a request word is missing from the
//! index's word list although FTS5 would have stemmed it onto an indexed
//! word. Those words are counted and bounded here, so a KB build that loses
//! coverage fails.

use std::path::{Path, PathBuf};

use rescue_host::capabilities::kb::{KbReader, QueryLimits, SqlValue};
use rescue_host::kb::lexical::COLUMN_WEIGHTS;
use rescue_plugin::retrieve::lexical_ranking;
use rescue_plugin::{Capabilities, text};

/// The plugin's capabilities over the real KB reader: only queries are
/// needed by the lexical facet.
struct KbOnly<'a>(&'a KbReader);

impl Capabilities for KbOnly<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[rescue_plugin::SqlValue],
    ) -> Result<Vec<Vec<rescue_plugin::SqlValue>>, String> {
        use rescue_plugin::SqlValue as P;
        let params: Vec<SqlValue> = params
            .iter()
            .map(|v| match v {
                P::Null => SqlValue::Null,
                P::Integer(i) => SqlValue::Integer(*i),
                P::Real(r) => SqlValue::Real(*r),
                P::Text(t) => SqlValue::Text(t.clone()),
                P::Blob(b) => SqlValue::Blob(b.clone()),
            })
            .collect();
        let rows = self.0.query(sql, &params).map_err(|e| format!("{e:?}"))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        SqlValue::Null => P::Null,
                        SqlValue::Integer(i) => P::Integer(i),
                        SqlValue::Real(r) => P::Real(r),
                        SqlValue::Text(t) => P::Text(t),
                        SqlValue::Blob(b) => P::Blob(b),
                    })
                    .collect()
            })
            .collect())
    }
    fn extract_calls(&self, _: &str, _: &str) -> Vec<String> {
        panic!("the lexical facet extracts no calls")
    }
    fn embed(&self, _: &str) -> Vec<f32> {
        panic!("the lexical facet embeds nothing")
    }
    fn complete(&self, _: &str, _: u32) -> Result<String, String> {
        panic!("the lexical facet asks no model")
    }
    fn debug(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dev_prompts() -> Vec<String> {
    let dir = root().join("../shared/data/eval-dev");
    let mut prompts = Vec::new();
    for file in [
        "llmseceval.jsonl",
        "cweval.jsonl",
        "humaneval-negatives.jsonl",
    ] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (the dev sets live in ../shared)"));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            prompts.push(record["prompt"].as_str().unwrap().to_string());
        }
    }
    assert!(prompts.len() > 300, "{} dev prompts", prompts.len());
    prompts
}

/// The lexical facet as FTS5 computes it at run time.
fn fts5_sql() -> String {
    let weights: Vec<String> = COLUMN_WEIGHTS.iter().map(|w| format!("{w:.1}")).collect();
    format!(
        "SELECT c.id, -bm25(cwe_fts, {}) AS score \
         FROM cwe_fts JOIN cwe c ON c.in_scope = 1 AND c.id = cwe_fts.rowid \
         WHERE cwe_fts MATCH ?1 \
           AND (?2 = '' OR c.languages = '' OR instr(',' || c.languages || ',', ',' || ?2 || ',') > 0) \
         ORDER BY score DESC, c.id LIMIT 20",
        weights.join(", ")
    )
}

fn scores(rows: &[Vec<SqlValue>]) -> Vec<(i64, f64)> {
    rows.iter()
        .map(|row| match row.as_slice() {
            [SqlValue::Integer(id), SqlValue::Real(score)] => (*id, *score),
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

#[test]
fn the_precomputed_lexical_index_scores_like_fts5() {
    let kb = KbReader::new(
        &root().join("kb.sqlite"),
        QueryLimits {
            max_steps: 1_000_000,
            max_rows: 1_000,
        },
    );
    let fts5 = fts5_sql();
    let (mut compared, mut differing) = (0, Vec::new());
    let (mut words, mut uncovered) = (std::collections::BTreeSet::new(), Vec::new());
    for prompt in dev_prompts() {
        let terms = text::terms(&prompt);
        if terms.is_empty() {
            continue;
        }
        for term in &terms {
            if words.insert(term.clone()) {
                let indexed = kb
                    .query(
                        "SELECT 1 FROM lexical_word WHERE word = ?1",
                        &[SqlValue::Text(term.clone())],
                    )
                    .unwrap();
                let fts_hits = kb
                    .query(
                        "SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH ?1 LIMIT 1",
                        &[SqlValue::Text(format!("\"{term}\""))],
                    )
                    .unwrap();
                if indexed.is_empty() && !fts_hits.is_empty() {
                    uncovered.push(term.clone());
                }
            }
        }
        // "rust": a language no weakness lists (the KB's "*" row).
        for language in ["", "python", "c", "rust"] {
            let fts = scores(
                &kb.query(
                    &fts5,
                    &[
                        SqlValue::Text(
                            terms
                                .iter()
                                .map(|t| format!("\"{t}\""))
                                .collect::<Vec<_>>()
                                .join(" OR "),
                        ),
                        SqlValue::Text(language.into()),
                    ],
                )
                .unwrap(),
            );
            let indexed = lexical_ranking(&KbOnly(&kb), &terms, language).unwrap();
            compared += 1;
            let same = fts.len() == indexed.len()
                && fts
                    .iter()
                    .zip(&indexed)
                    .all(|((a, x), (b, y))| a == b && (x - y).abs() <= 1e-9 * x.abs().max(1.0));
            if !same {
                differing.push(prompt.clone());
            }
        }
    }
    eprintln!(
        "{compared} lexical queries compared, {} differ; {} distinct request words, {} matched by FTS5 but not indexed: {uncovered:?}",
        differing.len(),
        words.len(),
        uncovered.len()
    );
    // Every difference comes from an uncovered word, and those stay rare.
    assert!(
        uncovered.len() * 100 <= words.len(),
        "{} of {} request words are not in the index: {uncovered:?}",
        uncovered.len(),
        words.len()
    );
    if uncovered.is_empty() {
        assert!(differing.is_empty(), "{differing:?}");
    }
    assert!(
        differing.len() * 100 <= compared,
        "{} of {compared} queries differ from FTS5",
        differing.len()
    );
}
