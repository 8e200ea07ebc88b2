//! The knowledge-base file format: SQLite DDL, the `kb_meta` keys and the
//! fixed values the build writes. Changing anything here changes what old
//! files mean, so it must come with a [`SCHEMA_VERSION`] bump.

/// Version of the layout below; stored as `kb_meta.schema_version` and as
/// `PRAGMA user_version`. The runtime refuses files with another value.
pub const SCHEMA_VERSION: u32 = 10;

/// The whole schema, executed once on an empty database.
pub const DDL: &str = r#"
-- Provenance and integrity of the file. Keys: schema_version, content_hash
-- (sha256 over everything else, see kb::content_hash), backend (how
-- guidelines and causes were written), cwe_catalog_version, source_hashes
-- (JSON: relative input path -> sha256), pair_stats (JSON: pairs read,
-- skipped, sliced; lines before/after slicing), license_notice (the notices
-- the embedded CWE text and datasets require).
CREATE TABLE kb_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- CWE level. Every non-deprecated Weakness of the catalog. Only in_scope = 1
-- rows are retrieval candidates; the others are kept so the ChildOf
-- hierarchy is whole.
CREATE TABLE cwe (
  id INTEGER PRIMARY KEY,              -- 89 (display as "CWE-89")
  name TEXT NOT NULL,
  abstraction TEXT NOT NULL,           -- Base/Variant/Class/Pillar/Compound
  status TEXT NOT NULL,                -- Stable/Draft/Incomplete
  description TEXT NOT NULL,
  extended_description TEXT NOT NULL,  -- plain text, '' if none
  guideline TEXT NOT NULL,             -- security guideline: "- " do/don't rules (summarized, see kb_meta.backend)
  cause TEXT NOT NULL,                 -- vulnerability cause: what makes code vulnerable
  languages TEXT NOT NULL,             -- e.g. "c,c++,java"; '' = language-independent
  tasks TEXT NOT NULL,                 -- task descriptions of the CWE's code pairs, one per line (SafeCoder); '' if none
  in_scope INTEGER NOT NULL,           -- 1 = retrieval candidate
  scope_reason TEXT NOT NULL,          -- e.g. "top25-2024,safecoder,sven,codeshield"; '' when out of scope
  apis TEXT NOT NULL,                  -- API set: calls in the CWE's examples, most frequent first, comma-separated
  pairs INTEGER NOT NULL               -- vulnerable/fixed code pairs summarized into guideline and cause
);

-- The retrieval candidates, covering what the facets' queries filter on
-- and return: they read this index, never the wide rows (whose text runs
-- into overflow pages, and whose filter columns come after it).
CREATE INDEX cwe_in_scope ON cwe (in_scope, id, languages, name);

