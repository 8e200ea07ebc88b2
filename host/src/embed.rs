//! Static token embeddings: the semantic facet's text encoder.
//!
//! A text's embedding is the L2-normalised sum of the vectors of its BERT
//! WordPiece tokens (model2vec's `StaticModel.encode`). The vectors were
//! distilled once from all-MiniLM-L6-v2 (PCA to 256 dimensions, SIF token
//! weights baked in, int8 with one scale per token; see
//! `embeddings/m2v-minilm-256/README.md` and EVAL.md for why this model).
//! Encoding a request costs microseconds and needs no network and no model
//! runtime, which is what lets the proxy run the facet on every request.
//!
//! The tables ship inside kb.sqlite (`embedding_token`), so the encoder that
//! embedded the CWE documents at build time is the one that embeds requests:
//! a swapped knowledge base brings its own encoder.

use std::collections::HashMap;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Dimensions of the shipped model.
pub const DIM: usize = 256;
/// Texts are cut to this many characters before tokenising (model2vec's
/// 512 tokens times the median token length).
const MAX_CHARS: usize = 3072;
/// Token ids kept per text, before unknown tokens are dropped.
const MAX_TOKENS: usize = 512;
/// Longer words are unknown, as in BERT's WordPiece.
const MAX_WORD_CHARS: usize = 100;
const PAD_ID: u32 = 0;
const UNK_ID: u32 = 1;
/// Prefix of continuation pieces in the vocabulary.
const CONTINUATION: &str = "##";

/// Why an embedding model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedding model: {0}")]
    Invalid(String),
}

/// A static embedding model held in memory.
#[derive(Debug, Clone)]
pub struct Embedder {
    /// Word-initial pieces: "query" -> id.
    initial: HashMap<Box<str>, u32>,
    /// Continuation pieces without their "##": "ing" -> id of "##ing".
    continuation: HashMap<Box<str>, u32>,
    /// Pieces by id, for writing the tables back out.
    pieces: Vec<Box<str>>,
    /// `pieces.len() * DIM` int8 components, row-major.
    vectors: Vec<i8>,
    /// One scale per token: component j of token i is vectors[i*DIM+j] * scales[i].
    scales: Vec<f32>,
}

impl Embedder {
    /// Builds a model from its pieces (id = position), int8 vectors and scales.
    pub fn new(
        pieces: Vec<String>,
        vectors: Vec<i8>,
        scales: Vec<f32>,
    ) -> Result<Self, EmbedError> {
        let n = pieces.len();
        if n < 2 || pieces[PAD_ID as usize] != "[PAD]" || pieces[UNK_ID as usize] != "[UNK]" {
            return Err(EmbedError::Invalid(
                "the vocabulary must start with [PAD], [UNK]".into(),
            ));
        }
        if vectors.len() != n * DIM || scales.len() != n {
            return Err(EmbedError::Invalid(format!(
                "{n} pieces need {} vector components and {n} scales, got {} and {}",
                n * DIM,
                vectors.len(),
                scales.len()
            )));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(EmbedError::Invalid("a scale is not finite".into()));
        }
        let mut initial = HashMap::with_capacity(n);
        let mut continuation = HashMap::new();
        for (id, piece) in pieces.iter().enumerate() {
            let id =
                u32::try_from(id).map_err(|_| EmbedError::Invalid("too many pieces".into()))?;
            let (map, key) = match piece.strip_prefix(CONTINUATION) {
                Some(rest) if !rest.is_empty() => (&mut continuation, rest),
                _ => (&mut initial, piece.as_str()),
            };
            if map.insert(key.into(), id).is_some() {
                return Err(EmbedError::Invalid(format!(
                    "piece {piece:?} appears twice"
                )));
            }
        }
        Ok(Self {
            initial,
            continuation,
            pieces: pieces.into_iter().map(String::into_boxed_str).collect(),
            vectors,
            scales,
        })
    }

