//! Read-only, bounded SQL access to the knowledge base.
//!
//! The plugin may run any single `SELECT` it likes, and nothing else: each
//! connection is opened read-only, an authorizer allows only reads and function
//! calls (no ATTACH, no PRAGMA, no writes even to temp tables), a progress
//! handler cuts off statements that run too long, and results are capped in rows.
//! Connections are per thread (SQLite connections are not shared across
//! threads and a single locked connection caps throughput), opened on first use
//! and reused with their prepared-statement cache.
//!
//! The reader also holds the knowledge base's embedding model (the `embed`
//! capability), loaded from the verified file, and gives every connection
//! the SQL functions retrieval needs beyond SQLite's own: `vector_dot` (one
//! stored vector against the query), `vector_scores` (a packed matrix of
//! them in one call), `set_overlaps` (how many words each of a sequence
//! of word sets shares with the request's, `rescue_text::word_set`) and
//! `scenario_means` (per CWE, the query's mean similarity to its closest
//! developer scenarios, from a matrix the reader loads once: reading it from
//! the file per request meant SQLite copying it out of overflow pages, ~100
//! us for 2,490 half-float vectors).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::embed::{self, Embedder};
use crate::kb::KbInfo;

/// A value passed into or out of a query (mirrors the WIT `sql-value`).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why a plugin query did not run to completion (mirrors the WIT `kb-error`).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryError {
    Rejected(String),
    LimitExceeded(String),
    Failed(String),
}

/// Bounds on one plugin query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// SQLite virtual-machine steps, in units of [`STEP_GRANULARITY`].
    pub max_steps: u64,
    pub max_rows: usize,
}

/// Upper bound on the memory map of the knowledge base (the shipped file is
/// 16 MB).
const MMAP_BYTES: i64 = 256 << 20;

/// The progress handler fires every this many SQLite VM instructions.
pub const STEP_GRANULARITY: i32 = 1000;

/// Each opened knowledge base gets a generation number, so a thread's cached
/// connection is replaced when the KB is swapped for a new file.
static NEXT_GENERATION: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static CONNECTION: RefCell<Option<(usize, ImageConnection, Arc<AtomicU64>)>> = const { RefCell::new(None) };
}

/// A knowledge-base file's bytes, read once and served from memory.
///
/// Serving the file itself would let a file swapped in later, verified or
/// not, reach the connections that threads open lazily; a private copy on
/// disk was removed only by a clean exit, so every killed proxy left 16 MB
/// in the temp directory. The image is what was verified, needs no writable
/// directory, and every connection reads the same pages without copying them.
#[derive(Debug)]
struct KbImage {
    /// The file's bytes in 8-byte words: SQLite reads pages in place.
    words: Box<[u64]>,
    len: usize,
}

impl KbImage {
    fn read(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file larger than the address space"))?;
        let mut words = vec![0u64; len.div_ceil(8)].into_boxed_slice();
        // SAFETY: `words` holds at least `len` initialised bytes, and any bytes
        // are valid for both u8 and u64.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        file.read_exact(bytes)?;
        Ok(Self { words, len })
    }

    /// A connection whose main database is this image, read-only.
    fn connect(self: &Arc<Self>, flags: OpenFlags) -> rusqlite::Result<ImageConnection> {
        let conn = Connection::open_with_flags(":memory:", flags)?;
        let len = i64::try_from(self.len).expect("a file length fits in i64");
        // SAFETY: SQLite borrows the buffer: READONLY means it never writes to
        // it and, without FREEONCLOSE, never frees it. The returned
        // connection owns an `Arc` of the image and is closed before
        // dropping it (field order), so the buffer outlives every use.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_deserialize(
                conn.handle(),
                c"main".as_ptr(),
                self.words.as_ptr().cast::<u8>().cast_mut(),
                len,
                len,
                rusqlite::ffi::SQLITE_DESERIALIZE_READONLY,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rc),
                Some("loading the knowledge base image".into()),
            ));
        }
        Ok(ImageConnection {
            conn,
            _image: Arc::clone(self),
        })
    }
}

