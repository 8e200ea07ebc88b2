//! The security knowledge base: a single SQLite file holding RESCUE's two
//! levels of security knowledge. CWE level: the MITRE CWE weaknesses with a
//! prompt-ready security guideline and vulnerability cause (summarized from
//! the code pairs of each CWE), an API set, their hierarchy, and an FTS5
//! index for BM25 retrieval. Code level: concise secure examples, the fixed
//! versions of the SafeCoder/SVEN vulnerable/fixed pairs cut down by program
//! slicing, plus the catalog's own good examples.
//!
//! [`build`] makes it from the raw sources (MITRE CWE 4.14 XML, SafeCoder and
//! SVEN pairs, CodeShield rules), offline and deterministically by default or
//! with an LLM summarizer whose answers are cached; [`verify`] checks at
//! start-up that a file is the one that was built (schema version and content
//! hash), so a modified knowledge base is refused rather than silently
//! injected into prompts; [`stats`] counts what a file holds.

mod apis;
mod build;
mod catalog;
mod diff;
#[cfg(test)]
mod fixture;
mod hash;
pub mod lexical;
mod pairs;
mod progress;
pub mod schema;
pub mod slice;
mod sources;
mod stats;
pub mod summarize;
mod text;

use std::path::{Path, PathBuf};

pub use hash::content_hash;
pub use schema::SCHEMA_VERSION;
pub use stats::{KbStats, stats};
pub use summarize::llm::LlmConfig;

use crate::{Error, Result};

/// Where to read the sources from, where to write the knowledge base, and
/// who writes the summaries.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `kb-sources` directory (with `cwe/`, `safecoder/`, `sven/`, `codeshield-rules/`).
    pub sources: PathBuf,
    /// The SQLite file to create or replace.
    pub out: PathBuf,
    pub summarizer: SummarizerChoice,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// The static embedding model's directory (`vocab.txt`,
    /// `vectors.rowq.i8`, `scales.rowq.f32`); copied into the file.
    pub embeddings: PathBuf,
    /// The developer-scenario file (`scenarios/developer-tasks.jsonl`).
    pub scenarios: PathBuf,
    /// The ordinary-task file (`scenarios/ordinary-tasks.jsonl`).
    pub ordinary: PathBuf,
    /// Also put every weakness of the OWASP Top Ten 2021 in scope (the
    /// catalog's view 1344): 127 more than the default, measured in EVAL.md.
    pub owasp_top10: bool,
}

/// The embedding model shipped in this source tree, relative to the
/// repository root (where `rescue kb build` is run from).
pub const DEFAULT_EMBEDDINGS: &str = "embeddings/m2v-minilm-256";

/// The developer-phrased task scenarios shipped in this source tree,
/// relative to the repository root (see scenarios/README.md).
pub const DEFAULT_SCENARIOS: &str = "scenarios/developer-tasks.jsonl";

/// Ordinary coding requests, the scenario facet's counterweight, relative
/// to the repository root (see scenarios/README.md).
pub const DEFAULT_ORDINARY: &str = "scenarios/ordinary-tasks.jsonl";

impl BuildOptions {
    /// An offline build without progress bars, with the embedding model of
    /// the source tree this crate was compiled from (tests, tools).
    pub fn offline(sources: PathBuf, out: PathBuf) -> Self {
        Self {
            sources,
            out,
            summarizer: SummarizerChoice::Offline,
            progress: false,
            embeddings: source_tree_embeddings(),
            scenarios: source_tree_scenarios(),
            ordinary: source_tree_ordinary(),
            owasp_top10: false,
        }
    }
}

/// The embedding model of the source tree this crate was compiled from.
pub fn source_tree_embeddings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_EMBEDDINGS)
}

/// The developer-scenario file of the source tree this crate was compiled from.
pub fn source_tree_scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_SCENARIOS)
}

/// The ordinary-task file of the source tree this crate was compiled from.
pub fn source_tree_ordinary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_ORDINARY)
}