    /// Loads the exported files of a model directory: `vocab.txt` (one piece
    /// per line, line number = id), `vectors.rowq.i8`, `scales.rowq.f32`
    /// (little-endian).
    pub fn from_dir(dir: &Path) -> Result<Self, EmbedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| EmbedError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let vocab = String::from_utf8(read("vocab.txt")?)
            .map_err(|_| EmbedError::Invalid("vocab.txt is not UTF-8".into()))?;
        let pieces: Vec<String> = vocab.lines().map(str::to_owned).collect();
        let vectors = read("vectors.rowq.i8")?
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let scales = read("scales.rowq.f32")?;
        if !scales.len().is_multiple_of(4) {
            return Err(EmbedError::Invalid(
                "scales.rowq.f32 is not a whole number of f32".into(),
            ));
        }
        let scales = scales
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::new(pieces, vectors, scales)
    }

    /// Number of pieces in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Piece `id`, its scale and its int8 components (for storing the model).
    pub fn token(&self, id: usize) -> (&str, f32, &[i8]) {
        (
            &self.pieces[id],
            self.scales[id],
            &self.vectors[id * DIM..(id + 1) * DIM],
        )
    }

    /// The token ids of `text` that carry a vector: truncated to MAX_CHARS
    /// characters, the literal "[PAD]"/"[UNK]" matched before normalisation,
    /// at most MAX_TOKENS ids, unknown words dropped.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        let text = match text.char_indices().nth(MAX_CHARS) {
            Some((cut, _)) => &text[..cut],
            None => text,
        };
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            let next_added = ["[PAD]", "[UNK]"]
                .iter()
                .zip([PAD_ID, UNK_ID])
                .filter_map(|(literal, id)| rest.find(literal).map(|at| (at, literal.len(), id)))
                .min_by_key(|(at, _, _)| *at);
            let (plain, added) = match next_added {
                Some((at, len, id)) => (&rest[..at], Some((at + len, id))),
                None => (rest, None),
            };
            for word in pre_tokenize(&normalize(plain)) {
                self.wordpiece(&word, &mut ids);
            }
            match added {
                Some((end, id)) => {
                    ids.push(id);
                    rest = &rest[end..];
                }
                None => break,
            }
        }
        ids.truncate(MAX_TOKENS);
        ids.retain(|&id| id != UNK_ID);
        ids
    }

    /// Greedy longest-match-first WordPiece; a word with any unmatched
    /// position becomes one unknown token.
    fn wordpiece(&self, word: &str, out: &mut Vec<u32>) {
        let bounds: Vec<usize> = word
            .char_indices()
            .map(|(i, _)| i)
            .chain([word.len()])
            .collect();
        let chars = bounds.len() - 1;
        if chars > MAX_WORD_CHARS {
            out.push(UNK_ID);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < chars {
            let map = if start == 0 {
                &self.initial
            } else {
                &self.continuation
            };
            let found = (start + 1..=chars).rev().find_map(|end| {
                map.get(&word[bounds[start]..bounds[end]])
                    .map(|&id| (id, end))
            });
            match found {
                Some((id, end)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(UNK_ID);
                    return;
                }
            }
        }
    }

    /// The L2-normalised embedding of `text`, or all zeros when no token of
    /// it is known (callers treat that as "no semantic signal").
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut sum = [0f32; DIM];
        for id in self.token_ids(text) {
            let id = id as usize;
            let scale = self.scales[id];
            for (acc, &q) in sum.iter_mut().zip(&self.vectors[id * DIM..(id + 1) * DIM]) {
                *acc += f32::from(q) * scale;
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|x| *x /= norm);
        }
        sum.to_vec()
    }
}