/// A connection over a [`KbImage`], keeping the image alive.
struct ImageConnection {
    // Declared first: closed before the image it reads is released.
    conn: Connection,
    _image: Arc<KbImage>,
}

impl std::ops::Deref for ImageConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// A knowledge-base file that plugin queries run against.
#[derive(Debug)]
pub struct KbReader {
    /// The knowledge base as configured.
    source: PathBuf,
    /// What connections serve; `Err` for an unverified reader over a file
    /// that could not be read (its queries then fail with the reason).
    image: Result<Arc<KbImage>, String>,
    /// Replaces a thread's cached connection when the KB is swapped.
    generation: usize,
    limits: QueryLimits,
    /// Plugin queries run and the time they took, for the metrics.
    queries: AtomicU64,
    query_nanos: AtomicU64,
    info: Option<KbInfo>,
    /// The embedding model stored in the file; `None` for an unverified
    /// reader over a file without one (the semantic facet then sees zeros).
    embedder: Option<Arc<Embedder>>,
    /// The scenario facet's matrix stored in the file; `None` for an
    /// unverified reader over a file without one (`scenario_scores` is then
    /// an error).
    scenarios: Option<Arc<ScenarioIndex>>,
}

impl KbReader {
    /// A reader over any SQLite file, unverified (for tests and tools).
    pub fn new(path: &Path, limits: QueryLimits) -> Self {
        let image = KbImage::read(path)
            .map(Arc::new)
            .map_err(|e| format!("reading {}: {e}", path.display()));
        let conn = image
            .as_ref()
            .ok()
            .and_then(|image| image.connect(OpenFlags::SQLITE_OPEN_READ_ONLY).ok());
        let embedder = conn
            .as_deref()
            .and_then(|conn| load_embedder(conn).ok())
            .map(Arc::new);
        let scenarios = conn
            .as_deref()
            .and_then(|conn| ScenarioIndex::load(conn).ok())
            .map(Arc::new);
        Self::serving(path, image, limits, embedder, scenarios)
    }

    /// A reader serving `image`, with no verification record.
    fn serving(
        source: &Path,
        image: Result<Arc<KbImage>, String>,
        limits: QueryLimits,
        embedder: Option<Arc<Embedder>>,
        scenarios: Option<Arc<ScenarioIndex>>,
    ) -> Self {
        Self {
            source: source.to_path_buf(),
            image,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            limits,
            queries: AtomicU64::new(0),
            query_nanos: AtomicU64::new(0),
            info: None,
            embedder,
            scenarios,
        }
    }

