//! CWE-level retrieval: which weaknesses does this task risk?
//!
//! The first retrieval stage of RESCUE, lexical facet only: the task words and
//! the APIs called in any code of the conversation are matched with BM25
//! (SQLite FTS5) against each in-scope CWE's name, description, guideline,
//! cause and the task descriptions of its code pairs. The score is BM25 divided
//! by the square root of the number of query terms. A CWE counts only above
//! `min-score`; if none does, the request is not augmented, which is the common
//! case for ordinary programming tasks.

use crate::bindings::rescue::plugin::kb::SqlValue;
use crate::compose::{self, Knowledge, SecureExample};
use crate::text;
use crate::{Augmentation, Capabilities, CweHit, PluginError, RequestFacets, RetrievalParams};

// How many candidates the lexical search returns before thresholding is the
// literal `LIMIT 20` in SEARCH_SQL: a bound LIMIT makes SQLite re-plan (and
// so re-prepare) the statement on every run, defeating the statement cache.

/// Column weights for bm25(cwe_fts, name, description, guideline, cause, tasks):
/// the name is short and precise, so a hit there says the most; the pairs'
/// task descriptions are phrased like requests.
const SEARCH_SQL: &str = "SELECT c.id, c.name, -bm25(cwe_fts, 4.0, 1.5, 1.0, 1.5, 1.0) AS score, c.guideline \
     FROM cwe_fts JOIN cwe c ON c.id = cwe_fts.rowid \
     WHERE cwe_fts MATCH ?1 AND c.in_scope = 1 \
       AND (?2 = '' OR c.languages = '' OR instr(',' || c.languages || ',', ',' || ?2 || ',') > 0) \
       AND (?3 = '' OR instr(?3, ',' || c.id || ',') > 0) \
     ORDER BY score DESC LIMIT 20";

/// Candidate secure examples of one CWE in the request's language, shortest
/// first (an index seek on example(cwe, language, length(code), id)); the
/// plugin then ranks them.
const EXAMPLE_SQL: &str = "SELECT id, language, code, apis, intro, lines_after FROM example \
     WHERE cwe = ?1 AND language = ?2 ORDER BY length(code), id LIMIT 64";

/// The same when the request's language is unknown: any language.
const EXAMPLE_ANY_LANGUAGE_SQL: &str = "SELECT id, language, code, apis, intro, lines_after FROM example \
     WHERE cwe = ?1 AND language <> '' ORDER BY length(code), id LIMIT 64";

/// Language names as the CWE catalog writes them (lowercased).
fn catalog_language(language: &str) -> String {
    match language.to_ascii_lowercase().as_str() {
        "cpp" | "c++" | "cxx" | "cc" => "c++".into(),
        "js" | "javascript" | "node" | "typescript" | "ts" => "javascript".into(),
        "py" | "python" | "python3" => "python".into(),
        "golang" | "go" => "go".into(),
        other => other.into(),
    }
}

/// The policy's CWE scope as ",89,79," (empty for no restriction), so one
/// prepared statement serves every scope.
fn scope_list(scope: &[u32]) -> String {
    if scope.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = scope.iter().map(u32::to_string).collect();
    format!(",{},", ids.join(","))
}

/// Runs retrieval and composition for one request.
pub fn augment(
    caps: &dyn Capabilities,
    facets: &RequestFacets,
    params: &RetrievalParams,
) -> Result<Option<Augmentation>, PluginError> {
    if facets.task.trim().is_empty() && facets.code_blocks.is_empty() {
        return Err(PluginError::InvalidInput("no task text and no code".into()));
    }
    let language = facets
        .language
        .as_deref()
        .map(catalog_language)
        .unwrap_or_default();

    let mut terms = text::terms(&facets.task);
    for block in &facets.code_blocks {
        let block_language = block
            .language
            .as_deref()
            .or(facets.language.as_deref())
            .unwrap_or_default();
        if block_language.is_empty() {
            continue;
        }
        for api in caps.extract_calls(block_language, &block.text) {
            for term in text::terms(&api) {
                if !terms.contains(&term) {
                    terms.push(term);
                }
            }
        }
    }
    if terms.is_empty() {
        caps.debug("no retrieval terms");
        return Ok(None);
    }

    let rows = caps
        .query(
            SEARCH_SQL,
            &[
                SqlValue::Text(text::fts_any(&terms)),
                SqlValue::Text(language.clone()),
                SqlValue::Text(scope_list(&params.cwe_scope)),
            ],
        )
        .map_err(PluginError::Kb)?;

    // BM25 sums over query terms, so long prompts (a docstring, a pasted
    // file) pile up weak matches; dividing by sqrt(#terms) makes one
    // threshold work for a one-line request and a long one alike.
    let length_norm = (terms.len() as f64).sqrt();
    let mut hits = Vec::new();
    for row in rows {
        let [
            SqlValue::Integer(id),
            SqlValue::Text(name),
            SqlValue::Real(score),
            SqlValue::Text(guideline),
        ] = row.as_slice()
        else {
            return Err(PluginError::Schema(format!(
                "unexpected cwe search row {row:?}"
            )));
        };
        let score = score / length_norm;
        if score < params.min_score {
            break;
        }
        hits.push((
            CweHit {
                id: format!("CWE-{id}"),
                name: name.clone(),
                score,
            },
            *id,
            guideline.clone(),
        ));
        if hits.len() >= params.top_k as usize {
            break;
        }
    }
    caps.debug(&format!("{} terms, {} cwe hits", terms.len(), hits.len()));
    if hits.is_empty() {
        return Ok(None);
    }

    // Examples are stored under the plugin's own language names ("cpp"), not
    // the catalog's ("c++").
    let example_language = facets.language.clone().unwrap_or_default();
    let example = best_example(caps, &hits, &example_language, &terms)?;
    let knowledge = Knowledge {
        guidelines: hits
            .iter()
            .map(|(hit, _, guideline)| (hit.id.as_str(), hit.name.as_str(), guideline.as_str()))
            .collect(),
        example: example.as_ref(),
    };
    let text = compose::chat_block(&knowledge, params.max_chars as usize);
    Ok(Some(Augmentation {
        text,
        example_id: example.as_ref().map(|e| e.id.clone()),
        cwes: hits.into_iter().map(|(hit, _, _)| hit).collect(),
    }))
}