/// Little-endian f32 bytes of a vector: the form the plugin passes its query
/// vector to the `vector_dot` SQL function in.
pub fn to_le_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian IEEE half-precision bytes of a vector (round to nearest
/// even): the form the KB stores vectors in. Half the size of f32, so a row
/// with its vector fits in one b-tree cell; the rounding error (< 0.05% per
/// component) moves a cosine by about 1e-4.
pub fn to_f16_le_bytes(vector: &[f32]) -> Vec<u8> {
    vector
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// Dot products of the f32 `query` with every half-float vector of its
/// dimension concatenated in `rows`: what `dot_le_bytes(row, query)` gives
/// for each row, bit for bit (the same eight lanes in the same order),
/// with the query decoded once and one buffer reused for every row. `None`
/// unless `rows` holds whole vectors of the query's dimension.
pub fn dot_rows_le_bytes(rows: &[u8], query: &[u8]) -> Option<Vec<f64>> {
    let dims = query.len() / 4;
    if dims == 0 || !query.len().is_multiple_of(4) || !rows.len().is_multiple_of(2 * dims) {
        return None;
    }
    let query = f32_values(query);
    #[cfg(target_arch = "x86_64")]
    if let Some(scores) = f16c::dot_rows(rows, &query) {
        return Some(scores);
    }
    Some(dot_rows_portable(rows, &query))
}

/// [`dot_rows_le_bytes`] on any CPU; `rows` holds whole vectors of the
/// query's dimension.
fn dot_rows_portable(rows: &[u8], query: &[f32]) -> Vec<f64> {
    use half::f16;
    use half::slice::HalfFloatSliceExt;
    let dims = query.len();
    let mut bits = vec![f16::ZERO; dims];
    let mut row = vec![0f32; dims];
    rows.chunks_exact(2 * dims)
        .map(|stored| {
            for (slot, x) in bits.iter_mut().zip(stored.chunks_exact(2)) {
                *slot = f16::from_bits(u16::from_le_bytes([x[0], x[1]]));
            }
            bits.convert_to_f32_slice(&mut row);
            dot_f32(&row, query)
        })
        .collect()
}

/// [`dot_rows_le_bytes`] with the CPU's half-float conversion (F16C) and
/// 256-bit arithmetic, when the CPU has them: the scenario facet scores
/// thousands of rows per request, where decoding halves one at a time cost
/// ~90 ns a row. Same lanes, same separate multiply and add (no FMA), same
/// order of the final sum as [`dot_f32`]: the scores are bit for bit those
/// of the portable path.
#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::{
        __m128i, __m256, _mm_loadu_si128, _mm256_add_ps, _mm256_cvtph_ps, _mm256_loadu_ps,
        _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    /// `None` when the CPU lacks AVX or F16C, or the dimension is not a
    /// multiple of 8 (the portable path handles those).
    pub(super) fn dot_rows(rows: &[u8], query: &[f32]) -> Option<Vec<f64>> {
        let dims = query.len();
        if dims == 0
            || !dims.is_multiple_of(8)
            || !rows.len().is_multiple_of(2 * dims)
            || !std::arch::is_x86_feature_detected!("avx")
            || !std::arch::is_x86_feature_detected!("f16c")
        {
            return None;
        }
        // SAFETY: the CPU supports AVX and F16C (checked above).
        Some(unsafe { dot_rows_avx(rows, query) })
    }

    /// Rows go four at a time: each row's sum is one chain of dependent
    /// additions (3-4 cycles each), so one row at a time leaves the CPU
    /// waiting; four independent chains keep it busy, and each row's
    /// arithmetic is unchanged.
    #[target_feature(enable = "avx,f16c")]
    unsafe fn dot_rows_avx(rows: &[u8], query: &[f32]) -> Vec<f64> {
        const GROUP: usize = 4;
        let dims = query.len();
        let row_bytes = 2 * dims;
        let mut scores = Vec::with_capacity(rows.len() / row_bytes);
        let groups = rows.chunks_exact(GROUP * row_bytes);
        let rest = groups.remainder();
        for group in groups {
            let mut lanes = [_mm256_setzero_ps(); GROUP];
            for i in (0..dims).step_by(8) {
                // SAFETY: i + 8 <= dims, so the 8 floats at i lie in
                // `query`, and the 16 bytes at r * row_bytes + 2 * i lie in
                // row r of `group` (GROUP * row_bytes bytes); all loads are
                // unaligned loads. x86-64 is little-endian, as the stored
                // halves are.
                let q = unsafe { _mm256_loadu_ps(query.as_ptr().add(i)) };
                for (r, lane) in lanes.iter_mut().enumerate() {
                    let halves = unsafe {
                        _mm_loadu_si128(group.as_ptr().add(r * row_bytes + 2 * i).cast::<__m128i>())
                    };
                    *lane = _mm256_add_ps(*lane, _mm256_mul_ps(_mm256_cvtph_ps(halves), q));
                }
            }
            scores.extend(lanes.map(|lane| sum_lanes(lane)));
        }
        for row in rest.chunks_exact(row_bytes) {
            let mut lane = _mm256_setzero_ps();
            for i in (0..dims).step_by(8) {
                // SAFETY: as above, for one row of row_bytes bytes.
                let (halves, q) = unsafe {
                    (
                        _mm_loadu_si128(row.as_ptr().add(2 * i).cast::<__m128i>()),
                        _mm256_loadu_ps(query.as_ptr().add(i)),
                    )
                };
                lane = _mm256_add_ps(lane, _mm256_mul_ps(_mm256_cvtph_ps(halves), q));
            }
            scores.push(sum_lanes(lane));
        }
        scores
    }

    /// The eight lanes summed in order, as `dot_f32` sums its lanes.
    #[target_feature(enable = "avx")]
    fn sum_lanes(lanes: __m256) -> f64 {
        let mut sums = [0f32; 8];
        // SAFETY: `sums` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), lanes) };
        f64::from(sums.iter().sum::<f32>())
    }
}

/// Int8 quantisation with one scale per vector: component i is
/// `q[i] * scale`, the largest magnitude maps to 127 (all zeros: scale 0).
pub fn quantize_i8(vector: &[f32]) -> (Vec<i8>, f32) {
    let max = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; vector.len()], 0.0);
    }
    let scale = max / 127.0;
    let quantized = vector
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (quantized, scale)
}