/// The back-end of cluster-then-summarize.
#[derive(Debug, Clone)]
pub enum SummarizerChoice {
    /// Deterministic, from the catalog text and the pairs' API changes.
    Offline,
    /// An OpenAI-compatible chat endpoint, answers cached on disk.
    Llm(LlmConfig),
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// Non-deprecated weaknesses stored (the whole hierarchy).
    pub cwes_total: usize,
    /// Weaknesses that are retrieval candidates.
    pub cwes_in_scope: usize,
    /// Secure code examples stored (catalog and pairs).
    pub examples: usize,
    /// Of those, sliced code pairs.
    pub pair_examples: usize,
    /// Pair records read from the datasets (before deduplication).
    pub pairs_read: usize,
    /// Average lines of a fixed function before and after slicing.
    pub lines_before_avg: f64,
    pub lines_after_avg: f64,
    /// `kb_meta.backend`.
    pub backend: String,
    /// Summarizer calls Algorithm 1 made (batches and merges).
    pub summarizer_calls: usize,
    /// LLM back-end: requests sent, and answers taken from the cache.
    pub llm_requests: usize,
    pub llm_cache_hits: usize,
    pub content_hash: String,
}

/// Builds the knowledge base from `opts.sources` into `opts.out`. The file
/// is written beside `out` under a temporary name and renamed into place, so
/// `out` is either the old file or the complete new one.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    build::build(opts)
}

/// What [`verify`] found in a valid knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbInfo {
    pub schema_version: u32,
    pub content_hash: String,
    pub cwes_in_scope: usize,
    /// How guidelines were produced, e.g. "offline-catalog-v1".
    pub backend: String,
}

/// Opens nothing itself: verifies an already-open (read-only) connection:
/// schema_version equals [`SCHEMA_VERSION`], the stored content hash equals
/// the recomputed one. `path` only labels errors. Errors are
/// [`Error::KbInvalid`] with a message saying what to do, or
/// [`Error::Sqlite`] when the file cannot be read at all.
pub fn verify(conn: &rusqlite::Connection, path: &Path) -> Result<KbInfo> {
    let invalid = |message: String| Error::KbInvalid {
        path: path.to_owned(),
        message,
    };
    let sqlite = |source| Error::Sqlite {
        path: path.to_owned(),
        source,
    };

    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'kb_meta')",
            [],
            |row| row.get(0),
        )
        .map_err(sqlite)?;
    if !has_meta {
        return Err(invalid(
            "not a RESCUE knowledge base (no kb_meta table); build one with `rescue kb build`"
                .into(),
        ));
    }
    let meta = |key: &str| -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        conn.query_row("SELECT value FROM kb_meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()
        .map_err(sqlite)
    };

    let stored_version = meta(schema::META_SCHEMA_VERSION)?
        .ok_or_else(|| invalid("kb_meta has no schema_version".into()))?;
    let schema_version: u32 = stored_version.trim().parse().map_err(|_| {
        invalid(format!(
            "kb_meta schema_version {stored_version:?} is not a number"
        ))
    })?;
    if schema_version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "schema version {schema_version}, but this build of rescue reads version {SCHEMA_VERSION} — rebuild it with `rescue kb build`"
        )));
    }
    let user_version: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if user_version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "PRAGMA user_version is {user_version} but kb_meta says schema version {schema_version} — the file was modified after it was built"
        )));
    }

    let stored_hash = meta(schema::META_CONTENT_HASH)?
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("kb_meta has no content_hash — the build did not finish".into()))?;
    let computed = content_hash(conn).map_err(sqlite)?;
    if stored_hash != computed {
        return Err(invalid(format!(
            "content hash mismatch: stored {stored_hash}, computed {computed} — the file was modified after it was built"
        )));
    }

    let backend =
        meta(schema::META_BACKEND)?.ok_or_else(|| invalid("kb_meta has no backend".into()))?;
    let cwes_in_scope: i64 = conn
        .query_row("SELECT count(*) FROM cwe WHERE in_scope = 1", [], |row| {
            row.get(0)
        })
        .map_err(sqlite)?;
    Ok(KbInfo {
        schema_version,
        content_hash: computed,
        cwes_in_scope: usize::try_from(cwes_in_scope).unwrap_or(0),
        backend,
    })
}