    /// A reader over a knowledge base whose schema version and content hash
    /// check out (see `kb::verify`); the only way the server makes one.
    ///
    /// The file is read into memory once; that image is verified and served,
    /// so what was verified is what every connection reads.
    pub fn verified(path: &Path, limits: QueryLimits) -> crate::Result<Self> {
        if !path.exists() {
            return Err(crate::Error::KbInvalid {
                path: path.to_path_buf(),
                message: "file not found (build it with `rescue kb build`, or pass --kb)".into(),
            });
        }
        let image = Arc::new(KbImage::read(path).map_err(|source| crate::Error::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let conn = image
            .connect(OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| crate::Error::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let info = crate::kb::verify(&conn, path)?;
        let embedder = load_embedder(&conn).map_err(|message| crate::Error::KbInvalid {
            path: path.to_path_buf(),
            message,
        })?;
        let scenarios = ScenarioIndex::load(&conn).map_err(|message| crate::Error::KbInvalid {
            path: path.to_path_buf(),
            message,
        })?;
        drop(conn);
        Ok(Self {
            info: Some(info),
            ..Self::serving(
                path,
                Ok(image),
                limits,
                Some(Arc::new(embedder)),
                Some(Arc::new(scenarios)),
            )
        })
    }

    /// What verification found; placeholders for an unverified reader.
    pub fn info(&self) -> KbInfo {
        self.info.clone().unwrap_or_else(|| KbInfo {
            schema_version: 0,
            content_hash: "unverified".into(),
            cwes_in_scope: 0,
            backend: String::new(),
        })
    }

    /// The embedding of `text` with the knowledge base's model (zeros when
    /// the file has none or no word of the text is known).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        match &self.embedder {
            Some(model) => model.embed(text),
            None => vec![0.0; embed::DIM],
        }
    }

    /// The knowledge base as configured.
    pub fn path(&self) -> &Path {
        &self.source
    }

    /// Opens a connection the plugin can use: read-only, no attached databases,
    /// reads only.
    fn open_sandboxed(
        image: &Arc<KbImage>,
        scenarios: Option<Arc<ScenarioIndex>>,
    ) -> rusqlite::Result<(ImageConnection, Arc<AtomicU64>)> {
        // An in-memory image has no file locks or journal to check per
        // statement (a file needed `immutable=1` for that: ~14 fcntl and ~16
        // fstat calls per augmented request without it).
        let conn =
            image.connect(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // Pages are fetched in place from the image instead of copied into
        // each connection's page cache.
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 16 * 1024 * 1024)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 64 * 1024)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.authorizer(Some(authorize));
        register_blob_function(
            &conn,
            "vector_dot",
            NullArguments::GiveNull,
            "two blobs of little-endian f32",
            "vectors of different or odd lengths",
            embed::dot_le_bytes,
        )?;
        register_blob_function(
            &conn,
            "vector_scores",
            NullArguments::GiveNull,
            "two blobs: half-float vectors, an f32 query",
            "not a whole number of half-float vectors of the query's dimension",
            vector_scores,
        )?;
        register_blob_function(
            &conn,
            "set_overlaps",
            NullArguments::AreErrors,
            "two blobs: word sets, a word set",
            "not a sequence of word sets and a word set",
            set_overlaps,
        )?;
        conn.create_scalar_function(
            "scenario_means",
            2,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| {
                let index = scenarios.as_deref().ok_or_else(|| {
                    rusqlite::Error::UserFunctionError(
                        "scenario_means: the knowledge base has no scenario index".into(),
                    )
                })?;
                let takes = || {
                    rusqlite::Error::UserFunctionError(
                        format!(
                            "scenario_means takes a query of {} little-endian f32 and a count from 1 to {MAX_SCENARIO_NEIGHBOURS}",
                            index.dims
                        )
                        .into(),
                    )
                };
                let n = match ctx.get_raw(1) {
                    ValueRef::Integer(n) if (1..=MAX_SCENARIO_NEIGHBOURS as i64).contains(&n) => {
                        n as usize
                    }
                    _ => return Err(takes()),
                };
                match ctx.get_raw(0) {
                    ValueRef::Null => Ok(None),
                    ValueRef::Blob(query) => index.means(query, n).map(Some).ok_or_else(takes),
                    _ => Err(takes()),
                }
            },
        )?;
        let steps = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&steps);
        conn.progress_handler(
            STEP_GRANULARITY,
            Some(move || {
                // Returning true interrupts the statement; the budget is
                // re-armed before each query.
                counter.fetch_sub(1, Ordering::Relaxed) == 0
            }),
        );
        Ok((conn, steps))
    }

    /// Runs one plugin query on this thread's connection.
    pub fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, QueryError> {
        CONNECTION.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().map(|(g, _, _)| *g) != Some(self.generation) {
                let image = self.image.as_ref().map_err(|reason| {
                    QueryError::Failed(format!("opening knowledge base: {reason}"))
                })?;
                let (conn, steps) = Self::open_sandboxed(image, self.scenarios.clone())
                    .map_err(|e| QueryError::Failed(format!("opening knowledge base: {e}")))?;
                *slot = Some((self.generation, conn, steps));
            }
            let (_, conn, steps) = slot.as_ref().expect("connection was just opened");
            steps.store(self.limits.max_steps.max(1), Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = run_query(conn, sql, params, self.limits.max_rows);
            self.queries.fetch_add(1, Ordering::Relaxed);
            self.query_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            result
        })
    }

    /// Queries run through this reader and their total time.
    pub fn query_stats(&self) -> (u64, std::time::Duration) {
        (
            self.queries.load(Ordering::Relaxed),
            std::time::Duration::from_nanos(self.query_nanos.load(Ordering::Relaxed)),
        )
    }
}