/// The integer dot products of `query` with every row of `rows` (row-major,
/// `query.len()` columns; a trailing partial row is ignored). Exact, so the
/// AVX2 build of the same loop gives the same numbers as the portable one.
pub fn dot_rows_i8(rows: &[i8], query: &[i8]) -> Vec<i32> {
    if query.is_empty() {
        return Vec::new();
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avxvnni") && query.len().is_multiple_of(32) {
            // SAFETY: the CPU supports AVX-VNNI (checked just above).
            return unsafe { dot_rows_i8_vnni(rows, query) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { dot_rows_i8_avx2(rows, query) };
        }
    }
    dot_rows_i8_portable(rows, query)
}

/// [`dot_rows_i8_portable`] with AVX-VNNI, which multiplies unsigned by
/// signed bytes and adds each four products into 32 bits (no saturation):
/// 32 products per instruction. The query is shifted to unsigned
/// (q + 128) and the shift taken back with each row's own sum, which the
/// same instruction computes against a vector of ones:
/// sum(q * v) = sum((q + 128) * v) - 128 * sum(v). Exact, like every path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
fn dot_rows_i8_vnni(rows: &[i8], query: &[i8]) -> Vec<i32> {
    use std::arch::x86_64::{
        __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_shuffle_epi32, _mm_unpackhi_epi64,
        _mm256_castsi256_si128, _mm256_dpbusd_avx_epi32, _mm256_extracti128_si256,
        _mm256_loadu_si256, _mm256_set1_epi8, _mm256_setzero_si256, _mm256_slli_epi32,
        _mm256_sub_epi32,
    };
    const STEP: usize = 32;
    let dims = query.len();
    let shifted: Vec<u8> = query.iter().map(|q| (i16::from(*q) + 128) as u8).collect();
    // SAFETY (every load below): offset + 32 <= dims, within `shifted` or
    // within one `dims`-byte row; unaligned loads.
    let query_blocks: Vec<__m256i> = (0..dims)
        .step_by(STEP)
        .map(|i| unsafe { _mm256_loadu_si256(shifted.as_ptr().add(i).cast::<__m256i>()) })
        .collect();
    let ones = _mm256_set1_epi8(1);
    let mut dots = Vec::with_capacity(rows.len() / dims);
    for row in rows.chunks_exact(dims) {
        let (mut products, mut sums) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (block, q) in query_blocks.iter().enumerate() {
            let v = unsafe { _mm256_loadu_si256(row.as_ptr().add(block * STEP).cast::<__m256i>()) };
            products = _mm256_dpbusd_avx_epi32(products, *q, v);
            sums = _mm256_dpbusd_avx_epi32(sums, ones, v);
        }
        // One horizontal sum per row: the lanes' shifts are taken back
        // first (lane-wise, exact: each lane's true sum fits an i32).
        let lanes = _mm256_sub_epi32(products, _mm256_slli_epi32::<7>(sums));
        let halves = _mm_add_epi32(
            _mm256_castsi256_si128(lanes),
            _mm256_extracti128_si256::<1>(lanes),
        );
        let pairs = _mm_add_epi32(halves, _mm_unpackhi_epi64(halves, halves));
        let total = _mm_add_epi32(pairs, _mm_shuffle_epi32::<0b01>(pairs));
        dots.push(_mm_cvtsi128_si32(total));
    }
    dots
}

