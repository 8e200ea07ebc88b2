//! The lexical facet's precomputed index: FTS5's BM25, one word at a time.
//!
//! The plugin's lexical query is an OR of single words, and FTS5's `bm25()`
//! of an OR query is the sum over its phrases of a term that depends only on
//! that phrase, the row and the table's statistics. So the score of every
//! (word, CWE) pair can be asked of FTS5 once, at build time, and stored;
//! at serve time the facet is a few b-tree seeks and a sum instead of an
//! FTS5 scan with `bm25()` (56 us of a 300 us retrieval, BENCHMARKS.md).
//!
//! Which words? Every word the plugin could send whose FTS5 match is not
//! empty: the words of the indexed text (split as FTS5 splits them and as
//! the plugin splits identifiers), the whole words of the embedding model's
//! vocabulary (an English word list that ships with the KB anyway), and
//! every stem of the index with common English endings put back. FTS5
//! itself judges each candidate
//! (porter stemming included), so the stored scores are exactly what the
//! FTS5 query would give; a word outside the list scores nothing, where
//! FTS5 might have stemmed it onto an indexed word (tests/tests/lexical_index.rs
//! measures how often that happens on the dev sets).
//!
//! Words with the same stem have the same postings, so the index stores
//! word -> stem and stem -> (CWE, score) postings once per stem, packed in
//! one blob (`rescue_text::packed`): a request reads one row per word.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, params};

/// Column weights of `bm25(cwe_fts, name, description, guideline, cause,
/// tasks, apis)`: the name is short and precise, so a hit there says the
/// most; the pairs' task descriptions are phrased like requests.
pub const COLUMN_WEIGHTS: [f64; 6] = [4.0, 1.5, 1.0, 1.5, 1.0, 1.0];

/// English endings put back onto every stem of the index: porter stemming
/// mostly cuts a word down to a prefix (`iterates` -> `iter`, `factorial` ->
/// `factori`), so stem + ending regenerates the words a request may use
/// that the indexed text and the vocabulary never spell out. FTS5 then
/// decides which of them really stem onto the index.
const ENDINGS: &[&str] = &[
    "", "e", "s", "es", "ed", "d", "ing", "ings", "er", "ers", "or", "ors", "ator", "ators", "ion",
    "ions", "ation", "ations", "ate", "ates", "ated", "ating", "al", "als", "ally", "ial", "ially",
    "ical", "ically", "ic", "ics", "ity", "ities", "ive", "ives", "ively", "ize", "izes", "ized",
    "izing", "izer", "izers", "ization", "izations", "ise", "ises", "ised", "ising", "isation",
    "ment", "ments", "ness", "able", "ible", "ably", "ful", "fully", "less", "ly", "y", "ies",
    "ied", "ier", "iers", "ism", "ist", "ists", "ance", "ances", "ence", "ences", "ant", "ants",
    "ent", "ents", "ency", "ancy", "ous", "ously", "ure", "ures", "ted", "ting", "ter", "ters",
    "ning", "ned", "ming", "med", "ping", "ped", "ging", "ged",
];

/// What the index holds, for the build report and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalStats {
    pub words: usize,
    pub stems: usize,
    pub postings: usize,
}

/// The words of `text` as a request's words may reach the plugin: lowercase
/// alphanumeric runs, whole and broken at camelCase boundaries (the plugin's
/// own splitting, `rescue_text::words`).
fn candidate_words(text: &str, out: &mut BTreeSet<String>) {
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        if !run.is_empty() {
            out.insert(run.to_lowercase());
        }
    }
    rescue_text::for_each_word(text, |word| {
        out.insert(word.to_owned());
    });
}