/// What a blob function does with a NULL argument.
#[derive(Clone, Copy, PartialEq)]
enum NullArguments {
    /// NULL in, NULL out (an absent vector scores nothing).
    GiveNull,
    /// NULL is not a blob: an error like any other wrong type.
    AreErrors,
}

/// Registers `name(a, b)`, a deterministic SQL function of two blobs whose
/// value is `compute(a, b)`. Arguments of another type are an error saying
/// the function `takes` what it takes; blobs `compute` refuses are an
/// error saying they are `malformed`.
fn register_blob_function<T: rusqlite::ToSql + 'static>(
    conn: &Connection,
    name: &'static str,
    nulls: NullArguments,
    takes: &'static str,
    malformed: &'static str,
    compute: fn(&[u8], &[u8]) -> Option<T>,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        name,
        2,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8
            | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| match (ctx.get_raw(0), ctx.get_raw(1)) {
            (ValueRef::Null, _) | (_, ValueRef::Null) if nulls == NullArguments::GiveNull => {
                Ok(None)
            }
            (ValueRef::Blob(a), ValueRef::Blob(b)) => compute(a, b).map(Some).ok_or_else(|| {
                rusqlite::Error::UserFunctionError(format!("{name}: {malformed}").into())
            }),
            _ => Err(rusqlite::Error::UserFunctionError(
                format!("{name} takes {takes}").into(),
            )),
        },
    )
}

/// `vector_scores(vectors, query)`: the dot product of the f32 `query` with
/// each of the half-float vectors concatenated in `vectors`, as packed f64
/// scores in the same order (`rescue_text::packed`). `None` unless `vectors`
/// holds a whole number of vectors of the query's dimension.
fn vector_scores(vectors: &[u8], query: &[u8]) -> Option<Vec<u8>> {
    embed::dot_rows_le_bytes(vectors, query).map(rescue_text::packed::write_scores)
}

/// Most neighbours `scenario_means` averages (a bound for its buffer).
const MAX_SCENARIO_NEIGHBOURS: usize = 16;

/// The mean of the `n` largest values (of all of them when there are fewer;
/// 0 for none); `n` is at most [`MAX_SCENARIO_NEIGHBOURS`].
fn mean_of_best(values: impl Iterator<Item = f64>, n: usize) -> f64 {
    let mut best = [0f64; MAX_SCENARIO_NEIGHBOURS];
    let mut kept = 0;
    for v in values {
        // Insertion into the descending prefix best[..kept].
        let mut at = kept.min(n);
        while at > 0 && best[at - 1] < v {
            at -= 1;
        }
        if at < n {
            let end = kept.min(n - 1);
            best.copy_within(at..end, at + 1);
            best[at] = v;
            kept = (kept + 1).min(n);
        }
    }
    if kept == 0 {
        return 0.0;
    }
    best[..kept].iter().sum::<f64>() / kept as f64
}

/// `set_overlaps(sets, terms)`: how many words each word set of the
/// sequence `sets` shares with the word set `terms`, as packed u32 counts in
/// the same order (`rescue_text::packed`). `None` unless both are what they
/// claim to be.
fn set_overlaps(sets: &[u8], terms: &[u8]) -> Option<Vec<u8>> {
    let mut counts = Vec::new();
    let mut malformed = false;
    rescue_text::packed::for_each_word_set(sets, |set| {
        match rescue_text::shared_words(set, terms) {
            Some(n) => counts.push(n),
            None => malformed = true,
        }
    })?;
    (!malformed).then(|| rescue_text::packed::write_counts(counts))
}

/// The embedding model stored in an open knowledge base.
fn load_embedder(conn: &Connection) -> Result<Embedder, String> {
    let mut stmt = conn
        .prepare("SELECT id, piece, scale, vector FROM embedding_token ORDER BY id")
        .map_err(|e| format!("no embedding model: {e}"))?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let (mut pieces, mut vectors, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let id: i64 = row.get(0).map_err(|e| e.to_string())?;
        if id != pieces.len() as i64 {
            return Err(format!("embedding_token ids are not 0..n (found {id})"));
        }
        pieces.push(row.get::<_, String>(1).map_err(|e| e.to_string())?);
        scales.push(row.get::<_, f64>(2).map_err(|e| e.to_string())? as f32);
        let vector: Vec<u8> = row.get(3).map_err(|e| e.to_string())?;
        vectors.extend(vector.into_iter().map(|b| b as i8));
    }
    Embedder::new(pieces, vectors, scales).map_err(|e| e.to_string())
}