-- ChildOf relations of the Research Concepts view (CWE-1000), both ends in
-- `cwe`; children of X: SELECT child FROM cwe_parent WHERE parent = X.
CREATE TABLE cwe_parent (
  child INTEGER NOT NULL,
  parent INTEGER NOT NULL,
  PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX cwe_parent_by_parent ON cwe_parent (parent, child);

-- The API set of each CWE with counts: in how many of its examples (pairs:
-- vulnerable or fixed slice; catalog examples: the example) a call appears.
CREATE TABLE cwe_api (
  cwe INTEGER NOT NULL,
  api TEXT NOT NULL,                   -- "cursor.execute", "os.system", "strcpy"
  count INTEGER NOT NULL,
  PRIMARY KEY (cwe, api)
) WITHOUT ROWID;
CREATE INDEX cwe_api_by_api ON cwe_api (api, cwe);

-- Code level: secure examples of the in-scope weaknesses. The sliced fixed
-- versions of the SafeCoder/SVEN pairs, and the Good demonstrative examples
-- of the catalog.
CREATE TABLE example (
  id TEXT PRIMARY KEY,                 -- "sven:train:cwe-089:17", "safecoder:val:sec-new-desc:3", "cwe-catalog:89:1"
  cwe INTEGER NOT NULL,
  language TEXT NOT NULL,              -- lowercase: python, c, cpp, javascript, go, java, ruby (catalog: as it names them, e.g. "c++", "php"); '' if unknown
  code TEXT NOT NULL,                  -- plain text with newlines and indentation
  intro TEXT NOT NULL,                 -- the task the code solves (SafeCoder description) or a short explanation
  source TEXT NOT NULL,                -- "SVEN train cwe-089.jsonl:17", "MITRE CWE 4.14"
  license TEXT NOT NULL,               -- license of the dataset: "MIT", "CWE Terms of Use"
  apis TEXT NOT NULL,                  -- API set of the example: calls in `code`, comma-separated
  cause TEXT NOT NULL,                 -- why the vulnerable version was vulnerable / what the fix changed
  lines_before INTEGER NOT NULL,       -- lines of the whole fixed function (catalog: of the example)
  lines_after INTEGER NOT NULL,        -- lines of `code`
  slicing TEXT NOT NULL,               -- "pdg-slice", "window" (no grammar or no parse), "none" (catalog)
  dataset TEXT NOT NULL,               -- "safecoder", "sven", "cwe-catalog"
  split TEXT NOT NULL,                 -- "train", "val"; '' for the catalog
  record TEXT NOT NULL,                -- file and line of the record: "cwe-089.jsonl:17"; '' for the catalog
  commit_link TEXT NOT NULL            -- the upstream fix the code comes from (its project's license applies); '' for the catalog
);
CREATE INDEX example_by_cwe ON example (cwe, id);

-- Full-text index for BM25 retrieval, one row per in-scope CWE, rowid = cwe id.
-- `tasks` holds coding tasks phrased as users phrase them, which is what
-- requests look like; the catalog's prose alone matches them poorly. `apis`
-- is the CWE's API set without calls common to many CWEs (comma-separated);
-- it is last, so weight lists written for the first five columns still work
-- (FTS5 gives unlisted columns weight 1.0):
--   SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH ? ORDER BY bm25(cwe_fts, ...)
-- Semantic facet. The static embedding model that encodes requests (see
-- host/src/embed.rs): WordPiece piece by id (continuations start with ##),
-- its int8 vector (256 bytes) and the one scale that makes it f32.
CREATE TABLE embedding_token (
  id INTEGER PRIMARY KEY,              -- 0 = [PAD], 1 = [UNK]
  piece TEXT NOT NULL,
  scale REAL NOT NULL,
  vector BLOB NOT NULL
);

-- The semantic facet's table: the embedding of every weakness (in scope or
-- not, so the hierarchy walk can start from a weakness the KB has no
-- knowledge for) of its name, description, cause and guideline,
-- L2-normalised, as 256 little-endian IEEE half floats (512 bytes), next to
-- the columns the facet filters on and returns, so the facet is one range
-- scan (in_scope = 1) with no lookups. Compare with the SQL function
-- vector_dot(vector, ?) the plugin's connections provide (? = f32 bytes).
-- A weakness whose text has no known token has no row.
CREATE TABLE cwe_vector (
  in_scope INTEGER NOT NULL,
  cwe INTEGER NOT NULL,
  languages TEXT NOT NULL,             -- as cwe.languages
  name TEXT NOT NULL,
  vector BLOB NOT NULL,
  PRIMARY KEY (in_scope, cwe)
) WITHOUT ROWID;

-- The semantic facet's serving table: per language a request can name,
-- every in-scope weakness for it (the facets' language filter) and the
-- vectors of those that have one, concatenated (half floats as in
-- cwe_vector), so a request reads one row and the host's
-- vector_scores(vectors, ?) scores them all in one call. language '' is for
-- a request without a language (every in-scope weakness), '*' for a
-- language no weakness lists (only those with no listed language). Ids are
-- packed u32 (rescue_text::packed), ascending.
-- A rowid table (its key in a separate index): in a WITHOUT ROWID table
-- the row is the key, and SQLite copies a whole overflowing row (40 KB
-- here) out of its overflow pages for every key it compares on the way to
-- the one it wants (schema 10, BENCHMARKS.md).
CREATE TABLE cwe_language (
  language TEXT PRIMARY KEY,
  cwes BLOB NOT NULL,
  vector_cwes BLOB NOT NULL,
  vectors BLOB NOT NULL
);

-- The code level's candidates, one row per CWE and language: its
-- rescue_text::packed::EXAMPLE_POOL_SIZE shortest secure examples (code
-- length in characters, then id), in that order, as parallel packed
-- columns (rescue_text::packed), so the plugin reads one row per chosen
-- CWE: their ids (one per line), code lengths and lines (u32 each), the
-- word sets of their API lists and of their tasks (rescue_text::word_set,
-- compared with the request's by the host's set_overlaps(sets, ?)), and the
-- embedding of task and cause (intro, cause; half floats as in cwe_vector,
-- all zeros without a known token, scored by vector_scores(vectors, ?)).
-- The code itself stays in `example`. Examples without a language have no
-- pool (no request asks for them).
-- A rowid table for the reason given at cwe_language.
CREATE TABLE example_pool (
  cwe INTEGER NOT NULL,
  language TEXT NOT NULL,              -- as example.language
  ids TEXT NOT NULL,
  code_lengths BLOB NOT NULL,
  lines BLOB NOT NULL,                 -- example.lines_after
  api_words BLOB NOT NULL,
  intro_words BLOB NOT NULL,
  vectors BLOB NOT NULL,
  PRIMARY KEY (cwe, language)
);

-- Developer scenarios (scenarios/developer-tasks.jsonl in the source tree):
-- coding requests, phrased as users phrase them, in which the weakness is a
-- natural risk of the code asked for. The scenario facet's knowledge: a
-- request close to a CWE's scenarios is a task where that CWE matters, even
-- when its words are nowhere in the CWE's own text. In-scope CWEs only.
CREATE TABLE scenario (
  id INTEGER PRIMARY KEY,              -- 1.., by CWE, in file order
  cwe INTEGER NOT NULL,
  language TEXT NOT NULL,              -- the language the request is for (python, c, cpp, ...)
  task TEXT NOT NULL
);
CREATE INDEX scenario_by_cwe ON scenario (cwe, id);

-- The scenario facet's matrix (exactly one row): the embedding of every
-- scenario's retrieval terms (the request's own treatment, rescue_text::
-- terms), L2-normalised, as int8 (256 bytes each; component i is
-- vector[i] * scale), concatenated in `scenario` order, the scale of each
-- (little-endian f32) and its CWE (packed u32, ascending). The serving host
-- loads the matrix once; scenario_scores(?) scores the query against all of
-- it, in this order. Scenarios without a known token have no vector and are
-- not listed.
CREATE TABLE scenario_index (
  cwes BLOB NOT NULL,
  scales BLOB NOT NULL,
  vectors BLOB NOT NULL
);

-- The classifier facet's model (host/src/kb/classifier.rs; at most one
-- row, none when the build had fewer than two classes of task texts):
-- multinomial logistic regression from a request's embedding (the
-- scenario matrix's treatment of text) to the weakness whose task texts
-- (developer scenarios, code-pair task descriptions) it reads like, with
-- the ordinary coding tasks as class 0. Class ids as packed u32
-- (ascending), one bias each as packed f64 (rescue_text::packed scores),
-- and one row of weights per class as half floats, concatenated in class
-- order (scored by vector_scores(weights, ?) like cwe_language.vectors).
-- The score of class k is bias[k] + weights[k] . query; a softmax over
-- all classes turns the scores into probabilities.
CREATE TABLE cwe_classifier (
  classes BLOB NOT NULL,
  biases BLOB NOT NULL,
  weights BLOB NOT NULL
);

-- The lexical facet without FTS5 at serve time (host/src/kb/lexical.rs):
-- FTS5's score for every word a request could send, asked of cwe_fts one
-- word at a time at build time, with the column weights of
-- kb::lexical::COLUMN_WEIGHTS. The score of an OR of words is the sum of
-- theirs, so the plugin reads the posting lists of the request's words
--   SELECT s.postings FROM json_each(?) q
--     JOIN lexical_word w ON w.word = q.value
--     JOIN lexical_stem s ON s.stem = w.stem
-- and sums them per CWE.
CREATE TABLE lexical_word (
  word TEXT PRIMARY KEY,               -- lowercase, as the plugin splits text
  stem INTEGER NOT NULL                -- words FTS5 stems alike share it
) WITHOUT ROWID;
CREATE TABLE lexical_stem (
  stem INTEGER PRIMARY KEY,
  -- (CWE id u32, -bm25(cwe_fts, weights) f64) of every in-scope CWE whose
  -- indexed text holds the stem, by id (rescue_text::packed postings)
  postings BLOB NOT NULL
);

CREATE VIRTUAL TABLE cwe_fts USING fts5(
  name, description, guideline, cause, tasks, apis,
  tokenize = 'porter unicode61'
);
"#;

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_CONTENT_HASH: &str = "content_hash";
pub const META_BACKEND: &str = "backend";
pub const META_CWE_CATALOG_VERSION: &str = "cwe_catalog_version";
pub const META_SOURCE_HASHES: &str = "source_hashes";
pub const META_LICENSE_NOTICE: &str = "license_notice";
pub const META_PAIR_STATS: &str = "pair_stats";
/// JSON: name, dimensions, vocabulary size and provenance of the embedding model.
pub const META_EMBEDDING_MODEL: &str = "embedding_model";

/// Names how guidelines were produced by default (offline: the catalog plus
/// the pairs' diffs); the LLM back-end writes "llm-v1:<model>".
pub const BACKEND: &str = super::summarize::offline::BACKEND;

/// The catalog version the build expects (checked against the XML root).
pub const CWE_CATALOG_VERSION: &str = "4.14";

/// `example.source` / `example.license` for catalog examples.
pub const EXAMPLE_SOURCE: &str = "MITRE CWE 4.14";
pub const EXAMPLE_LICENSE: &str = "CWE Terms of Use";
/// `example.dataset` of catalog examples.
pub const CATALOG_DATASET: &str = "cwe-catalog";
/// `example.license` of SafeCoder/SVEN examples: the datasets' license. The
/// code itself comes from the project of `example.commit_link`.
pub const PAIR_LICENSE: &str = "MIT";

/// Kept in every file: the CWE Terms of Use require MITRE's copyright
/// designation and the license with any copy of CWE content.
pub const LICENSE_NOTICE: &str = "\
Contains material from the Common Weakness Enumeration (CWE) List v4.14 \
(https://cwe.mitre.org/data/downloads.html). Use of the CWE is subject to the \
CWE Terms of Use (https://cwe.mitre.org/about/termsofuse.html). CWE is sponsored \
by the U.S. Department of Homeland Security (DHS) Cybersecurity and \
Infrastructure Security Agency (CISA) and managed by the Homeland Security \
Systems Engineering and Development Institute (HSSEDI) which is operated by The \
MITRE Corporation (MITRE). Copyright © 2006–2022, The MITRE Corporation. CWE, \
CWSS, CWRAF, and the CWE logo are trademarks of The MITRE Corporation. \
CWE Usage: MITRE hereby grants you a non-exclusive, royalty-free license to use \
CWE for research, development, and commercial purposes. Any copy you make for \
such purposes is authorized on the condition that you reproduce MITRE's \
copyright designation and this license in any such copy. The CWE content is \
provided \"as is\", without warranty (see the Terms of Use for the full disclaimers).\n\
The CWE labels that select the in-scope weaknesses, the task descriptions \
in cwe.tasks, and the vulnerable/fixed code pairs behind the examples (table \
example, dataset safecoder or sven) and their summaries come from SafeCoder and SVEN \
(MIT License, Copyright (c) 2024 SRI Lab, ETH Zurich) and from the CodeShield \
rules of PurpleLlama (MIT License, Copyright (c) Meta Platforms, Inc. and affiliates). \
The code in those examples was written by third-party open-source projects and \
remains under their licenses: example.commit_link names the upstream commit of each.\n\
The tables embedding_token and cwe_vector are derived from the weights and \
WordPiece vocabulary of sentence-transformers/all-MiniLM-L6-v2 (Apache License \
2.0; the BERT uncased vocabulary, Copyright Google): distilled with model2vec \
(MIT), then modified (PCA to 256 dimensions, SIF weighting, int8 \
quantisation). See licenses/MiniLM-Apache-2.0.txt in the source tree; \
scenario_index is embedded with them.\n\
The developer scenarios (tables scenario and scenario_index) were written for \
RESCUE Proxy and are licensed under the Apache License 2.0, as its source code \
(scenarios/README.md in the source tree).";