/// [`dot_rows_i8_portable`] with AVX2's multiply-and-add of 16-bit pairs:
/// sixteen products per instruction, against a 32-bit multiply per product
/// (measured 42 us for 2,490 scenario vectors with the portable loop
/// compiled for AVX2). The sums are exact either way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_rows_i8_avx2(rows: &[i8], query: &[i8]) -> Vec<i32> {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_loadu_si128, _mm256_add_epi32, _mm256_cvtepi8_epi16,
        _mm256_madd_epi16, _mm256_setzero_si256, _mm256_storeu_si256,
    };
    const STEP: usize = 16;
    let dims = query.len();
    if !dims.is_multiple_of(STEP) {
        return dot_rows_i8_portable(rows, query);
    }
    // SAFETY (every load below): offset + 16 <= dims, within `query` or
    // within one `dims`-byte row; unaligned loads.
    let query16: Vec<__m256i> = (0..dims)
        .step_by(STEP)
        .map(|i| {
            _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(query.as_ptr().add(i).cast::<__m128i>())
            })
        })
        .collect();
    let mut dots = Vec::with_capacity(rows.len() / dims);
    for row in rows.chunks_exact(dims) {
        let mut sums = _mm256_setzero_si256();
        for (block, q) in query16.iter().enumerate() {
            let r = _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(row.as_ptr().add(block * STEP).cast::<__m128i>())
            });
            sums = _mm256_add_epi32(sums, _mm256_madd_epi16(r, *q));
        }
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds exactly 8 i32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), sums) };
        dots.push(lanes.iter().sum());
    }
    dots
}

// Plain loops, all inlined: an iterator chain ending in `collect` compiles
// to a generic function outside the AVX2 one, which then runs none of it.
#[inline(always)]
fn dot_rows_i8_portable(rows: &[i8], query: &[i8]) -> Vec<i32> {
    let dims = query.len();
    let mut dots = Vec::with_capacity(rows.len() / dims);
    for row in rows.chunks_exact(dims) {
        dots.push(dot_i8(row, query));
    }
    dots
}