/// The scenario facet's matrix (KB table `scenario_index`), held in memory
/// by the reader: every scenario's CWE, and its embedding as int8 with one
/// scale each.
#[derive(Debug)]
pub struct ScenarioIndex {
    dims: usize,
    /// Ascending: each CWE's scenarios are one run.
    cwes: Vec<i64>,
    vectors: Vec<i8>,
    scales: Vec<f32>,
}

impl ScenarioIndex {
    fn load(conn: &Connection) -> Result<Self, String> {
        let (cwes, scales, vectors): (Vec<u8>, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT cwes, scales, vectors FROM scenario_index",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|e| format!("no scenario index: {e}"))?;
        let cwes = rescue_text::packed::read_ids(&cwes)
            .filter(|ids| ids.is_sorted())
            .ok_or("scenario index: the CWE ids are not ascending packed ids")?;
        let scales = embed::f32_values(&scales);
        let dims = embed::DIM;
        if vectors.len() != scales.len() * dims || cwes.len() != scales.len() {
            return Err(format!(
                "scenario index: {} CWE ids, {} scales and {} vector bytes ({dims} per vector)",
                cwes.len(),
                scales.len(),
                vectors.len(),
            ));
        }
        Ok(Self {
            dims,
            cwes,
            vectors: vectors.into_iter().map(|b| b as i8).collect(),
            scales,
        })
    }

    /// Per CWE, the mean cosine similarity of the query (f32 bytes) to its
    /// `n` closest scenarios, as packed postings (`rescue_text::packed`) in
    /// CWE order; `None` unless the query has the index's dimension. One
    /// call does it all: handing the sandbox every scenario's score instead
    /// (2,490 of them, measured) cost ~50 us of copying and looping there.
    fn means(&self, query: &[u8], n: usize) -> Option<Vec<u8>> {
        if query.len() != 4 * self.dims {
            return None;
        }
        let (query, query_scale) = embed::quantize_i8(&embed::f32_values(query));
        let dots = embed::dot_rows_i8(&self.vectors, &query);
        let similarity =
            |i: usize| f64::from(dots[i]) * f64::from(query_scale) * f64::from(self.scales[i]);
        let mut postings = Vec::new();
        let mut start = 0;
        while start < self.cwes.len() {
            let cwe = self.cwes[start];
            let len = self.cwes[start..].iter().take_while(|c| **c == cwe).count();
            postings.push((cwe, mean_of_best((start..start + len).map(similarity), n)));
            start += len;
        }
        Some(rescue_text::packed::write_postings(&postings))
    }
}

/// Only reads, selects and function calls (SQLite's and ours) are allowed.
fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive => Authorization::Allow,
        // FTS5 reads the data version to validate its cached structure; the
        // pragma only reads.
        AuthAction::Pragma {
            pragma_name: "data_version",
            pragma_value: None,
        } => Authorization::Allow,
        _ => Authorization::Deny,
    }
}

fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
    max_rows: usize,
) -> Result<Vec<Vec<SqlValue>>, QueryError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| QueryError::Rejected(e.to_string()))?;
    if !stmt.readonly() {
        return Err(QueryError::Rejected(
            "only read-only statements are allowed".into(),
        ));
    }
    let columns = stmt.column_count();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(classify)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        if out.len() == max_rows {
            return Err(QueryError::LimitExceeded(format!(
                "more than {max_rows} rows"
            )));
        }
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(from_sqlite(row.get_ref(i).map_err(classify)?));
        }
        out.push(values);
    }
    Ok(out)
}

fn classify(error: rusqlite::Error) -> QueryError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => {
            QueryError::LimitExceeded("statement exceeded the step limit".into())
        }
        Some(rusqlite::ErrorCode::AuthorizationForStatementDenied) => {
            QueryError::Rejected(error.to_string())
        }
        _ => QueryError::Failed(error.to_string()),
    }
}

