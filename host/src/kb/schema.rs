//! The knowledge-base file format: SQLite DDL, the `kb_meta` keys and the
//! fixed values the build writes. Changing anything here changes what old
//! files mean, so it must come with a [`SCHEMA_VERSION`] bump.

/// Version of the layout below; stored as `kb_meta.schema_version` and as
/// `PRAGMA user_version`. The runtime refuses files with another value.
pub const SCHEMA_VERSION: u32 = 2;

/// The whole schema, executed once on an empty database.
pub const DDL: &str = r#"
-- Provenance and integrity of the file. Keys: schema_version, content_hash
-- (sha256 over everything else, see kb::content_hash), backend,
-- cwe_catalog_version, source_hashes (JSON: relative input path -> sha256),
-- license_notice (the notices the embedded CWE text and datasets require).
CREATE TABLE kb_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- Every non-deprecated Weakness of the catalog. Only in_scope = 1 rows are
-- retrieval candidates; the others are kept so the ChildOf hierarchy is whole.
CREATE TABLE cwe (
  id INTEGER PRIMARY KEY,              -- 89 (display as "CWE-89")
  name TEXT NOT NULL,
  abstraction TEXT NOT NULL,           -- Base/Variant/Class/Pillar/Compound
  status TEXT NOT NULL,                -- Stable/Draft/Incomplete
  description TEXT NOT NULL,
  extended_description TEXT NOT NULL,  -- plain text, '' if none
  guideline TEXT NOT NULL,             -- up to 5 "- " lines from Potential_Mitigations
  cause TEXT NOT NULL,                 -- what makes code vulnerable (<= ~400 chars)
  languages TEXT NOT NULL,             -- e.g. "c,c++,java"; '' = language-independent
  tasks TEXT NOT NULL,                 -- task descriptions of the CWE's code pairs, one per line (SafeCoder); '' if none
  in_scope INTEGER NOT NULL,           -- 1 = retrieval candidate
  scope_reason TEXT NOT NULL           -- e.g. "top25-2024,safecoder,sven,codeshield"; '' when out of scope
);

-- ChildOf relations of the Research Concepts view (CWE-1000), both ends in `cwe`.
CREATE TABLE cwe_parent (
  child INTEGER NOT NULL,
  parent INTEGER NOT NULL,
  PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX cwe_parent_by_parent ON cwe_parent (parent, child);

-- Secure (Nature="Good") demonstrative examples of the in-scope weaknesses.
CREATE TABLE example (
  id TEXT PRIMARY KEY,                 -- "cwe-catalog:89:1" (1-based per CWE, catalog order)
  cwe INTEGER NOT NULL,
  language TEXT NOT NULL,              -- lowercase, '' if unknown
  code TEXT NOT NULL,                  -- plain text with newlines and indentation
  intro TEXT NOT NULL,                 -- short explanation of the example and the fix
  source TEXT NOT NULL,                -- "MITRE CWE 4.14"
  license TEXT NOT NULL                -- "CWE Terms of Use"
);
CREATE INDEX example_by_cwe ON example (cwe, id);

-- Full-text index for BM25 retrieval, one row per in-scope CWE, rowid = cwe id.
-- `tasks` holds coding tasks phrased as users phrase them, which is what
-- requests look like; the catalog's prose alone matches them poorly:
--   SELECT rowid FROM cwe_fts WHERE cwe_fts MATCH ? ORDER BY bm25(cwe_fts, ...)
CREATE VIRTUAL TABLE cwe_fts USING fts5(
  name, description, guideline, cause, tasks,
  tokenize = 'porter unicode61'
);
"#;

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_CONTENT_HASH: &str = "content_hash";
pub const META_BACKEND: &str = "backend";
pub const META_CWE_CATALOG_VERSION: &str = "cwe_catalog_version";
pub const META_SOURCE_HASHES: &str = "source_hashes";
pub const META_LICENSE_NOTICE: &str = "license_notice";

/// Names how guidelines were produced (offline, from the catalog alone), so a
/// later backend (e.g. model-written guidelines) is distinguishable.
pub const BACKEND: &str = "offline-catalog-v1";

/// The catalog version the build expects (checked against the XML root).
pub const CWE_CATALOG_VERSION: &str = "4.14";

/// `example.source` / `example.license` for catalog examples.
pub const EXAMPLE_SOURCE: &str = "MITRE CWE 4.14";
pub const EXAMPLE_LICENSE: &str = "CWE Terms of Use";

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
The CWE labels that select the in-scope weaknesses, and the task descriptions \
in cwe.tasks, come from SafeCoder and SVEN \
(MIT License, Copyright (c) 2024 SRI Lab, ETH Zurich) and from the CodeShield \
rules of PurpleLlama (MIT License, Copyright (c) Meta Platforms, Inc. and affiliates).";