/// The secure example that best fits the request, from the best-ranked CWE
/// that has one in the request's language (an example in another language
/// costs tokens and teaches the wrong idioms).
///
/// Code-level retrieval, lexical: an example scores by how many of the
/// request's terms (task words and called APIs) its API set shares (counted
/// twice: the API facet is the strongest signal RESCUE has) and how many its
/// task description shares. Ties go to the shorter example; examples under
/// three lines rarely show the fix and come last.
fn best_example(
    caps: &dyn Capabilities,
    hits: &[(CweHit, i64, String)],
    language: &str,
    request_terms: &[String],
) -> Result<Option<SecureExample>, PluginError> {
    for (hit, id, _) in hits {
        let rows = caps
            .query(
                if language.is_empty() {
                    EXAMPLE_ANY_LANGUAGE_SQL
                } else {
                    EXAMPLE_SQL
                },
                &if language.is_empty() {
                    vec![SqlValue::Integer(*id)]
                } else {
                    vec![SqlValue::Integer(*id), SqlValue::Text(language.to_string())]
                },
            )
            .map_err(PluginError::Kb)?;
        let mut best: Option<(i64, usize, SecureExample)> = None;
        for (position, row) in rows.iter().enumerate() {
            let [
                SqlValue::Text(example_id),
                SqlValue::Text(example_language),
                SqlValue::Text(code),
                SqlValue::Text(apis),
                SqlValue::Text(intro),
                SqlValue::Integer(lines),
            ] = row.as_slice()
            else {
                return Err(PluginError::Schema(format!(
                    "unexpected example row {row:?}"
                )));
            };
            let shared = |text: &str| {
                text::terms(text)
                    .iter()
                    .filter(|t| request_terms.contains(t))
                    .count() as i64
            };
            let score =
                2 * shared(&apis.replace(',', " ")) + shared(intro) - 3 * i64::from(*lines < 3);
            // Rows come shortest first, so on equal scores the earlier one wins.
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                let example = SecureExample {
                    id: example_id.clone(),
                    cwe: hit.id.clone(),
                    language: example_language.clone(),
                    code: code.clone(),
                };
                best = Some((score, position, example));
            }
        }
        if let Some((_, _, example)) = best {
            return Ok(Some(example));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A fake knowledge base: answers the search with fixed rows and records
    /// what the plugin asked for.
    struct FakeKb {
        search_rows: Vec<Vec<SqlValue>>,
        example_rows: Vec<Vec<SqlValue>>,
        queries: RefCell<Vec<(String, Vec<SqlValue>)>>,
        calls: Vec<String>,
    }

    impl Capabilities for FakeKb {
        fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, String> {
            self.queries
                .borrow_mut()
                .push((sql.to_string(), params.to_vec()));
            if sql.contains("cwe_fts") {
                Ok(self.search_rows.clone())
            } else {
                Ok(self.example_rows.clone())
            }
        }
        fn extract_calls(&self, _language: &str, _source: &str) -> Vec<String> {
            self.calls.clone()
        }
        fn debug(&self, _message: &str) {}
    }

    fn row(id: i64, name: &str, score: f64) -> Vec<SqlValue> {
        vec![
            SqlValue::Integer(id),
            SqlValue::Text(name.into()),
            SqlValue::Real(score),
            SqlValue::Text(format!("- guideline of {id}")),
        ]
    }

    fn example_row(id: &str, code: &str, apis: &str, intro: &str, lines: i64) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(id.into()),
            SqlValue::Text("python".into()),
            SqlValue::Text(code.into()),
            SqlValue::Text(apis.into()),
            SqlValue::Text(intro.into()),
            SqlValue::Integer(lines),
        ]
    }

    fn params() -> RetrievalParams {
        RetrievalParams {
            top_k: 2,
            min_score: 3.0,
            max_chars: 4000,
            cwe_scope: vec![],
        }
    }

    fn facets(task: &str) -> RequestFacets {
        RequestFacets {
            task: task.into(),
            code_blocks: vec![],
            language: Some("python".into()),
        }
    }

    #[test]
    fn keeps_top_k_above_threshold() {
        let kb = FakeKb {
            search_rows: vec![
                row(89, "SQL Injection", 12.0),
                row(20, "Input", 6.0),
                row(79, "XSS", 5.5),
            ],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec![],
        };
        let out = augment(&kb, &facets("build an sql query"), &params())
            .unwrap()
            .unwrap();
        let ids: Vec<_> = out.cwes.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["CWE-89", "CWE-20"]);
        assert!(out.text.contains("guideline of 89"));
        assert!(!out.text.contains("guideline of 79"));
    }

    #[test]
    fn nothing_above_threshold_means_no_augmentation() {
        let kb = FakeKb {
            search_rows: vec![row(89, "SQL Injection", 4.9)],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec![],
        };
        assert!(
            augment(&kb, &facets("parse the log entries"), &params())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn scores_are_normalised_by_query_length() {
        let kb = FakeKb {
            search_rows: vec![row(89, "SQL Injection", 12.0)],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec![],
        };
        // 12 / sqrt(3) = 6.9 passes; 12 / sqrt(25) = 2.4 does not.
        assert!(
            augment(&kb, &facets("build sql query"), &params())
                .unwrap()
                .is_some()
        );
        let long_task: Vec<String> = (0..25).map(|i| format!("word{i}x")).collect();
        assert!(
            augment(&kb, &facets(&long_task.join(" ")), &params())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn apis_from_code_join_the_query_and_language_filters() {
        let kb = FakeKb {
            search_rows: vec![],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec!["cursor.execute".into()],
        };
        let mut f = facets("fix this");
        f.code_blocks.push(crate::CodeBlock {
            language: None,
            text: "cursor.execute(q)".into(),
        });
        augment(&kb, &f, &params()).unwrap();
        let queries = kb.queries.borrow();
        let SqlValue::Text(fts) = &queries[0].1[0] else {
            panic!()
        };
        assert_eq!(fts, "\"fix\" OR \"cursor\" OR \"execute\"");
        let SqlValue::Text(lang) = &queries[0].1[1] else {
            panic!()
        };
        assert_eq!(lang, "python");
    }

    #[test]
    fn the_cwe_scope_reaches_the_query() {
        let kb = FakeKb {
            search_rows: vec![],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec![],
        };
        let scope_of = |n: usize| match &kb.queries.borrow()[n].1[2] {
            SqlValue::Text(s) => s.clone(),
            other => panic!("scope parameter is {other:?}"),
        };
        let mut p = params();
        p.cwe_scope = vec![89, 79];
        augment(&kb, &facets("sql query"), &p).unwrap();
        assert_eq!(scope_of(0), ",89,79,");
        augment(&kb, &facets("sql query"), &params()).unwrap();
        assert_eq!(scope_of(1), "");
    }

    #[test]
    fn malformed_rows_are_a_schema_error() {
        let kb = FakeKb {
            search_rows: vec![vec![SqlValue::Null]],
            example_rows: vec![],
            queries: RefCell::default(),
            calls: vec![],
        };
        assert!(matches!(
            augment(&kb, &facets("sql query"), &params()),
            Err(PluginError::Schema(_))
        ));
    }

    #[test]
    fn example_in_the_request_language_is_included() {
        let kb = FakeKb {
            search_rows: vec![row(89, "SQL Injection", 12.0)],
            example_rows: vec![
                example_row(
                    "ex:short",
                    "import sqlite3",
                    "sqlite3.connect",
                    "Open a database",
                    1,
                ),
                example_row(
                    "ex:1",
                    "cur.execute(q, (name,))\nrows = cur.fetchall()\nreturn rows",
                    "cur.execute,fetchall",
                    "Run an SQL query for a user name",
                    3,
                ),
                example_row("ex:other", "a = 1\nb = 2\nc = 3", "print", "Add numbers", 3),
            ],
            queries: RefCell::default(),
            calls: vec![],
        };
        let out = augment(&kb, &facets("sql query"), &params())
            .unwrap()
            .unwrap();
        assert_eq!(out.example_id.as_deref(), Some("ex:1"));
        assert!(out.text.contains("cur.execute(q, (name,))"));
    }
}