/// Parameters are bound by reference: the plugin's query vector and word
/// lists are not copied again on their way into SQLite.
impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(f) => ValueRef::Real(*f),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_sqlite(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        // Valid UTF-8 is the rule (the KB is built from Rust strings); the
        // strict check is several times faster than the lossy decoder,
        // which stays for anything else.
        ValueRef::Text(t) => SqlValue::Text(match std::str::from_utf8(t) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(t).into_owned(),
        }),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unverified reader over `path` with the tests' small limits.
    fn test_reader(path: &Path) -> KbReader {
        KbReader::new(
            path,
            QueryLimits {
                max_steps: 1000,
                max_rows: 100,
            },
        )
    }

    fn fixture() -> (tempfile::TempDir, KbReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT i, 'row' || i FROM n;",
        )
        .unwrap();
        drop(conn);
        let reader = test_reader(&path);
        (dir, reader)
    }

    /// A reader over a file holding only a scenario index of `vectors`
    /// (CWE, embedding), quantised as the KB build quantises them.
    fn scenario_fixture(vectors: &[(u32, Vec<f32>)]) -> (tempfile::TempDir, KbReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE scenario_index (cwes BLOB, scales BLOB, vectors BLOB)")
            .unwrap();
        let (mut scales, mut matrix) = (Vec::new(), Vec::new());
        for (_, v) in vectors {
            let (q, scale) = embed::quantize_i8(v);
            scales.extend(scale.to_le_bytes());
            matrix.extend(q.into_iter().map(|x| x as u8));
        }
        conn.execute(
            "INSERT INTO scenario_index VALUES (?1, ?2, ?3)",
            rusqlite::params![
                rescue_text::packed::write_ids(vectors.iter().map(|(c, _)| i64::from(*c))),
                scales,
                matrix
            ],
        )
        .unwrap();
        drop(conn);
        let reader = test_reader(&path);
        (dir, reader)
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; embed::DIM];
        v[i] = 1.0;
        v
    }

    #[test]
    fn scenario_means_per_cwe() {
        let mixed: Vec<f32> = (0..embed::DIM)
            .map(|i| if i < 2 { 0.6 } else { 0.0 })
            .collect();
        let (_dir, kb) = scenario_fixture(&[
            (79, unit(0)),
            (79, unit(1)),
            (79, unit(2)),
            (79, unit(3)),
            (918, mixed.clone()),
            (918, unit(1)),
        ]);
        let query = embed::to_le_bytes(&unit(0));
        let means = |n: i64| {
            let rows = kb
                .query(
                    "SELECT scenario_means(?1, ?2)",
                    &[SqlValue::Blob(query.clone()), SqlValue::Integer(n)],
                )
                .unwrap();
            let [SqlValue::Blob(postings)] = rows[0].as_slice() else {
                panic!("{rows:?}")
            };
            let mut means = Vec::new();
            rescue_text::packed::for_each_posting(postings, |id, mean| means.push((id, mean)))
                .unwrap();
            means
        };
        let close = |got: &[(i64, f64)], want: &[(i64, f64)]| {
            got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| g.0 == w.0 && (g.1 - w.1).abs() < 0.01)
        };
        // The closest scenario of each: CWE-79 matches exactly once.
        assert!(close(&means(1), &[(79, 1.0), (918, 0.6)]), "{:?}", means(1));
        // Two: one lucky match among four (0.5) against two fair ones (0.3).
        assert!(close(&means(2), &[(79, 0.5), (918, 0.3)]), "{:?}", means(2));
        // More than a CWE has: the mean of all of them.
        assert!(
            close(&means(16), &[(79, 0.25), (918, 0.3)]),
            "{:?}",
            means(16)
        );

        // A query of another dimension, a non-blob, a bad count: errors.
        for (sql, params) in [
            (
                "SELECT scenario_means(?1, 3)",
                vec![SqlValue::Blob(vec![0; 12])],
            ),
            ("SELECT scenario_means('text', 3)", vec![]),
            (
                "SELECT scenario_means(?1, 0)",
                vec![SqlValue::Blob(query.clone())],
            ),
            (
                "SELECT scenario_means(?1, 17)",
                vec![SqlValue::Blob(query.clone())],
            ),
        ] {
            assert!(
                matches!(kb.query(sql, &params), Err(QueryError::Failed(_))),
                "{sql}"
            );
        }
        assert_eq!(
            kb.query("SELECT scenario_means(NULL, 3)", &[]).unwrap()[0][0],
            SqlValue::Null
        );
    }

    #[test]
    fn without_a_scenario_index_scenario_means_is_an_error() {
        let (_dir, kb) = fixture();
        let query = embed::to_le_bytes(&unit(0));
        match kb.query("SELECT scenario_means(?1, 3)", &[SqlValue::Blob(query)]) {
            Err(QueryError::Failed(message)) => {
                assert!(message.contains("no scenario index"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn means_of_the_best() {
        let mean = |v: &[f64], n| mean_of_best(v.iter().copied(), n);
        assert!((mean(&[0.4, 0.9, 0.5, 0.1, 0.8], 3) - (0.9 + 0.8 + 0.5) / 3.0).abs() < 1e-12);
        assert!((mean(&[0.1, 0.2, 0.3, 0.4], 2) - 0.35).abs() < 1e-12);
        assert!((mean(&[0.4, 0.3, 0.2, 0.1], 2) - 0.35).abs() < 1e-12);
        assert!((mean(&[0.4, 0.2], 3) - 0.3).abs() < 1e-12);
        assert_eq!(mean(&[0.7, 0.7, 0.7], 1), 0.7);
        assert_eq!(mean(&[], 3), 0.0);
        let many: Vec<f64> = (0..40).map(|i| f64::from(i) / 40.0).collect();
        let top: f64 = many[24..].iter().sum::<f64>() / 16.0;
        assert!((mean(&many, MAX_SCENARIO_NEIGHBOURS) - top).abs() < 1e-12);
    }

    #[test]
    fn selects_with_parameters() {
        let (_dir, kb) = fixture();
        let rows = kb
            .query(
                "SELECT id, name FROM t WHERE id = ?1",
                &[SqlValue::Integer(7)],
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![SqlValue::Integer(7), SqlValue::Text("row7".into())]]
        );
    }

    #[test]
    fn writes_attach_and_pragmas_are_refused() {
        let (dir, kb) = fixture();
        for sql in [
            "DELETE FROM t",
            "INSERT INTO t VALUES (1000, 'x')",
            "CREATE TEMP TABLE x (a)",
            "PRAGMA table_info(t)",
            "SELECT 1; DELETE FROM t",
        ] {
            let err = kb.query(sql, &[]).unwrap_err();
            assert!(matches!(err, QueryError::Rejected(_)), "{sql}: {err:?}");
        }
        let other = dir.path().join("other.sqlite");
        let attach = format!("ATTACH DATABASE '{}' AS other", other.display());
        assert!(matches!(
            kb.query(&attach, &[]),
            Err(QueryError::Rejected(_))
        ));
        assert!(!other.exists());
        assert_eq!(
            kb.query("SELECT count(*) FROM t", &[]).unwrap()[0][0],
            SqlValue::Integer(500)
        );
    }

    #[test]
    fn runaway_statements_hit_the_step_limit() {
        let (_dir, kb) = fixture();
        let err = kb
            .query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n",
                &[],
            )
            .unwrap_err();
        assert!(matches!(err, QueryError::LimitExceeded(_)), "{err:?}");
        // The budget is re-armed: the next query on the same thread works.
        assert!(kb.query("SELECT 1", &[]).is_ok());
    }

    #[test]
    fn row_limit_applies() {
        let (_dir, kb) = fixture();
        let err = kb.query("SELECT id FROM t", &[]).unwrap_err();
        assert!(matches!(err, QueryError::LimitExceeded(_)), "{err:?}");
    }

    #[test]
    fn vector_scores_scores_every_row_as_vector_dot_does() {
        let (_dir, kb) = fixture();
        let rows: [&[f32]; 3] = [&[1.0, 0.0, 0.5, 0.25], &[0.0, 1.0, 0.0, 0.0], &[-1.0; 4]];
        let query = embed::to_le_bytes(&[0.5, 0.25, 1.0, 2.0]);
        let matrix: Vec<u8> = rows
            .iter()
            .flat_map(|r| embed::to_f16_le_bytes(r))
            .collect();
        let got = kb
            .query(
                "SELECT vector_scores(?1, ?2)",
                &[SqlValue::Blob(matrix), SqlValue::Blob(query.clone())],
            )
            .unwrap();
        let [SqlValue::Blob(scores)] = got[0].as_slice() else {
            panic!("{got:?}")
        };
        let scores = rescue_text::packed::read_scores(scores).unwrap();
        let expected: Vec<f64> = rows
            .iter()
            .map(|r| embed::dot_le_bytes(&embed::to_f16_le_bytes(r), &query).unwrap())
            .collect();
        assert_eq!(scores, expected);
        assert_eq!(expected, [1.5, 0.25, -3.75]);
        // NULL in, NULL out; a matrix that is not whole vectors is an error.
        assert_eq!(
            kb.query(
                "SELECT vector_scores(NULL, ?1)",
                &[SqlValue::Blob(query.clone())]
            )
            .unwrap()[0][0],
            SqlValue::Null
        );
        assert!(matches!(
            kb.query(
                "SELECT vector_scores(?1, ?2)",
                &[SqlValue::Blob(vec![0; 12]), SqlValue::Blob(query)]
            ),
            Err(QueryError::Failed(_))
        ));
    }

    #[test]
    fn set_overlaps_counts_shared_words_per_set() {
        let (_dir, kb) = fixture();
        let sets = rescue_text::packed::write_word_sets([
            rescue_text::word_set("cursor.execute(query)").as_slice(),
            &[],
            rescue_text::word_set("render_template").as_slice(),
        ]);
        let terms = SqlValue::Blob(rescue_text::word_set("execute the SQL query"));
        let got = kb
            .query(
                "SELECT set_overlaps(?1, ?2)",
                &[SqlValue::Blob(sets.clone()), terms.clone()],
            )
            .unwrap();
        let [SqlValue::Blob(counts)] = got[0].as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(
            rescue_text::packed::read_counts(counts),
            Some(vec![2, 0, 0])
        );
        for (sets, terms) in [
            (SqlValue::Blob(sets[..sets.len() - 3].to_vec()), terms),
            (SqlValue::Blob(sets), SqlValue::Blob(vec![1; 9])),
        ] {
            assert!(matches!(
                kb.query("SELECT set_overlaps(?1, ?2)", &[sets, terms]),
                Err(QueryError::Failed(_))
            ));
        }
    }

    #[test]
    fn readers_serve_the_file_as_read_whatever_happens_to_it_later() {
        let dir = tempfile::tempdir().unwrap();
        // A name that would be URI syntax if it ever reached SQLite.
        let odd = dir.path().join("k b?mode=rwc#x.sqlite");
        Connection::open(&odd)
            .unwrap()
            .execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (42);")
            .unwrap();
        let kb = test_reader(&odd);
        assert_eq!(
            kb.query("SELECT a FROM t", &[]).unwrap(),
            vec![vec![SqlValue::Integer(42)]]
        );
        // Swapped for another file: threads that connect afterwards still
        // see the original.
        std::fs::remove_file(&odd).unwrap();
        Connection::open(&odd)
            .unwrap()
            .execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (7);")
            .unwrap();
        let later = std::thread::scope(|scope| {
            scope
                .spawn(|| kb.query("SELECT a FROM t", &[]).unwrap())
                .join()
                .unwrap()
        });
        assert_eq!(later, vec![vec![SqlValue::Integer(42)]]);
    }

    #[test]
    fn an_unreadable_file_fails_its_queries_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let kb = test_reader(&dir.path().join("missing.sqlite"));
        let Err(QueryError::Failed(message)) = kb.query("SELECT 1", &[]) else {
            panic!("a query over a missing file ran");
        };
        assert!(message.contains("missing.sqlite"), "{message}");
    }
}