#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // Sixteen independent sums (integer addition is exact, so the grouping
    // changes nothing but the speed).
    const LANES: usize = 16;
    let mut lanes = [0i32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for i in 0..LANES {
            lanes[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut sum: i32 = lanes.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// Dot product of two little-endian vectors given as bytes: both f32 (equal
/// lengths), or one f16 and one f32 (one twice as long as the other: the
/// KB's stored vector against a query, scored as a matrix of one row).
/// `None` for any other pair of lengths.
pub fn dot_le_bytes(a: &[u8], b: &[u8]) -> Option<f64> {
    let (stored, query) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if stored.len() == query.len() && query.len().is_multiple_of(4) {
        return Some(dot_f32(&f32_values(stored), &f32_values(query)));
    }
    if stored.len() * 2 == query.len() {
        return dot_rows_le_bytes(stored, query)?.first().copied();
    }
    None
}

/// The f32 values of little-endian bytes (whole values only).
pub(crate) fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect()
}

/// Dot product of two f32 vectors of the same dimension.
fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    // Eight independent running sums: one serial chain of float additions
    // cannot be vectorised (their order is part of the result) and was 5% of
    // a retrieval; eight lanes compile to SIMD.
    const LANES: usize = 8;
    let mut lanes = [0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for (lane, (x, y)) in lanes.iter_mut().zip(x.iter().zip(y)) {
            *lane += x * y;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    f64::from(sum)
}

/// BERT's normaliser: drop NUL, U+FFFD and other control/format characters
/// (keeping tab and line breaks as spaces), space out CJK ideographs, strip
/// accents (NFD, then drop non-spacing marks), lowercase.
fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{FFFD}' {
            continue;
        }
        if matches!(c, '\t' | '\n' | '\r') || (c.is_whitespace() && !is_other(c)) {
            cleaned.push(' ');
        } else if is_other(c) {
            continue;
        } else if is_cjk(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    if cleaned.is_ascii() {
        cleaned.make_ascii_lowercase();
        return cleaned;
    }
    cleaned
        .nfd()
        .filter(|c| c.general_category() != GeneralCategory::NonspacingMark)
        .collect::<String>()
        .to_lowercase()
}

/// BERT's pre-tokeniser: split on whitespace; each punctuation character is
/// a word of its own.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if is_punctuation(c) {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            words.push(c.to_string());
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Unicode category C* (control, format, surrogate, private use, unassigned).
fn is_other(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Other
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.general_category_group() == GeneralCategoryGroup::Punctuation
}

fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// The source tree's model, loaded once per test binary.
#[cfg(test)]
pub(crate) fn shipped_for_tests() -> &'static Embedder {
    static MODEL: std::sync::OnceLock<Embedder> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        Embedder::from_dir(&crate::kb::source_tree_embeddings()).expect("the shipped model loads")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts with the token ids and rowq embedding the Python reference
    /// (embed.py, itself checked against model2vec) produced: accents, CJK,
    /// control characters, literal [PAD]/[UNK], a 150-character word, emoji,
    /// code, the empty text, and one longer than 512 tokens.
    #[test]
    fn matches_the_reference_implementation() {
        let golden =
            std::fs::read_to_string(crate::kb::source_tree_embeddings().join("golden.jsonl"))
                .unwrap();
        let model = shipped_for_tests();
        let mut checked = 0;
        for line in golden.lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = case["text"].as_str().unwrap();
            let ids: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(model.token_ids(text), ids, "token ids of {text:?}");
            let expected: Vec<f32> = case["rowq"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = model.embed(text);
            if expected.iter().all(|x| *x == 0.0) {
                assert!(
                    got.iter().all(|x| *x == 0.0),
                    "{text:?} should embed to zeros"
                );
            } else {
                let cosine: f32 = got.iter().zip(&expected).map(|(a, b)| a * b).sum();
                assert!(cosine > 0.99999, "cosine {cosine} for {text:?}");
            }
            checked += 1;
        }
        assert!(checked >= 16);
    }

    #[test]
    fn related_texts_are_closer_than_unrelated_ones() {
        let model = shipped_for_tests();
        let query = to_le_bytes(&model.embed("sql query built from user input"));
        let injection =
            to_le_bytes(&model.embed(
                "SQL injection: improper neutralization of special elements in an SQL command",
            ));
        let recursion = to_le_bytes(&model.embed("sum the even fibonacci numbers below a limit"));
        let near = dot_le_bytes(&query, &injection).unwrap();
        let far = dot_le_bytes(&query, &recursion).unwrap();
        assert!(near > far + 0.1, "near {near}, far {far}");
    }

    #[test]
    fn unknown_words_and_empty_text_give_no_signal() {
        let model = shipped_for_tests();
        assert!(model.embed("").iter().all(|x| *x == 0.0));
        assert!(model.embed(&"x".repeat(150)).iter().all(|x| *x == 0.0));
        let v = model.embed("password");
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn dot_refuses_mismatched_vectors() {
        assert_eq!(dot_le_bytes(&[0; 8], &[0; 12]), None);
        assert_eq!(dot_le_bytes(&[0; 6], &[0; 6]), None);
        // Two dimensions in half precision against two in f32.
        assert_eq!(dot_le_bytes(&[0; 8], &[0; 4]), Some(0.0));
        let a = to_le_bytes(&[1.0, 2.0]);
        assert_eq!(dot_le_bytes(&a, &a), Some(5.0));
        // Half precision against f32: the shorter side is f16.
        let h = to_f16_le_bytes(&[1.0, 2.0]);
        assert_eq!(dot_le_bytes(&h, &a), Some(5.0));
        assert_eq!(dot_le_bytes(&a, &h), Some(5.0));
        assert_eq!(dot_le_bytes(&h[..2], &a), None);
        assert_eq!(dot_le_bytes(&[0; 3], &[0; 6]), None);
    }

    #[test]
    fn int8_quantisation_keeps_cosines_to_a_hundredth_and_dots_are_exact() {
        let model = shipped_for_tests();
        let query = model.embed("download the image at the address the user typed");
        let (q, q_scale) = quantize_i8(&query);
        let texts = [
            "fetch a remote file for the caller",
            "sum the even fibonacci numbers below a limit",
            "improper neutralization of special elements used in an sql command",
        ];
        let mut rows = Vec::new();
        let mut scales = Vec::new();
        for text in texts {
            let (v, scale) = quantize_i8(&model.embed(text));
            rows.extend(v);
            scales.push(scale);
        }
        let dots = dot_rows_i8(&rows, &q);
        assert_eq!(dots, dot_rows_i8_portable(&rows, &q), "every path is exact");
        #[cfg(target_arch = "x86_64")]
        {
            // Each accelerated path the CPU has, against the plain loop, on
            // the extremes too (the VNNI path shifts the query by 128).
            let mut extremes = rows.clone();
            extremes[..256].fill(-127);
            extremes[256..512].fill(127);
            let mut q_extremes = q.clone();
            q_extremes[..128].fill(-127);
            q_extremes[128..].fill(127);
            for (rows, q) in [(&rows, &q), (&extremes, &q_extremes)] {
                let want = dot_rows_i8_portable(rows, q);
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(unsafe { dot_rows_i8_avx2(rows, q) }, want);
                }
                if std::arch::is_x86_feature_detected!("avxvnni") {
                    assert_eq!(unsafe { dot_rows_i8_vnni(rows, q) }, want);
                }
            }
        }
        for ((text, dot), scale) in texts.iter().zip(&dots).zip(&scales) {
            let exact =
                dot_le_bytes(&to_le_bytes(&model.embed(text)), &to_le_bytes(&query)).unwrap();
            let approx = f64::from(*dot) * f64::from(q_scale) * f64::from(*scale);
            assert!((exact - approx).abs() < 0.01, "{text}: {exact} vs {approx}");
        }
        assert_eq!(quantize_i8(&[0.0; 4]), (vec![0; 4], 0.0));
        assert_eq!(quantize_i8(&[1.0, -0.5]).0, [127, -64]);
        assert!(dot_rows_i8(&[1, 2, 3], &[]).is_empty());
        assert_eq!(
            dot_rows_i8(&[1, 2, 3, 4, 5], &[1, 1]),
            [3, 7],
            "partial row ignored"
        );
        // Extremes do not overflow: 256 * 127 * 127 fits an i32 many times over.
        assert_eq!(dot_rows_i8(&[-127; 256], &[-127; 256]), [256 * 127 * 127]);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_f16c_path_scores_bit_for_bit_as_the_portable_one() {
        let model = shipped_for_tests();
        let query = model.embed("download the image at the address the user typed");
        let rows: Vec<u8> = [
            "fetch a remote file for the caller",
            "sum the even fibonacci numbers below a limit",
            "",
            "improper neutralization of special elements used in an sql command",
        ]
        .iter()
        .flat_map(|text| to_f16_le_bytes(&model.embed(text)))
        .collect();
        let portable = dot_rows_portable(&rows, &query);
        match f16c::dot_rows(&rows, &query) {
            Some(fast) => {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&portable));
            }
            None => eprintln!("no AVX/F16C here: only the portable path runs"),
        }
        // A dimension that is not a multiple of 8 takes the portable path.
        let odd: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
        assert!(f16c::dot_rows(&to_f16_le_bytes(&odd), &odd).is_none());
        assert_eq!(
            dot_rows_le_bytes(&to_f16_le_bytes(&odd), &to_le_bytes(&odd)),
            Some(dot_rows_portable(&to_f16_le_bytes(&odd), &odd))
        );
    }

    #[test]
    fn half_precision_keeps_cosines_to_a_ten_thousandth() {
        let model = shipped_for_tests();
        let query = model.embed("sql query built from user input");
        for text in [
            "improper neutralization of special elements used in an sql command",
            "sum the even fibonacci numbers below a limit",
            "path traversal through user supplied file names",
        ] {
            let stored = model.embed(text);
            let exact = dot_le_bytes(&to_le_bytes(&stored), &to_le_bytes(&query)).unwrap();
            let halved = dot_le_bytes(&to_f16_le_bytes(&stored), &to_le_bytes(&query)).unwrap();
            assert!((exact - halved).abs() < 1e-4, "{text}: {exact} vs {halved}");
        }
        let long: Vec<f32> = (0..600).map(|i| (i % 7) as f32 / 10.0).collect();
        let exact = dot_le_bytes(&to_le_bytes(&long), &to_le_bytes(&long)).unwrap();
        let halved = dot_le_bytes(&to_f16_le_bytes(&long), &to_le_bytes(&long)).unwrap();
        assert!((exact - halved).abs() < 1e-3 * exact, "600 dimensions");
    }

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for len in 0..70 {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 53 % 13) as f32 - 6.0) / 3.0)
                .collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            let fast = dot_le_bytes(&to_le_bytes(&a), &to_le_bytes(&b)).unwrap();
            assert!(
                (fast - plain).abs() < 1e-4,
                "length {len}: {fast} vs {plain}"
            );
        }
    }

    #[test]
    fn malformed_models_are_rejected() {
        let pieces = || vec!["[PAD]".to_string(), "[UNK]".to_string(), "a".to_string()];
        assert!(Embedder::new(pieces(), vec![0; 3 * DIM], vec![1.0; 3]).is_ok());
        assert!(Embedder::new(pieces(), vec![0; 2 * DIM], vec![1.0; 3]).is_err());
        assert!(Embedder::new(pieces(), vec![0; 3 * DIM], vec![f32::NAN, 1.0, 1.0]).is_err());
        let mut duplicate = pieces();
        duplicate.push("a".into());
        assert!(Embedder::new(duplicate, vec![0; 4 * DIM], vec![1.0; 4]).is_err());
    }

    #[test]
    fn rows_score_as_each_row_alone_bit_for_bit() {
        let vector = |seed: u32, dims: usize| -> Vec<f32> {
            (0..dims)
                .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
                .map(|x| x as f32 / 997.0 - 0.5)
                .collect()
        };
        for dims in [256, 13] {
            let query = to_le_bytes(&vector(7, dims));
            let rows: Vec<Vec<u8>> = (0..5).map(|r| to_f16_le_bytes(&vector(r, dims))).collect();
            let together = dot_rows_le_bytes(&rows.concat(), &query).unwrap();
            let alone: Vec<f64> = rows
                .iter()
                .map(|r| dot_le_bytes(r, &query).unwrap())
                .collect();
            assert_eq!(
                together.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                alone.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            dot_rows_le_bytes(&[], &to_le_bytes(&[1.0; 4])),
            Some(vec![])
        );
        assert_eq!(dot_rows_le_bytes(&[0; 6], &to_le_bytes(&[1.0; 4])), None);
        assert_eq!(dot_rows_le_bytes(&[0; 8], &[]), None);
    }
}