/// Parses a CWE id as the sources spell it: "cwe-022", "CWE-22", "22" → 22.
pub fn parse_cwe_id(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = match s.get(..4) {
        Some(prefix)
            if prefix.eq_ignore_ascii_case("cwe-") || prefix.eq_ignore_ascii_case("cwe_") =>
        {
            &s[4..]
        }
        _ => s,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The display form of a CWE id: 22 → "CWE-22".
pub fn cwe_label(id: u32) -> String {
    format!("CWE-{id}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rusqlite::{Connection, OpenFlags};

    use super::build::{CweRow, ExampleRow, KbContent, write_kb};
    use super::*;

    fn tiny_content() -> KbContent {
        let cwe = |id: u32, name: &str, in_scope: bool| CweRow {
            id,
            name: name.into(),
            abstraction: "Base".into(),
            status: "Stable".into(),
            description: format!("{name} happens."),
            guideline: "- Use prepared statements.".into(),
            cause: format!("{name} happens."),
            in_scope,
            scope_reason: if in_scope {
                "top25-2024".into()
            } else {
                String::new()
            },
            ..CweRow::default()
        };
        KbContent {
            meta: BTreeMap::from([
                ("backend".into(), schema::BACKEND.into()),
                ("cwe_catalog_version".into(), "4.14".into()),
            ]),
            cwes: vec![
                cwe(89, "SQL Injection", true),
                cwe(943, "Data Query Logic", false),
            ],
            parents: vec![(89, 943)],
            examples: vec![ExampleRow {
                id: "cwe-catalog:89:1".into(),
                cwe: 89,
                language: "php".into(),
                code: "$id = intval($_COOKIE[\"mid\"]);".into(),
                intro: "Cast first.".into(),
                source: "MITRE CWE 4.14".into(),
                license: "CWE Terms of Use".into(),
                ..ExampleRow::default()
            }],
            apis: vec![(89, "cursor.execute".into(), 3)],
            scenarios: vec![build::ScenarioRow {
                cwe: 89,
                language: "python".into(),
                task: "Look up the customer whose name the caller passes in.".into(),
            }],
        }
    }

    fn tiny_kb() -> (Connection, String) {
        let mut conn = Connection::open_in_memory().unwrap();
        let hash = write_kb(
            &mut conn,
            &tiny_content(),
            crate::embed::shipped_for_tests(),
        )
        .unwrap();
        (conn, hash)
    }

    fn tiny_kb_file(dir: &Path) -> PathBuf {
        let path = dir.join("kb.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        write_kb(
            &mut conn,
            &tiny_content(),
            crate::embed::shipped_for_tests(),
        )
        .unwrap();
        path
    }

    fn open_ro(path: &Path) -> Connection {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    #[test]
    fn content_hash_is_deterministic_and_stored() {
        let (a, hash_a) = tiny_kb();
        let (_b, hash_b) = tiny_kb();
        assert_eq!(hash_a, hash_b);
        assert_eq!(hash_a.len(), 64);
        assert_eq!(
            content_hash(&a).unwrap(),
            hash_a,
            "the stored hash row is excluded"
        );
        let stored: String = a
            .query_row(
                "SELECT value FROM kb_meta WHERE key = 'content_hash'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, hash_a);
    }

    #[test]
    fn content_hash_changes_with_any_row() {
        let edits = [
            "UPDATE cwe SET guideline = 'x' WHERE id = 89",
            "UPDATE cwe SET in_scope = 1 WHERE id = 943",
            "DELETE FROM cwe_parent",
            "UPDATE example SET code = code || ' ' WHERE cwe = 89",
            "UPDATE kb_meta SET value = 'other' WHERE key = 'backend'",
            "INSERT INTO cwe_fts (rowid, name, description, guideline, cause, tasks) VALUES (943, 'a', 'b', 'c', 'd', 'e')",
            "CREATE INDEX extra ON cwe (name)",
            // Same text, different type: the serialisation is type-tagged.
            "UPDATE cwe SET languages = CAST('' AS BLOB) WHERE id = 89",
        ];
        let (_, original) = tiny_kb();
        for edit in edits {
            let (conn, _) = tiny_kb();
            conn.execute_batch(edit).unwrap();
            assert_ne!(content_hash(&conn).unwrap(), original, "{edit}");
        }
        let (conn, _) = tiny_kb();
        conn.execute_batch("UPDATE kb_meta SET value = 'anything' WHERE key = 'content_hash'")
            .unwrap();
        assert_eq!(content_hash(&conn).unwrap(), original);
    }

    #[test]
    fn verify_accepts_a_fresh_kb() {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny_kb_file(dir.path());
        let info = verify(&open_ro(&path), &path).unwrap();
        assert_eq!(info.schema_version, SCHEMA_VERSION);
        assert_eq!(info.cwes_in_scope, 1);
        assert_eq!(info.backend, schema::BACKEND);
        assert_eq!(info.content_hash.len(), 64);
    }

    #[test]
    fn verify_rejects_a_tampered_kb() {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny_kb_file(dir.path());
        Connection::open(&path)
            .unwrap()
            .execute_batch("UPDATE cwe SET guideline = '- Concatenate SQL freely.' WHERE id = 89")
            .unwrap();
        let err = verify(&open_ro(&path), &path).unwrap_err();
        let Error::KbInvalid { message, .. } = &err else {
            panic!("expected KbInvalid, got {err:?}");
        };
        assert!(
            message.starts_with("content hash mismatch: stored "),
            "{message}"
        );
        assert!(message.contains("modified after it was built"), "{message}");
    }

    #[test]
    fn verify_rejects_another_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny_kb_file(dir.path());
        Connection::open(&path)
            .unwrap()
            .execute_batch("UPDATE kb_meta SET value = '99' WHERE key = 'schema_version'")
            .unwrap();
        let err = verify(&open_ro(&path), &path).unwrap_err();
        assert!(
            matches!(&err, Error::KbInvalid { message, .. } if message.contains("schema version 99")),
            "{err:?}"
        );
    }

    #[test]
    fn verify_rejects_a_foreign_database() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let err = verify(&conn, Path::new("other.db")).unwrap_err();
        assert!(
            matches!(&err, Error::KbInvalid { message, .. } if message.contains("no kb_meta")),
            "{err:?}"
        );
    }

    #[test]
    fn cwe_ids_are_normalised() {
        assert_eq!(parse_cwe_id("cwe-022"), Some(22));
        assert_eq!(parse_cwe_id("CWE-89"), Some(89));
        assert_eq!(parse_cwe_id("1004"), Some(1004));
        assert_eq!(parse_cwe_id("cwe-"), None);
        assert_eq!(parse_cwe_id("cwe-2x"), None);
        assert_eq!(cwe_label(22), "CWE-22");
    }

    /// The shared sources live beside the repository (`../shared` from its root).
    fn shared_sources() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/kb-sources")
    }

    #[test]
    fn the_opt_in_owasp_scope_builds_with_scenarios_for_every_weakness() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("kb-owasp.sqlite");
        let options = BuildOptions {
            owasp_top10: true,
            ..BuildOptions::offline(shared_sources(), out.clone())
        };
        let report = build(&options).unwrap();
        // 83 by default, and the OWASP Top Ten 2021's weaknesses (view 1344).
        assert_eq!(report.cwes_in_scope, 210, "{report:?}");
        let conn = open_ro(&out);
        verify(&conn, &out).unwrap();
        for id in [113, 329, 117] {
            let reason: String = one(
                &conn,
                &format!("SELECT scope_reason FROM cwe WHERE id = {id} AND in_scope = 1"),
            );
            assert_eq!(reason, "owasp-top10-2021", "CWE-{id}");
        }
        // The shipped scenario file covers the wider scope too.
        let without: i64 = one(
            &conn,
            "SELECT count(*) FROM cwe c WHERE c.in_scope = 1 \
             AND (SELECT count(*) FROM scenario s WHERE s.cwe = c.id) < 12",
        );
        assert_eq!(without, 0);
    }

    #[test]
    fn builds_the_real_kb_deterministically() {
        let sources = shared_sources();
        assert!(
            sources.join("cwe/cwec_v4.14.xml").is_file(),
            "shared KB sources missing at {}",
            sources.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("kb/rescue-kb.sqlite");
        let started = std::time::Instant::now();
        let report = build(&BuildOptions::offline(sources.clone(), out.clone())).unwrap();
        eprintln!("built in {:?}: {report:?}", started.elapsed());

        assert!((40..=150).contains(&report.cwes_in_scope), "{report:?}");
        assert!(report.cwes_total > 900, "{report:?}");
        let conn = open_ro(&out);
        let info = verify(&conn, &out).unwrap();
        assert_eq!(info.content_hash, report.content_hash);
        assert_eq!(info.cwes_in_scope, report.cwes_in_scope);

        let in_scope = |id: u32| -> bool {
            conn.query_row("SELECT in_scope FROM cwe WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        for id in [89, 79, 22] {
            assert!(in_scope(id), "CWE-{id} should be in scope");
        }
        // An earlier year's Top 25 (the catalog's views) is enough for scope.
        let reason: String = conn
            .query_row("SELECT scope_reason FROM cwe WHERE id = 522", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(reason, "top25-2019-2023");
        // The OWASP Top Ten is opt-in (`--owasp-top10`).
        let in_owasp_only: bool = conn
            .query_row("SELECT in_scope FROM cwe WHERE id = 113", [], |r| r.get(0))
            .unwrap();
        assert!(!in_owasp_only);
        // Every in-scope weakness has developer scenarios, each one a vector.
        let without: i64 = conn
            .query_row(
                "SELECT count(*) FROM cwe c WHERE c.in_scope = 1 \
                 AND (SELECT count(*) FROM scenario s WHERE s.cwe = c.id) < 12",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(without, 0);
        let (scenarios, ids, scales, vectors): (i64, Vec<u8>, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM scenario), cwes, scales, vectors FROM scenario_index",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(ids.len() / 4, scenarios as usize);
        assert_eq!(scales.len() / 4, scenarios as usize);
        assert_eq!(vectors.len(), scenarios as usize * crate::embed::DIM);
        // A WITHOUT ROWID table's row is its key, and SQLite copies a row
        // that overflows its page whole for every key it compares (schema
        // 10 made the big-row tables rowid tables): such tables keep rows
        // well under a page's local payload limit (about 1,000 bytes).
        // kb_meta is read once when the KB opens, the FTS5 tables only by
        // the build.
        let compact: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND sql LIKE '%WITHOUT ROWID%' AND name <> 'kb_meta' \
                 AND name NOT LIKE 'cwe_fts%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(compact.contains(&"lexical_word".to_string()), "{compact:?}");
        for table in &compact {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let row_size = columns
                .iter()
                .map(|c| format!("coalesce(length(CAST({c} AS BLOB)), 0)"))
                .collect::<Vec<_>>()
                .join(" + ");
            let largest: i64 = one(&conn, &format!("SELECT max({row_size}) FROM {table}"));
            assert!(largest < 900, "{table}: a row of {largest} bytes");
        }
        // The classifier knows every in-scope weakness and the ordinary tasks.
        let classes: Vec<u8> = one(&conn, "SELECT classes FROM cwe_classifier");
        let classes = rescue_text::packed::read_ids(&classes).unwrap();
        assert_eq!(classes.len(), report.cwes_in_scope + 1);
        assert_eq!(classes[0], 0);
        let guideline: String = conn
            .query_row("SELECT guideline FROM cwe WHERE id = 89", [], |r| r.get(0))
            .unwrap();
        let lower = guideline.to_lowercase();
        assert!(
            lower.contains("prepared statement") || lower.contains("parameteriz"),
            "{guideline}"
        );
        assert!(
            guideline.lines().all(|l| l.starts_with("- ")),
            "{guideline}"
        );
        let parents: Vec<u32> = conn
            .prepare("SELECT parent FROM cwe_parent WHERE child = 89")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(parents.contains(&943), "{parents:?}");
        let fts_rows: i64 = conn
            .query_row("SELECT count(*) FROM cwe_fts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fts_rows as usize, report.cwes_in_scope);
        let best: u32 = conn
            .query_row(
                "SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH 'sql AND injection' ORDER BY bm25(cwe_fts) LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(best, 89);
        drop(conn);

        let again = build(&BuildOptions::offline(
            sources,
            dir.path().join("again.sqlite"),
        ))
        .unwrap();
        assert_eq!(again, report);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(dir.path().join("again.sqlite")).unwrap(),
            "the files themselves are byte-identical"
        );
    }

    fn one<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> T {
        conn.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn the_owasp_top_ten_is_in_scope_only_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join("sources");
        fixture::write_sources(&sources, 12, 7);
        let out = dir.path().join("kb.sqlite");
        let options = BuildOptions {
            owasp_top10: true,
            ..BuildOptions::offline(sources, out.clone())
        };
        // The fixture's OWASP view lists 943 through a category.
        assert_eq!(build(&options).unwrap().cwes_in_scope, 3);
        let conn = open_ro(&out);
        let reason: String = one(&conn, "SELECT scope_reason FROM cwe WHERE id = 943");
        assert_eq!(reason, "owasp-top10-2021");
        let reason: String = one(&conn, "SELECT scope_reason FROM cwe WHERE id = 89");
        assert!(reason.contains("owasp-top10-2021"), "{reason}");
        verify(&conn, &out).unwrap();
    }

    #[test]
    fn builds_both_levels_from_a_small_source_tree() {
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join("sources");
        fixture::write_sources(&sources, 12, 7);
        let out = dir.path().join("kb.sqlite");
        let report = build(&BuildOptions::offline(sources.clone(), out.clone())).unwrap();
        assert_eq!(report.cwes_total, 3);
        assert_eq!(report.cwes_in_scope, 2, "89 and 78; their parent stays out");
        assert_eq!(report.pairs_read, 12 + 7);
        assert_eq!(report.pair_examples, 19);
        assert_eq!(report.examples, 19);
        assert_eq!(report.backend, schema::BACKEND);
        // CWE-89, 12 pairs: two batches and a merge; CWE-78, 7 pairs: one batch.
        assert_eq!(report.summarizer_calls, 2 + 1 + 1);

        let conn = open_ro(&out);
        verify(&conn, &out).unwrap();
        // CWE level: guideline from the catalog plus what the fixes agree on.
        let guideline: String = one(&conn, "SELECT guideline FROM cwe WHERE id = 78");
        assert_eq!(
            guideline,
            "- Pass arguments as a list instead of a shell string.\n\
             - Call `subprocess.run` instead of `os.system` (Python; 7 fixes in 7 projects do so)."
        );
        let cause: String = one(&conn, "SELECT cause FROM cwe WHERE id = 78");
        assert!(cause.ends_with("removed calls such as `os.system` (Python) and added calls such as `subprocess.run` (Python)."), "{cause}");
        assert_eq!(one::<i64>(&conn, "SELECT pairs FROM cwe WHERE id = 89"), 12);
        assert_eq!(one::<i64>(&conn, "SELECT pairs FROM cwe WHERE id = 943"), 0);
        // API sets.
        assert_eq!(
            one::<String>(&conn, "SELECT apis FROM cwe WHERE id = 89"),
            "conn.cursor,cur.execute,cur.fetchall"
        );
        assert_eq!(
            one::<i64>(
                &conn,
                "SELECT count FROM cwe_api WHERE cwe = 78 AND api = 'os.system'"
            ),
            7
        );
        assert_eq!(
            one::<i64>(
                &conn,
                "SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH 'apis : fetchall'"
            ),
            89
        );
        // Code level: the slice drops the unrelated log call.
        let (code, lines_before, lines_after, slicing, source, record, commit, license, apis, intro): (
            String, i64, i64, String, String, String, String, String, String, String,
        ) = conn
            .query_row(
                "SELECT code, lines_before, lines_after, slicing, source, record, commit_link, license, apis, intro \
                 FROM example WHERE id = 'safecoder:train:sec-new-desc:1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?)),
            )
            .unwrap();
        assert_eq!(
            code,
            "def find_user0(conn, name):\n    cur = conn.cursor()\n    cur.execute(\"SELECT * FROM users0 WHERE name = %s\", (name,))\n    return cur.fetchall()"
        );
        assert_eq!((lines_before, lines_after), (5, 4));
        assert_eq!(slicing, "pdg-slice");
        assert_eq!(source, "SafeCoder train sec-new-desc.jsonl:1");
        assert_eq!(record, "sec-new-desc.jsonl:1");
        assert_eq!(commit, format!("github.com/org0/app/commit/{:040}", 0));
        assert_eq!(license, "MIT");
        assert_eq!(apis, "conn.cursor,cur.execute,cur.fetchall");
        assert_eq!(
            intro,
            "Write a Python function that looks up user 0 by name."
        );
        // SVEN's val pair gets the description SafeCoder's val/sec-desc gives it.
        let (intro, cause): (String, String) = conn
            .query_row(
                "SELECT intro, cause FROM example WHERE id = 'sven:val:cwe-078:1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(intro, "Write a Python function that lists a directory.");
        assert!(
            cause.starts_with(
                "The vulnerable version called `os.system`; the fix calls `subprocess.run` instead."
            ),
            "{cause}"
        );
        // The plugin's example query finds a pair example.
        let id: String = conn
            .query_row(
                "SELECT id, language, code FROM example WHERE cwe = ?1 AND (language = ?2 OR (?2 = '' AND language <> '')) ORDER BY length(code), id LIMIT 1",
                rusqlite::params![78, "python"],
                |r| r.get(0),
            )
            .unwrap();
        assert!(id.starts_with("sven:"), "{id}");
        // What `rescue kb stats` prints.
        let st = stats(&conn).unwrap();
        assert_eq!(
            (
                st.cwes_total,
                st.cwes_in_scope,
                st.cwes_with_pairs,
                st.examples
            ),
            (3, 2, 2, 19)
        );
        assert_eq!(st.backend, schema::BACKEND);
        assert_eq!(
            st.by_dataset,
            [("safecoder".to_string(), 12), ("sven".to_string(), 7)]
        );
        assert_eq!(st.by_language.len(), 1);
        assert_eq!(st.by_language[0].examples, 19);
        let cwe78 = &st.by_cwe[0];
        assert_eq!(
            (cwe78.id, cwe78.pairs, cwe78.examples, cwe78.apis),
            (78, 7, 7, 2)
        );
        assert_eq!(cwe78.top_apis, ["os.system", "subprocess.run"]);
        let text = st.to_string();
        assert!(
            text.contains("19 examples (safecoder 12, sven 7)"),
            "{text}"
        );
        assert!(text.contains("CWE-89 "), "{text}");
        drop(conn);

        // Same inputs, same hash.
        let again = build(&BuildOptions::offline(
            sources,
            dir.path().join("again.sqlite"),
        ))
        .unwrap();
        assert_eq!(again.content_hash, report.content_hash);
    }

    #[test]
    fn scenarios_of_in_scope_weaknesses_are_stored_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join("sources");
        fixture::write_sources(&sources, 2, 2);
        let scenarios = dir.path().join("scenarios.jsonl");
        std::fs::write(
            &scenarios,
            r#"{"cwe": 89, "lang": "python", "task": "Look up the customer   whose name the caller passes in."}
{"cwe": 78, "lang": "go", "task": "Run the ping tool on the host the user typed."}

{"cwe": 943, "lang": "python", "task": "Out of scope: skipped."}
{"cwe": 89, "lang": "java", "task": "🦀 🦀"}
"#,
        )
        .unwrap();
        let ordinary = dir.path().join("ordinary.jsonl");
        std::fs::write(
            &ordinary,
            "{\"lang\": \"rust\", \"task\": \"Sort the scores in descending order.\"}\n",
        )
        .unwrap();
        let out = dir.path().join("kb.sqlite");
        let options = BuildOptions {
            scenarios: scenarios.clone(),
            ordinary: ordinary.clone(),
            ..BuildOptions::offline(sources.clone(), out.clone())
        };
        build(&options).unwrap();
        let conn = open_ro(&out);
        let rows: Vec<(i64, u32, String, String)> = conn
            .prepare("SELECT id, cwe, language, task FROM scenario ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                // Ordinary tasks are the scenarios of "CWE-0".
                (
                    1,
                    0,
                    "rust".into(),
                    "Sort the scores in descending order.".into()
                ),
                (
                    2,
                    78,
                    "go".into(),
                    "Run the ping tool on the host the user typed.".into()
                ),
                (
                    3,
                    89,
                    "python".into(),
                    "Look up the customer whose name the caller passes in.".into()
                ),
                (4, 89, "java".into(), "\u{1F980} \u{1F980}".into()),
            ]
        );
        // The index lists the scenarios with a vector (not the one no known
        // word embeds), by CWE, as the reader expects them.
        let (ids, scales, vectors): (Vec<u8>, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT cwes, scales, vectors FROM scenario_index",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(rescue_text::packed::read_ids(&ids).unwrap(), [0, 78, 89]);
        assert_eq!(scales.len(), 3 * 4);
        assert_eq!(vectors.len(), 3 * crate::embed::DIM);
        // The classifier's model: a class for the ordinary tasks and for
        // every CWE with task texts (scenarios, pair tasks), and each
        // scenario reads most like its own CWE.
        let (classes, biases, weights): (Vec<u8>, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT classes, biases, weights FROM cwe_classifier",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let classes = rescue_text::packed::read_ids(&classes).unwrap();
        let biases = rescue_text::packed::read_scores(&biases).unwrap();
        assert!(
            [0, 78, 89].iter().all(|c| classes.contains(c)),
            "{classes:?}"
        );
        assert_eq!(biases.len(), classes.len());
        assert_eq!(weights.len(), classes.len() * crate::embed::DIM * 2);
        let embedder = crate::embed::Embedder::from_dir(&options.embeddings).unwrap();
        for (cwe, task) in [
            (78, "Run the ping tool on the host the user typed."),
            (89, "Look up the customer whose name the caller passes in."),
            (0, "Sort the scores in descending order."),
        ] {
            let query = embedder.embed(&rescue_text::terms(task).join(" "));
            let products =
                crate::embed::dot_rows_le_bytes(&weights, &crate::embed::to_le_bytes(&query))
                    .unwrap();
            let best = (0..classes.len())
                .max_by(|&a, &b| (biases[a] + products[a]).total_cmp(&(biases[b] + products[b])))
                .unwrap();
            assert_eq!(classes[best], cwe, "{task}");
        }
        let hashes: String = one(
            &conn,
            "SELECT value FROM kb_meta WHERE key = 'source_hashes'",
        );
        assert!(
            hashes.contains(DEFAULT_SCENARIOS) && hashes.contains(DEFAULT_ORDINARY),
            "{hashes}"
        );
        // The fixture catalog's Top 25 views put both weaknesses in scope.
        let reason: String = one(&conn, "SELECT scope_reason FROM cwe WHERE id = 78");
        assert!(
            reason.contains("top25-2019-2023") && !reason.contains("owasp"),
            "{reason}"
        );
        drop(conn);

        // A malformed line fails the build, naming the file and the line.
        for bad in [
            "{\"cwe\": 89, \"lang\": \"python\"}",
            "{\"cwe\": 89, \"lang\": \"\", \"task\": \"x\"}",
            "{\"cwe\": 89, \"lang\": \"python\", \"task\": \"x\", \"extra\": 1}",
            "not json",
        ] {
            std::fs::write(&scenarios, format!("\n{bad}\n")).unwrap();
            let message = build(&options).unwrap_err().to_string();
            assert!(
                message.contains("scenarios.jsonl") && message.contains("line 2"),
                "{bad}: {message}"
            );
        }
        std::fs::write(&scenarios, "").unwrap();
        std::fs::write(&ordinary, "{\"lang\": \"rust\"}\n").unwrap();
        let message = build(&options).unwrap_err().to_string();
        assert!(
            message.contains("ordinary.jsonl") && message.contains("line 1"),
            "{message}"
        );
    }

    #[test]
    fn llm_backend_builds_through_a_mock_endpoint_and_caches() {
        let server = summarize::llm::mock::start();
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join("sources");
        fixture::write_sources(&sources, 23, 7);
        let options = |out: &str| BuildOptions {
            embeddings: source_tree_embeddings(),
            scenarios: source_tree_scenarios(),
            ordinary: source_tree_ordinary(),
            owasp_top10: false,
            sources: sources.clone(),
            out: dir.path().join(out),
            summarizer: SummarizerChoice::Llm(LlmConfig {
                base_url: server.base_url(),
                model: "mock-model".into(),
                api_key_env: "RESCUE_TEST_UNSET_API_KEY".into(),
                cache_dir: dir.path().join("cache"),
                timeout: std::time::Duration::from_secs(10),
                retry_delay: std::time::Duration::from_millis(10),
            }),
            progress: false,
        };

        let report = build(&options("llm.sqlite")).unwrap();
        // CWE-89: 23 pairs = batches of 10, 10, 3 + one merge; CWE-78: 7 pairs = one batch.
        assert_eq!(server.requests(), 5);
        assert_eq!(
            (
                report.summarizer_calls,
                report.llm_requests,
                report.llm_cache_hits
            ),
            (5, 5, 0)
        );
        assert_eq!(report.backend, "llm-v1:mock-model");

        let out = dir.path().join("llm.sqlite");
        let conn = open_ro(&out);
        assert_eq!(verify(&conn, &out).unwrap().backend, "llm-v1:mock-model");
        assert_eq!(
            one::<String>(&conn, "SELECT guideline FROM cwe WHERE id = 89"),
            "- Do merge 3 summaries for CWE-89.\n- Don't trust input."
        );
        assert_eq!(
            one::<String>(&conn, "SELECT cause FROM cwe WHERE id = 89"),
            "Merged cause of 3 summaries."
        );
        assert_eq!(
            one::<String>(&conn, "SELECT guideline FROM cwe WHERE id = 78"),
            "- Do fix what 7 pairs show."
        );
        assert_eq!(
            one::<i64>(
                &conn,
                "SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH 'merge' ORDER BY rowid LIMIT 1"
            ),
            89
        );
        // Examples and API sets do not depend on the summarizer.
        assert_eq!(one::<i64>(&conn, "SELECT count(*) FROM example"), 30);
        drop(conn);

        // A rebuild answers everything from the cache: no request, same file.
        let again = build(&options("again.sqlite")).unwrap();
        assert_eq!(server.requests(), 5);
        assert_eq!((again.llm_requests, again.llm_cache_hits), (0, 5));
        assert_eq!(again.content_hash, report.content_hash);

        let offline = build(&BuildOptions::offline(
            sources.clone(),
            dir.path().join("off.sqlite"),
        ))
        .unwrap();
        assert_ne!(offline.content_hash, report.content_hash);
    }
}
