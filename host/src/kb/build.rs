//! The knowledge-base build: sources directory in, one self-verifying SQLite
//! file out. Deterministic by construction (sorted inputs, sorted inserts, no
//! timestamps, FTS5 `optimize` + `VACUUM` before hashing), so building twice
//! from the same inputs yields the same content hash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, params};

use super::catalog::{Catalog, compose_cause};
use super::schema::{self, SCHEMA_VERSION};
use super::sources::{self, SourceFiles, TOP25_2024};
use super::text::join_blocks;
use super::{BuildOptions, BuildReport, content_hash};
use crate::{Error, Result};

/// Why a CWE is in scope, in the order the reasons are written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum ScopeReason {
    Top25,
    SafeCoder,
    Sven,
    CodeShield,
}

impl ScopeReason {
    fn label(self) -> &'static str {
        match self {
            Self::Top25 => "top25-2024",
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
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CweRow {
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
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let content = collect(&opts.sources)?;
    let collected = started.elapsed();

    let report_counts = (
        content.cwes.len(),
        content.cwes.iter().filter(|c| c.in_scope).count(),
        content.examples.len(),
    );
    let content_hash = write_atomically(&opts.out, &content)?;
    let (cwes_total, cwes_in_scope, examples) = report_counts;
    tracing::info!(
        out = %opts.out.display(),
        cwes_total,
        cwes_in_scope,
        examples,
        content_hash = %content_hash,
        read_ms = collected.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "knowledge base built"
    );
    Ok(BuildReport {
        cwes_total,
        cwes_in_scope,
        examples,
        content_hash,
    })
}

/// Reads and parses every input and derives the rows.
fn collect(root: &Path) -> Result<KbContent> {
    let mut files = SourceFiles::new(root);

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
    add(&mut TOP25_2024.into_iter(), ScopeReason::Top25);
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

    let mut content = KbContent::default();
    for (&id, weakness) in &catalog.weaknesses {
        let scope_reason = scope.get(&id).cloned();
        content.cwes.push(CweRow {
            id,
            name: weakness.name.clone(),
            abstraction: weakness.abstraction.clone(),
            status: weakness.status.clone(),
            description: weakness.description.clone(),
            extended_description: join_blocks(&weakness.extended_blocks),
            guideline: catalog.guideline(id),
            cause: compose_cause(weakness),
            languages: weakness.languages.join(","),
            tasks: tasks.get(&id).map(|t| t.join("\n")).unwrap_or_default(),
            in_scope: scope_reason.is_some(),
            scope_reason: scope_reason.unwrap_or_default(),
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
            for (n, example) in weakness.good_examples.iter().enumerate() {
                content.examples.push(ExampleRow {
                    id: format!("cwe-catalog:{id}:{}", n + 1),
                    cwe: id,
                    language: example.language.clone(),
                    code: example.code.clone(),
                    intro: example.intro.clone(),
                    source: schema::EXAMPLE_SOURCE.to_owned(),
                    license: schema::EXAMPLE_LICENSE.to_owned(),
                });
            }
        }
    }
    content.parents.sort_unstable();

    let hashes = files.into_hashes();
    content.meta = BTreeMap::from([
        (schema::META_BACKEND.to_owned(), schema::BACKEND.to_owned()),
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
    Ok(content)
}

/// Builds into a temporary file beside `out` and renames it over `out`, so a
/// reader never sees a half-written knowledge base.
fn write_atomically(out: &Path, content: &KbContent) -> Result<String> {
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
        let hash = write_kb(&mut conn, content).map_err(sqlite_error)?;
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

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates the schema in the empty database `conn`, inserts `content`,
/// compacts it and stores the content hash, which it returns.
pub(crate) fn write_kb(conn: &mut Connection, content: &KbContent) -> rusqlite::Result<String> {
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
             guideline, cause, languages, tasks, in_scope, scope_reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut insert_fts =
            tx.prepare("INSERT INTO cwe_fts (rowid, name, description, guideline, cause, tasks) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
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
                c.scope_reason
            ])?;
            if c.in_scope {
                insert_fts.execute(params![
                    c.id,
                    c.name,
                    c.description,
                    c.guideline,
                    c.cause,
                    c.tasks
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
            "INSERT INTO example (id, cwe, language, code, intro, source, license) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for e in &content.examples {
            insert.execute(params![
                e.id, e.cwe, e.language, e.code, e.intro, e.source, e.license
            ])?;
        }
    }
    tx.commit()?;

    // Merges the FTS5 segments into one b-tree and rewrites the file in
    // canonical page order: both make the shadow tables and the bytes a
    // function of the content alone.
    conn.execute("INSERT INTO cwe_fts (cwe_fts) VALUES ('optimize')", [])?;
    conn.execute_batch("VACUUM")?;

    let hash = content_hash(conn)?;
    conn.execute(
        "UPDATE kb_meta SET value = ?1 WHERE key = ?2",
        params![hash, schema::META_CONTENT_HASH],
    )?;
    Ok(hash)
}