/// Fills `lexical_word` and `lexical_stem` from `cwe_fts` (which must be
/// complete) and the embedding vocabulary in `embedding_token`.
pub fn build_index(conn: &Connection) -> rusqlite::Result<LexicalStats> {
    let mut candidates = BTreeSet::new();
    {
        let mut stmt =
            conn.prepare("SELECT name, description, guideline, cause, tasks, apis FROM cwe_fts")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..6 {
                candidate_words(&row.get::<_, String>(i)?, &mut candidates);
            }
        }
        let mut stmt = conn.prepare("SELECT piece FROM embedding_token")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let piece: String = row.get(0)?;
            if piece.chars().all(char::is_alphanumeric) {
                candidates.insert(piece.to_lowercase());
            }
        }
    }

    let weights: Vec<String> = COLUMN_WEIGHTS.iter().map(|w| format!("{w:.1}")).collect();
    let mut search = conn.prepare(&format!(
        "SELECT rowid, -bm25(cwe_fts, {}) FROM cwe_fts WHERE cwe_fts MATCH ?1 ORDER BY rowid",
        weights.join(", ")
    ))?;
    let mut postings_of = |word: &str| -> rusqlite::Result<Vec<(i64, f64)>> {
        search
            .query_map([format!("\"{word}\"")], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
    };

    let mut matched: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for word in &candidates {
        let postings = postings_of(word)?;
        if !postings.is_empty() {
            matched.insert(word.clone(), postings);
        }
    }
    // The index's stems, with each ending (and a porter `i` read back as
    // `y`: `factori` + `es` is `factories`).
    let stems: Vec<String> = {
        conn.execute_batch(
            "CREATE VIRTUAL TABLE temp.cwe_fts_stems USING fts5vocab(main, 'cwe_fts', 'row')",
        )?;
        let stems = conn
            .prepare("SELECT term FROM temp.cwe_fts_stems")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        conn.execute_batch("DROP TABLE temp.cwe_fts_stems")?;
        stems
    };
    for stem in &stems {
        let mut bases = vec![stem.clone()];
        if let Some(base) = stem.strip_suffix('i') {
            bases.push(format!("{base}y"));
        }
        for base in &bases {
            for ending in ENDINGS {
                let word = format!("{base}{ending}");
                if matched.contains_key(&word)
                    || candidates.contains(&word)
                    || !word.chars().all(char::is_alphanumeric)
                {
                    continue;
                }
                let postings = postings_of(&word)?;
                if !postings.is_empty() {
                    matched.insert(word, postings);
                }
            }
        }
    }

    // One stem id per distinct posting list, numbered in word order.
    let mut stem_ids: BTreeMap<Vec<(i64, u64)>, i64> = BTreeMap::new();
    let mut insert_word = conn.prepare("INSERT INTO lexical_word (word, stem) VALUES (?1, ?2)")?;
    let mut insert_stem =
        conn.prepare("INSERT INTO lexical_stem (stem, postings) VALUES (?1, ?2)")?;
    let mut postings = 0;
    for (word, list) in &matched {
        let key: Vec<(i64, u64)> = list.iter().map(|(id, s)| (*id, s.to_bits())).collect();
        let next = stem_ids.len() as i64 + 1;
        let stem = *stem_ids.entry(key).or_insert_with(|| {
            postings += list.len();
            next
        });
        if stem == next {
            insert_stem.execute(params![stem, rescue_text::packed::write_postings(list)])?;
        }
        insert_word.execute(params![word, stem])?;
    }
    Ok(LexicalStats {
        words: matched.len(),
        stems: stem_ids.len(),
        postings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_fts_and_plugin_splitting() {
        let mut words = BTreeSet::new();
        candidate_words("getUserName(id) uses SQL-queries", &mut words);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_eq!(
            words,
            [
                "get",
                "getusername",
                "id",
                "name",
                "queries",
                "sql",
                "user",
                "uses"
            ]
        );
    }

    #[test]
    fn stored_scores_sum_to_the_fts5_score() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE cwe_fts USING fts5(name, description, guideline, cause, tasks, apis, tokenize = 'porter unicode61');
             CREATE TABLE embedding_token (id INTEGER PRIMARY KEY, piece TEXT NOT NULL, scale REAL NOT NULL, vector BLOB NOT NULL);
             CREATE TABLE lexical_word (word TEXT PRIMARY KEY, stem INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE lexical_stem (stem INTEGER PRIMARY KEY, postings BLOB NOT NULL);
             INSERT INTO cwe_fts (rowid, name, description, guideline, cause, tasks, apis) VALUES
               (89, 'SQL Injection', 'queries built from input', 'use parameterized queries', 'concatenation', 'build a query', 'cursor.execute'),
               (79, 'Cross-site Scripting', 'input echoed into pages', 'escape output', 'unescaped input', 'render a page', 'render_template'),
               (22, 'Path Traversal', 'paths built from input', 'normalize paths', 'joined paths', 'read a file', 'open');
             INSERT INTO embedding_token VALUES (0, 'sanitizing', 1.0, x''), (1, '##ing', 1.0, x'');",
        )
        .unwrap();
        let stats = build_index(&conn).unwrap();
        assert!(stats.words > stats.stems && stats.stems > 0, "{stats:?}");
        // "queries" (description) and "query" (tasks) share a stem.
        let stem = |w: &str| -> Option<i64> {
            conn.query_row("SELECT stem FROM lexical_word WHERE word = ?1", [w], |r| {
                r.get(0)
            })
            .ok()
        };
        assert_eq!(stem("queries"), stem("query"));
        assert!(stem("query").is_some());
        assert!(stem("sanitizing").is_none(), "matches nothing");
        assert!(stem("inputs").is_some(), "a stem with an ending put back");
        assert!(
            stem("normalization").is_some(),
            "a stem with an ending put back"
        );

        let fts: Vec<(i64, f64)> = conn
            .prepare(
                "SELECT rowid, -bm25(cwe_fts, 4.0, 1.5, 1.0, 1.5, 1.0, 1.0) FROM cwe_fts \
                 WHERE cwe_fts MATCH '\"input\" OR \"queries\" OR \"paths\"' ORDER BY rowid",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut stored: BTreeMap<i64, f64> = BTreeMap::new();
        let lists: Vec<Vec<u8>> = conn
            .prepare(
                "SELECT s.postings FROM json_each('[\"input\",\"queries\",\"paths\"]') q \
                 JOIN lexical_word w ON w.word = q.value JOIN lexical_stem s ON s.stem = w.stem",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for list in &lists {
            rescue_text::packed::for_each_posting(list, |cwe, score| {
                *stored.entry(cwe).or_default() += score;
            })
            .unwrap();
        }
        assert_eq!(fts.len(), 3);
        assert_eq!(fts.len(), stored.len());
        for ((a, x), (b, y)) in fts.iter().zip(&stored) {
            assert_eq!(a, b);
            assert!((x - y).abs() < 1e-9 * x.abs().max(1.0), "{a}: {x} vs {y}");
        }
    }
}
