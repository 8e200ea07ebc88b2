//! `rescue kb stats`: what a knowledge base holds, per level (CWEs,
//! examples), per language and per CWE, read back from the file itself.

use std::fmt;

use rusqlite::Connection;

use super::schema;

/// Counts of one knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct KbStats {
    pub schema_version: String,
    pub backend: String,
    pub content_hash: String,
    pub cwes_total: usize,
    pub cwes_in_scope: usize,
    /// In-scope CWEs with summarized code pairs.
    pub cwes_with_pairs: usize,
    pub parent_edges: usize,
    pub examples: usize,
    /// (dataset, examples).
    pub by_dataset: Vec<(String, usize)>,
    pub by_language: Vec<LanguageStats>,
    /// In-scope CWEs, by id.
    pub by_cwe: Vec<CweStats>,
    /// `kb_meta.pair_stats` (JSON), '' when absent.
    pub pair_stats: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LanguageStats {
    pub language: String,
    pub examples: usize,
    pub lines_before_avg: f64,
    pub lines_after_avg: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CweStats {
    pub id: u32,
    pub name: String,
    pub pairs: usize,
    pub examples: usize,
    /// Distinct APIs in its API set.
    pub apis: usize,
    /// Most frequent APIs, at most three.
    pub top_apis: Vec<String>,
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| usize::try_from(n).unwrap_or(0))
}

/// Reads the counts from an open knowledge base (schema version 3).
pub fn stats(conn: &Connection) -> rusqlite::Result<KbStats> {
    let meta = |key: &str| -> rusqlite::Result<String> {
        use rusqlite::OptionalExtension;
        Ok(conn
            .query_row("SELECT value FROM kb_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_default())
    };
    let mut by_dataset = Vec::new();
    let mut stmt =
        conn.prepare("SELECT dataset, count(*) FROM example GROUP BY dataset ORDER BY 2 DESC, 1")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (dataset, n) = row?;
        by_dataset.push((dataset, n as usize));
    }

    let mut by_language = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT language, count(*), avg(lines_before), avg(lines_after) FROM example \
         GROUP BY language ORDER BY 2 DESC, 1",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(LanguageStats {
            language: r.get(0)?,
            examples: r.get::<_, i64>(1)? as usize,
            lines_before_avg: r.get(2)?,
            lines_after_avg: r.get(3)?,
        })
    })?;
    for row in rows {
        by_language.push(row?);
    }

    let mut by_cwe = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT c.id, c.name, c.pairs, \
                (SELECT count(*) FROM example e WHERE e.cwe = c.id), \
                (SELECT count(*) FROM cwe_api a WHERE a.cwe = c.id) \
         FROM cwe c WHERE c.in_scope = 1 ORDER BY c.id",
    )?;
    let mut top =
        conn.prepare("SELECT api FROM cwe_api WHERE cwe = ?1 ORDER BY count DESC, api LIMIT 3")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (id, name, pairs, examples, apis) = row?;
        let top_apis = top
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        by_cwe.push(CweStats {
            id,
            name,
            pairs: pairs as usize,
            examples: examples as usize,
            apis: apis as usize,
            top_apis,
        });
    }

    Ok(KbStats {
        schema_version: meta(schema::META_SCHEMA_VERSION)?,
        backend: meta(schema::META_BACKEND)?,
        content_hash: meta(schema::META_CONTENT_HASH)?,
        cwes_total: count(conn, "SELECT count(*) FROM cwe")?,
        cwes_in_scope: count(conn, "SELECT count(*) FROM cwe WHERE in_scope = 1")?,
        cwes_with_pairs: count(
            conn,
            "SELECT count(*) FROM cwe WHERE in_scope = 1 AND pairs > 0",
        )?,
        parent_edges: count(conn, "SELECT count(*) FROM cwe_parent")?,
        examples: count(conn, "SELECT count(*) FROM example")?,
        by_dataset,
        by_language,
        by_cwe,
        pair_stats: meta(schema::META_PAIR_STATS)?,
    })
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

impl fmt::Display for KbStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schema {}, backend {}, content hash {}",
            self.schema_version, self.backend, self.content_hash
        )?;
        writeln!(f)?;
        writeln!(f, "CWE level")?;
        writeln!(
            f,
            "  {} weaknesses ({} ChildOf edges), {} in scope, {} of them with summarized code pairs",
            self.cwes_total, self.parent_edges, self.cwes_in_scope, self.cwes_with_pairs
        )?;
        writeln!(f, "Code level")?;
        let datasets: Vec<String> = self
            .by_dataset
            .iter()
            .map(|(d, n)| format!("{d} {n}"))
            .collect();
        writeln!(f, "  {} examples ({})", self.examples, datasets.join(", "))?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<12} {:>8} {:>13} {:>12}",
            "language", "examples", "lines before", "lines after"
        )?;
        for l in &self.by_language {
            let name = if l.language.is_empty() {
                "(none)"
            } else {
                &l.language
            };
            writeln!(
                f,
                "{:<12} {:>8} {:>13.1} {:>12.1}",
                name, l.examples, l.lines_before_avg, l.lines_after_avg
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<9} {:<44} {:>5} {:>8} {:>5}  top APIs",
            "CWE", "name", "pairs", "examples", "APIs"
        )?;
        for c in &self.by_cwe {
            writeln!(
                f,
                "{:<9} {:<44} {:>5} {:>8} {:>5}  {}",
                format!("CWE-{}", c.id),
                clip(&c.name, 44),
                c.pairs,
                c.examples,
                c.apis,
                c.top_apis.join(", ")
            )?;
        }
        if !self.pair_stats.is_empty() {
            writeln!(f)?;
            writeln!(f, "pair_stats {}", self.pair_stats)?;
        }
        Ok(())
    }
}
