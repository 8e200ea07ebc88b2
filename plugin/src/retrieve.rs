//! RESCUE's hierarchical multi-faceted retrieval.
//!
//! CWE level, two facets over the in-scope weaknesses:
//! - lexical: BM25 (SQLite FTS5's, precomputed per word in the KB) of the
//!   task words and the APIs called in the conversation's code against each
//!   CWE's name, description, guideline, cause, the task descriptions of its
//!   code pairs and its API set, divided by sqrt(#terms) so one threshold
//!   fits short and long requests;
//! - semantic: cosine similarity between a static embedding of the same terms
//!   and the embedding of each CWE's name, description, cause and guideline
//!   (host `embed` import; the dot products run inside the KB query, all
//!   of the request language's weaknesses in one call);
//! - scenario: the same embedding against developer scenarios, coding
//!   requests in which each CWE is a natural risk (KB table scenario): a CWE
//!   scores the mean cosine of its SCENARIO_NEIGHBOURS closest scenarios, so
//!   a task can reach a weakness whose own text shares no word with it;
//! - classifier: the same embedding through the KB's logistic-regression
//!   model (trained at build time on every scenario and code-pair task
//!   text, ordinary coding tasks as a class of their own): a CWE scores
//!   its softmax probability, which weighs it against every other
//!   weakness at once where the scenario facet looks at each alone.
//!
//! Each facet ranks its candidates and votes for those within rank-cut that
//! score above its threshold; a CWE no facet votes for is not injected, and
//! a request with no vote at all is not augmented, which is the common case
//! for ordinary programming tasks. What a vote is worth is the fusion's
//! choice: the paper's reciprocal rank fusion, weight / (rrf-k + rank), or
//! (the default) weight * (base + margin), the margin being how far the
//! score stands above the facet's rank-cut floor in the spread of its first
//! rank-cut scores. Ranks 1 and 10 differ by 15% under RRF, so RRF nearly
//! counts votes; the margin also tells a clear winner from a near-tie
//! (EVAL.md, "Fusion"). The top-k CWEs by fused score are injected.
//! With the hierarchy walk on, a semantic hit on a weakness the KB holds no
//! knowledge for hands its place to an in-scope direct parent or child.
//!
//! Code level: among the secure examples of the chosen CWEs in the request's
//! language (in another one only when it has none), the same fusion over
//! three rankings (shared APIs and task words, semantic similarity of the
//! example's task and cause, the rank of its CWE) picks the one example.
//!
//! Full mode first asks the upstream model (host `llm` import) whether the
//! task carries a weakness that matters, which weaknesses (CWE ids, most
//! relevant first) and why, and for a zero-shot draft. The verdict decides
//! whether to augment; the CWEs it names rank first, in its order (one the
//! KB lacks stood in for by an in-scope parent or child); the cause text
//! joins the semantic query and the draft's API calls the lexical one, as in
//! the paper (EVAL.md, "Full mode": measured, the paper's use alone did
//! worse than fast mode).

use crate::bindings::rescue::plugin::kb::SqlValue;
use crate::compose::{self, Knowledge, SecureExample};
use crate::text;
use crate::{
    Augmentation, Capabilities, CweHit, FacetScore, Fusion, Mode, PluginError, RequestFacets,
    Retrieval, RetrievalParams,
};

// Candidate counts are literal LIMITs: a bound LIMIT makes SQLite re-plan
// (and so re-prepare) the statement on every run, defeating the cache.

/// How many candidates each CWE-level facet ranks (the rank cut applies
/// within them).
const FACET_CANDIDATES: usize = 20;

/// The classifier facet's model (KB table cwe_classifier, at most one
/// row): class ids, their biases, and their weights scored against the
/// query vector (?1) by the host's vector_scores.
pub const CLASSIFIER_SQL: &str =
    "SELECT c.classes, c.biases, vector_scores(c.weights, ?1) FROM cwe_classifier c";

/// The semantic, scenario and classifier facets (and the ordinary-task gate, which
/// uses the scenario scores) need a query of at least this many terms: a
/// one-word query's embedding is that word's vector, and its cosines are
/// word associations ("Return the sum of a and b" is the one term "add",
/// whose nearest scenarios were CSRF's). The lexical facet still sees it.
const MIN_DENSE_TERMS: usize = 2;

/// How many of a CWE's closest scenarios the scenario facet averages: one
/// lucky match is weaker evidence than a few (measured 1, 2, 3, 5: EVAL.md).
const SCENARIO_NEIGHBOURS: u32 = 3;

/// Per CWE with scenarios, the mean cosine similarity of the query vector
/// (?1) to its ?2 closest scenarios, as packed postings: the host's
/// scenario_means over the matrix of KB table scenario_index, which the
/// host holds in memory.
pub const SCENARIO_SQL: &str = "SELECT scenario_means(?1, ?2)";

/// The posting lists of the request's words (?1, a JSON array): per word,
/// the BM25 of every in-scope CWE whose name, description, guideline,
/// cause, pair task descriptions or API set holds it: FTS5's own scores,
/// precomputed per word at build time (KB tables lexical_word,
/// lexical_stem; column weights in host/src/kb/lexical.rs), summed by the
/// facet as FTS5 sums an OR query's phrases. One row per known word, each
/// a packed list (rescue_text::packed): a handful of rows where one row per
/// posting cost ~100. CROSS JOINs fix the plan (words, then their stems).
pub const LEXICAL_SQL: &str = "SELECT s.postings \
     FROM json_each(?1) q CROSS JOIN lexical_word w ON w.word = q.value \
     CROSS JOIN lexical_stem s ON s.stem = w.stem";

/// The in-scope weaknesses for the request's language (?2, as the catalog
/// names it; '' for none; a language no weakness lists reads the row of
/// those that list none), and the cosine similarity of the query vector
/// (?1; NULL without one) to each of those with a vector: one row, one call
/// of the host's vector_scores over the packed matrix (KB table
/// cwe_language). Both facets filter on the first list.
pub const LANGUAGE_SQL: &str = "SELECT c.cwes, c.vector_cwes, vector_scores(c.vectors, ?1) \
     FROM cwe_language c WHERE c.language = \
       coalesce((SELECT l.language FROM cwe_language l WHERE l.language = ?2), '*')";

/// Every weakness (in scope or not) by cosine similarity, for the hierarchy
/// walk; `in_scope` says which ones the KB has knowledge for. Most of the
/// catalog is out of scope, so it takes many rows to fill the rank cut.
const SEMANTIC_ALL_SQL: &str = "SELECT v.cwe, vector_dot(v.vector, ?1) AS similarity, v.in_scope \
     FROM cwe_vector v \
     WHERE (?2 = '' OR v.languages = '' OR instr(',' || v.languages || ',', ',' || ?2 || ',') > 0) \
     ORDER BY similarity DESC, v.cwe LIMIT 120";

/// In-scope direct parents and children of ?1 (ChildOf, research view).
const NEIGHBOURS_SQL: &str = "SELECT c.id FROM cwe_parent p \
     JOIN cwe c ON c.id = CASE WHEN p.child = ?1 THEN p.parent ELSE p.child END \
     WHERE (p.child = ?1 OR p.parent = ?1) AND c.in_scope = 1 \
       AND (?2 = '' OR c.languages = '' OR instr(',' || c.languages || ',', ',' || ?2 || ',') > 0) \
       AND (?3 = '' OR instr(?3, ',' || c.id || ',') > 0) \
     ORDER BY c.id LIMIT 16";

/// The guidelines of the chosen CWEs, in the order of the JSON array ?1
/// ("[89,79]"): one prepared statement whatever the number of CWEs.
const GUIDELINE_SQL: &str = "SELECT c.id, c.name, c.guideline FROM json_each(?1) j \
     JOIN cwe c ON c.id = j.value ORDER BY j.key";

/// The names of the CWEs in the JSON array ?1, in its order: the ranking
/// `explain` asks for.
const NAMES_SQL: &str =
    "SELECT c.id, c.name FROM json_each(?1) j JOIN cwe c ON c.id = j.value ORDER BY j.key";

/// The columns both example queries return for a pool row, in the order
/// `example_candidates` reads them (one spelling, so the two cannot drift).
macro_rules! example_pool_columns {
    () => {
        "SELECT j.key, p.ids, p.code_lengths, p.lines, \
           set_overlaps(p.api_words, ?4), set_overlaps(p.intro_words, ?4), \
           vector_scores(p.vectors, ?3) "
    };
}

/// The candidate secure examples of the chosen CWEs (?1, a JSON array of
/// ids, best first) in the request's language (?2): one row per CWE that
/// has any (KB table example_pool: its shortest examples, shortest first,
/// as packed columns), with how many words their API lists and their tasks
/// share with the request (?4, rescue_text::term_set; host function
/// set_overlaps) and their similarity to the query vector (?3; NULL without
/// one; host function vector_scores). One statement and a row per CWE where
/// one row per example cost ~2,000 instructions each; no example text
/// enters the sandbox but the ids.
pub const EXAMPLES_SQL: &str = concat!(
    example_pool_columns!(),
    "FROM json_each(?1) j CROSS JOIN example_pool p ON p.cwe = j.value AND p.language = ?2 \
     ORDER BY j.key"
);

/// The same in every other language (?2; '' when the request's is
/// unknown), a row per CWE and language: when none of the chosen CWEs has
/// an example in the request's language, one in another language still
/// shows the fix. The plugin merges a CWE's rows by length.
const EXAMPLES_OTHER_LANGUAGES_SQL: &str = concat!(
    example_pool_columns!(),
    "FROM json_each(?1) j CROSS JOIN example_pool p ON p.cwe = j.value \
     WHERE p.language <> '' AND p.language <> ?2 \
     ORDER BY j.key, p.language"
);

/// The chosen example's language and code.
const EXAMPLE_CODE_SQL: &str = "SELECT language, code FROM example WHERE id = ?1";

/// The full-mode question to the upstream model: a verdict (whether the
/// task carries a weakness that matters), the causes with their CWE ids,
/// most relevant first, and a draft (EVAL.md, "Full mode").
const FULL_MODE_PROMPT: &str = "You are a software security expert. For the programming task below, answer in exactly this form.\n\
RISK: yes or no: whether a straightforward implementation of the task would carry a security weakness that matters in practice.\n\
CAUSES: one paragraph naming those weaknesses, most relevant first, with their CWE ids, and why they arise in this task \
(\"none\" if RISK is no).\n\
Then a short draft implementation in one fenced code block. Do not write anything else.\n\n";

/// The full-mode question for a request: the instructions, the language
/// when the request names one (so the draft, whose calls become lexical
/// terms, is written in it), and the task.
fn full_mode_question(facets: &RequestFacets) -> String {
    match facets.language.as_deref().filter(|l| !l.trim().is_empty()) {
        Some(language) => format!(
            "{FULL_MODE_PROMPT}Language: {}\n\nTask:\n{}",
            language.trim(),
            facets.task
        ),
        None => format!("{FULL_MODE_PROMPT}Task:\n{}", facets.task),
    }
}

/// Tokens the full-mode answer may take.
const FULL_MODE_MAX_TOKENS: u32 = 700;

/// Language names as the CWE catalog writes them (lowercased).
fn catalog_language(language: &str) -> String {
    match language.to_ascii_lowercase().as_str() {
        "cpp" | "c++" | "cxx" | "cc" => "c++".into(),
        "js" | "javascript" | "node" | "typescript" | "ts" => "javascript".into(),
        "py" | "python" | "python3" => "python".into(),
        "golang" | "go" => "go".into(),
        "csharp" | "cs" | "c#" => "c#".into(),
        other => other.into(),
    }
}

/// Whether the policy's CWE scope admits `id` (an empty scope admits all).
fn in_policy(params: &RetrievalParams, id: i64) -> bool {
    params.cwe_scope.is_empty() || params.cwe_scope.iter().any(|c| i64::from(*c) == id)
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

/// Little-endian bytes of a vector, the form `vector_dot` takes.
fn vector_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One CWE's standing across the facets, while fusing.
#[derive(Debug, Clone)]
struct Candidate {
    id: i64,
    lexical: Option<FacetScore>,
    semantic: Option<FacetScore>,
    scenario: Option<FacetScore>,
    classifier: Option<FacetScore>,
    /// Full mode: the upstream model named it (rank in the model's order).
    named: Option<FacetScore>,
    via: Option<String>,
}

impl Candidate {
    /// Each facet's standing with what the fusion needs of it: its head,
    /// weight and threshold, and whether its vote may trigger augmentation
    /// (all but the classifier's: EVAL.md, "Classifier facet").
    fn facets(&self, params: &RetrievalParams, heads: &Heads) -> [FacetVote; 4] {
        [
            FacetVote {
                standing: self.lexical,
                head: heads.lexical,
                weight: params.lexical_weight,
                threshold: params.lexical_threshold,
                triggers: true,
            },
            FacetVote {
                standing: self.semantic,
                head: heads.semantic,
                weight: params.semantic_weight,
                threshold: params.semantic_threshold,
                triggers: true,
            },
            FacetVote {
                standing: self.scenario,
                head: heads.scenario,
                weight: params.scenario_weight,
                threshold: params.scenario_threshold,
                triggers: true,
            },
            FacetVote {
                standing: self.classifier,
                head: heads.classifier,
                weight: params.classifier_weight,
                threshold: params.classifier_threshold,
                triggers: false,
            },
        ]
    }

    /// The thresholded fusion when `thresholded` is set (what gets
    /// injected): only a facet whose score passes its threshold votes; the
    /// plain fusion over the rank cut otherwise (the ranking reported for
    /// eval). Either way only the facets' first rank-cut candidates vote.
    fn fused(&self, params: &RetrievalParams, heads: &Heads, thresholded: bool) -> f64 {
        self.facets(params, heads)
            .iter()
            .filter_map(|f| f.vote(params.rank_cut, thresholded).map(|s| (f, s)))
            .map(|(f, standing)| {
                f.weight
                    * match params.fusion {
                        Fusion::ReciprocalRank => {
                            1.0 / (f64::from(params.rrf_k) + f64::from(standing.rank))
                        }
                        Fusion::ScoreMargin => {
                            params.score_fusion_base + f.head.margin(standing.score)
                        }
                    }
            })
            .sum()
    }

    /// Whether a facet that may trigger augmentation votes for this CWE
    /// above its threshold (with a weight: a facet weighted 0 is off).
    fn triggers(&self, params: &RetrievalParams, heads: &Heads) -> bool {
        self.facets(params, heads)
            .iter()
            .any(|f| f.triggers && f.weight > 0.0 && f.vote(params.rank_cut, true).is_some())
    }

    fn hit(&self, score: f64, name: &str) -> CweHit {
        CweHit {
            id: format!("CWE-{}", self.id),
            name: name.to_string(),
            score,
            lexical: self.lexical,
            semantic: self.semantic,
            scenario: self.scenario,
            classifier: self.classifier,
            named: self.named,
            via: self.via.clone(),
        }
    }
}

/// One facet's part in a candidate's fusion.
struct FacetVote {
    standing: Option<FacetScore>,
    head: Head,
    weight: f64,
    threshold: f64,
    triggers: bool,
}

impl FacetVote {
    /// The standing if it is a vote: within the rank cut and, when
    /// `thresholded`, above the facet's threshold.
    fn vote(&self, rank_cut: u32, thresholded: bool) -> Option<FacetScore> {
        self.standing
            .filter(|f| f.rank <= rank_cut && (!thresholded || f.score > self.threshold))
    }
}

/// Where a facet's first rank-cut scores lie: the yardstick of the
/// score-margin fusion. Scores of different facets (BM25, cosines) are not
/// comparable; a margin in the facet's own spread is.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    /// The last (lowest) score within the rank cut.
    floor: f64,
    /// Their population standard deviation; 0 when it says nothing (one
    /// candidate, or all tied), and then every margin is 0.
    spread: f64,
}

impl Head {
    fn of(scores: impl Iterator<Item = f64>) -> Self {
        let scores: Vec<f64> = scores.collect();
        let Some(floor) = scores.iter().copied().reduce(f64::min) else {
            return Self::default();
        };
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
        Self {
            floor,
            spread: variance.sqrt(),
        }
    }

    /// How far `score` stands above the floor, in spreads: 0 to at most
    /// sqrt(2 x the number of scores), so no facet can outvote the others
    /// without bound.
    fn margin(self, score: f64) -> f64 {
        if self.spread > f64::EPSILON {
            ((score - self.floor) / self.spread).max(0.0)
        } else {
            0.0
        }
    }
}

/// The facets' heads for one request.
#[derive(Debug, Clone, Copy, Default)]
struct Heads {
    lexical: Head,
    semantic: Head,
    scenario: Head,
    classifier: Head,
}

impl Heads {
    fn of(candidates: &[Candidate], rank_cut: u32) -> Self {
        let head = |facet: fn(&Candidate) -> Option<FacetScore>| {
            Head::of(
                candidates
                    .iter()
                    .filter_map(facet)
                    .filter(|f| f.rank <= rank_cut)
                    .map(|f| f.score),
            )
        };
        Self {
            lexical: head(|c| c.lexical),
            semantic: head(|c| c.semantic),
            scenario: head(|c| c.scenario),
            classifier: head(|c| c.classifier),
        }
    }
}

/// What full mode learned from the upstream model.
#[derive(Debug, Default, PartialEq)]
pub struct Insight {
    /// The model's verdict on whether the task carries a weakness that
    /// matters ("RISK: yes" / "RISK: no"); `None` when it gave none.
    pub risk: Option<bool>,
    /// The CWE ids the causes name, first mention first.
    pub named: Vec<i64>,
    /// The vulnerability-cause paragraph.
    pub causes: String,
    /// The draft implementation and its language tag, if any.
    pub draft: Option<(Option<String>, String)>,
}

/// Splits the model's answer into the verdict, the causes paragraph (and the
/// CWE ids it names) and the first fenced code block.
pub fn parse_insight(answer: &str) -> Insight {
    let mut risk = None;
    let mut causes = String::new();
    let mut draft: Option<(Option<String>, String)> = None;
    let mut in_fence: Option<(Option<String>, String)> = None;
    for line in answer.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match in_fence.take() {
                Some(block) => {
                    if draft.is_none() {
                        draft = Some(block);
                    }
                }
                None => {
                    let tag = info.trim();
                    let tag = (!tag.is_empty()).then(|| tag.to_string());
                    in_fence = Some((tag, String::new()));
                }
            }
            continue;
        }
        match &mut in_fence {
            Some((_, code)) => {
                code.push_str(line);
                code.push('\n');
            }
            None if draft.is_none() => {
                if let Some(verdict) = strip_label(trimmed, "RISK:") {
                    let word: String = verdict
                        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
                        .chars()
                        .take_while(char::is_ascii_alphabetic)
                        .collect::<String>()
                        .to_ascii_lowercase();
                    risk = match word.as_str() {
                        "yes" => Some(true),
                        "no" => Some(false),
                        _ => risk,
                    };
                    continue;
                }
                let text = strip_label(trimmed, "CAUSES:").unwrap_or(line);
                causes.push_str(text.trim());
                causes.push(' ');
            }
            None => {}
        }
    }
    if draft.is_none() {
        draft = in_fence.filter(|(_, code)| !code.trim().is_empty());
    }
    let causes = causes.trim().to_string();
    Insight {
        risk,
        named: named_cwes(&causes),
        causes,
        draft,
    }
}

/// `line` after `label` ("RISK:"), matched without regard to case and to
/// Markdown emphasis around it ("**Risk:**").
fn strip_label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let line = line.trim_start_matches(['*', '_', '#', ' ']);
    let head = line.get(..label.len())?;
    head.eq_ignore_ascii_case(label)
        .then(|| line[label.len()..].trim_start_matches(['*', '_']))
}

/// The CWE ids `text` names ("CWE-89", "CWE 79", "cwe-22"), first mention
/// first, each once.
fn named_cwes(text: &str) -> Vec<i64> {
    let mut named = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find(['C', 'c']) {
        let start = at + found;
        at = start + 1;
        if !bytes[start..]
            .get(..3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"cwe"))
        {
            continue;
        }
        let mut digits = start + 3;
        if matches!(bytes.get(digits), Some(b'-' | b' ' | b'_')) {
            digits += 1;
        }
        let end = bytes[digits..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |n| digits + n);
        if let Ok(id) = text[digits..end].parse::<i64>()
            && end > digits
            && !named.contains(&id)
        {
            named.push(id);
        }
    }
    named
}

/// Adds each term of `new` to `terms` once.
fn add_terms(terms: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for term in new {
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
}

/// Runs retrieval and composition for one request.
pub fn augment(
    caps: &dyn Capabilities,
    facets: &RequestFacets,
    params: &RetrievalParams,
) -> Result<Retrieval, PluginError> {
    if facets.task.trim().is_empty() && facets.code_blocks.is_empty() {
        return Err(PluginError::InvalidInput("no task text and no code".into()));
    }
    let language = facets
        .language
        .as_deref()
        .map(catalog_language)
        .unwrap_or_default();
    let scope = scope_list(&params.cwe_scope);

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
            add_terms(&mut terms, text::terms(&api));
        }
    }
    let mut cause_terms = Vec::new();
    let mut insight = None;
    if params.mode == Mode::Full && !facets.task.trim().is_empty() {
        match caps.complete(&full_mode_question(facets), FULL_MODE_MAX_TOKENS) {
            Ok(answer) => {
                let parsed = parse_insight(&answer);
                if let Some((tag, code)) = &parsed.draft {
                    let draft_language = tag.as_deref().or(facets.language.as_deref());
                    if let Some(draft_language) = draft_language {
                        for api in caps.extract_calls(draft_language, code) {
                            add_terms(&mut terms, text::terms(&api));
                        }
                    }
                }
                cause_terms = text::terms(&parsed.causes);
                insight = Some(parsed);
            }
            // Full mode degrades to fast mode: the request still gets what
            // its own text supports.
            Err(message) => caps.warn(&format!("full mode: no LLM insight ({message})")),
        }
    }
    if terms.is_empty() {
        caps.debug("no retrieval terms");
        return Ok(Retrieval {
            augmentation: None,
            candidates: Vec::new(),
        });
    }

    // The semantic query is the lexical terms, not the raw prompt: a static
    // embedding of a whole prompt is dominated by its boilerplate (EVAL.md).
    let mut semantic_terms = terms.clone();
    add_terms(&mut semantic_terms, cause_terms);
    let query_blob = (semantic_terms.len() >= MIN_DENSE_TERMS)
        .then(|| caps.embed(&semantic_terms.join(" ")))
        .filter(|vector| vector.iter().any(|x| *x != 0.0))
        .map(|vector| vector_blob(&vector));
    let view = LanguageView::read(caps, query_blob.as_deref(), &language)?;
    let mut candidates: Vec<Candidate> = Vec::new();
    lexical_facet(
        caps,
        &terms,
        &view,
        &|id| in_policy(params, id),
        &mut candidates,
    )?;
    if params.hierarchy_walk {
        if let Some(blob) = &query_blob {
            let rows = semantic_rows_walking(caps, blob, &language)?;
            semantic_facet(caps, params, &rows, &language, &scope, &mut candidates)?;
        }
    } else if let Some(scores) = &view.scores {
        let mut rows: Vec<SemanticRow> = view
            .vector_cwes
            .iter()
            .zip(scores)
            .filter(|(id, _)| in_policy(params, **id))
            .map(|(id, similarity)| SemanticRow {
                id: *id,
                similarity: *similarity,
                in_scope: true,
            })
            .collect();
        rows.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.id.cmp(&b.id)));
        rows.truncate(FACET_CANDIDATES);
        semantic_facet(caps, params, &rows, &language, &scope, &mut candidates)?;
    }
    // A facet whose votes cannot count is not worth its hundreds of dot
    // products.
    // The request's closeness to ordinary coding tasks, and to the best
    // CWE's scenarios: the gate below.
    let mut ordinary_gap = None;
    if let Some(blob) = query_blob.as_ref().filter(|_| params.scenario_weight > 0.0) {
        let scenarios = rank_scenarios(caps, blob, &view, &|id| in_policy(params, id))?;
        if let (Some(ordinary), Some((_, best))) = (scenarios.ordinary, scenarios.ranking.first()) {
            ordinary_gap = Some(best - ordinary);
        }
        record_ranking(scenarios.ranking, &mut candidates, |c| &mut c.scenario);
    }
    if let Some(blob) = query_blob
        .as_ref()
        .filter(|_| params.classifier_weight > 0.0)
    {
        classifier_facet(
            caps,
            blob,
            &view,
            &|id| in_policy(params, id),
            &mut candidates,
        )?;
    }

    if let Some(insight) = &insight {
        named_facet(
            caps,
            params,
            &insight.named,
            &view,
            &language,
            &scope,
            &mut candidates,
        )?;
    }

    let heads = Heads::of(&candidates, params.rank_cut);
    let mut ranked: Vec<(f64, &Candidate)> = candidates
        .iter()
        .map(|c| (c.fused(params, &heads, false), c))
        .filter(|(score, c)| *score > 0.0 || c.named.is_some())
        .collect();
    sort_fused(&mut ranked);
    // A request that reads more like an ordinary coding task than like any
    // weakness's scenarios is not augmented, whatever passed a threshold:
    // the facets' thresholds alone must also keep such tasks out, and so
    // sit higher than the security tasks need (EVAL.md).
    let ordinary_like = ordinary_gap.is_some_and(|gap| gap <= params.ordinary_margin);
    // The classifier helps choose which weaknesses, never whether: as a
    // trigger it fires on ordinary tasks unlike its training texts, and at
    // the false-augmentation rate of the others it adds no security task
    // they miss (EVAL.md, "Classifier facet").
    let facets_trigger = !ordinary_like && candidates.iter().any(|c| c.triggers(params, &heads));
    // Full mode: the model, which read the whole task, decides whether; the
    // facets decide only when it gave no verdict (EVAL.md, "Full mode").
    let triggered = match insight.as_ref().and_then(|i| i.risk) {
        Some(false) => false,
        Some(true) => candidates.iter().any(|c| c.named.is_some()) || facets_trigger,
        None => facets_trigger,
    };
    let mut injected: Vec<(f64, &Candidate)> = candidates
        .iter()
        .map(|c| (c.fused(params, &heads, true), c))
        .filter(|(score, c)| triggered && (*score > 0.0 || c.named.is_some()))
        .collect();
    sort_fused(&mut injected);
    injected.truncate(params.top_k as usize);
    caps.debug(&format!(
        "{} terms, {} candidates, {} injected (best scenario minus ordinary: {ordinary_gap:?})",
        terms.len(),
        ranked.len(),
        injected.len()
    ));
    // The ranking is for eval and retrieve; building it and copying it out
    // of the sandbox is wasted on a proxied request.
    let candidate_hits = if params.explain && !ranked.is_empty() {
        let ids: Vec<i64> = ranked.iter().map(|(_, c)| c.id).collect();
        let names = cwe_names(caps, &ids)?;
        ranked
            .iter()
            .zip(&names)
            .map(|((score, c), name)| c.hit(*score, name))
            .collect()
    } else {
        Vec::new()
    };
    if injected.is_empty() {
        return Ok(Retrieval {
            augmentation: None,
            candidates: candidate_hits,
        });
    }

    let rows = caps
        .query(
            GUIDELINE_SQL,
            &[id_array(injected.iter().map(|(_, c)| c.id))],
        )
        .map_err(PluginError::Kb)?;
    let mut guidelines = Vec::with_capacity(injected.len());
    let mut hits = Vec::with_capacity(injected.len());
    for ((score, c), row) in injected.iter().zip(&rows) {
        match row.as_slice() {
            [
                SqlValue::Integer(id),
                SqlValue::Text(name),
                SqlValue::Text(guideline),
            ] if *id == c.id => {
                guidelines.push(guideline.clone());
                hits.push(c.hit(*score, name));
            }
            other => {
                return Err(PluginError::Schema(format!(
                    "unexpected guideline row {other:?}"
                )));
            }
        }
    }
    if guidelines.len() != injected.len() {
        return Err(PluginError::Schema(format!(
            "{} guidelines for {} CWEs",
            guidelines.len(),
            injected.len()
        )));
    }
    // Examples are stored under the plugin's own language names ("cpp"), not
    // the catalog's ("c++").
    let example_language = facets.language.clone().unwrap_or_default();
    let chosen: Vec<&Candidate> = injected.iter().map(|(_, c)| *c).collect();
    let example = best_example(
        caps,
        &chosen,
        &example_language,
        &terms,
        query_blob.as_deref(),
    )?;
    let knowledge = Knowledge {
        guidelines: hits
            .iter()
            .zip(&guidelines)
            .map(|(hit, guideline)| (hit.id.as_str(), hit.name.as_str(), guideline.as_str()))
            .collect(),
        example: example.as_ref(),
    };
    let text = compose::chat_block(&knowledge, params.max_chars as usize);
    Ok(Retrieval {
        augmentation: Some(Augmentation {
            text,
            example_id: example.as_ref().map(|e| e.id.clone()),
            cwes: hits,
        }),
        candidates: candidate_hits,
    })
}

/// Full mode's model-named CWEs first, in the model's order; then the best
/// fused score; ties go to the better lexical rank (the more precise
/// facet), then the better semantic and scenario ranks, then the lower CWE
/// id.
fn sort_fused(list: &mut [(f64, &Candidate)]) {
    let rank = |f: &Option<FacetScore>| f.map_or(u32::MAX, |f| f.rank);
    list.sort_by(|(sa, a), (sb, b)| {
        rank(&a.named)
            .cmp(&rank(&b.named))
            .then(sb.total_cmp(sa))
            .then(rank(&a.lexical).cmp(&rank(&b.lexical)))
            .then(rank(&a.semantic).cmp(&rank(&b.semantic)))
            .then(rank(&a.scenario).cmp(&rank(&b.scenario)))
            .then(a.id.cmp(&b.id))
    });
}

/// The request language's row of `cwe_language` (LANGUAGE_SQL).
struct LanguageView {
    /// Every in-scope CWE for the language, ascending: the facets' filter.
    cwes: Vec<i64>,
    /// Those with a vector, ascending, and their similarity to the query
    /// (`None` without a query vector).
    vector_cwes: Vec<i64>,
    scores: Option<Vec<f64>>,
}

impl LanguageView {
    fn read(
        caps: &dyn Capabilities,
        query: Option<&[u8]>,
        language: &str,
    ) -> Result<Self, PluginError> {
        let rows = caps
            .query(
                LANGUAGE_SQL,
                &[
                    query.map_or(SqlValue::Null, |q| SqlValue::Blob(q.to_vec())),
                    SqlValue::Text(language.to_string()),
                ],
            )
            .map_err(PluginError::Kb)?;
        let schema = |what: &str| PluginError::Schema(format!("cwe_language: {what}"));
        let [row] = rows.as_slice() else {
            return Err(schema(&format!("{} rows for {language:?}", rows.len())));
        };
        let [SqlValue::Blob(cwes), SqlValue::Blob(vector_cwes), scores] = row.as_slice() else {
            return Err(schema(&format!("unexpected row {row:?}")));
        };
        let cwes = text::packed::read_ids(cwes).ok_or_else(|| schema("cwes"))?;
        let vector_cwes =
            text::packed::read_ids(vector_cwes).ok_or_else(|| schema("vector_cwes"))?;
        let scores = match scores {
            SqlValue::Null => None,
            SqlValue::Blob(scores) => Some(
                text::packed::read_scores(scores)
                    .filter(|s| s.len() == vector_cwes.len())
                    .ok_or_else(|| schema("one score per vector"))?,
            ),
            other => return Err(schema(&format!("scores {other:?}"))),
        };
        Ok(Self {
            cwes,
            vector_cwes,
            scores,
        })
    }

    fn admits(&self, id: i64) -> bool {
        self.cwes.binary_search(&id).is_ok()
    }
}

/// The lexical facet's candidates for `terms` in `language` (as the catalog
/// names it; '' for none): (CWE, BM25 summed over the terms), best first,
/// as many as the facet ranks. The same code the facet runs; public so the
/// precomputed index can be checked against FTS5 (tests/tests/lexical_index.rs).
pub fn lexical_ranking(
    caps: &dyn Capabilities,
    terms: &[String],
    language: &str,
) -> Result<Vec<(i64, f64)>, PluginError> {
    let view = LanguageView::read(caps, None, language)?;
    rank_lexical(caps, terms, &view, &|_| true)
}

fn lexical_facet(
    caps: &dyn Capabilities,
    terms: &[String],
    view: &LanguageView,
    in_policy: &dyn Fn(i64) -> bool,
    candidates: &mut Vec<Candidate>,
) -> Result<(), PluginError> {
    let scores = rank_lexical(caps, terms, view, in_policy)?;
    // BM25 sums over query terms, so long prompts (a docstring, a pasted
    // file) pile up weak matches; dividing by sqrt(#terms) makes one
    // threshold work for a one-line request and a long one alike.
    let length_norm = (terms.len() as f64).sqrt();
    for (rank, (id, score)) in scores.into_iter().enumerate() {
        candidates.push(Candidate {
            id,
            lexical: Some(FacetScore {
                score: score / length_norm,
                rank: rank as u32 + 1,
            }),
            semantic: None,
            scenario: None,
            classifier: None,
            named: None,
            via: None,
        });
    }
    Ok(())
}

/// The posting lists of `terms` summed per CWE the language and the policy
/// admit, best first (ties to the lower id), at most FACET_CANDIDATES.
fn rank_lexical(
    caps: &dyn Capabilities,
    terms: &[String],
    view: &LanguageView,
    in_policy: &dyn Fn(i64) -> bool,
) -> Result<Vec<(i64, f64)>, PluginError> {
    let rows = caps
        .query(LEXICAL_SQL, &[SqlValue::Text(text::json_array(terms))])
        .map_err(PluginError::Kb)?;
    let mut scores: Vec<(i64, f64)> = Vec::new();
    for row in &rows {
        let [SqlValue::Blob(postings)] = row.as_slice() else {
            return Err(PluginError::Schema(format!(
                "unexpected lexical row {row:?}"
            )));
        };
        text::packed::for_each_posting(postings, |id, score| {
            if !view.admits(id) || !in_policy(id) {
                return;
            }
            match scores.iter_mut().find(|(c, _)| *c == id) {
                Some((_, sum)) => *sum += score,
                None => scores.push((id, score)),
            }
        })
        .ok_or_else(|| PluginError::Schema("lexical postings".into()))?;
    }
    keep_best(&mut scores);
    Ok(scores)
}

/// What the scenario facet found for one request.
struct ScenarioScores {
    /// Every CWE the language and the policy admit that has scenarios,
    /// scored by the mean similarity of its SCENARIO_NEIGHBOURS closest
    /// ones, best first (ties to the lower id), at most FACET_CANDIDATES.
    ranking: Vec<(i64, f64)>,
    /// The same score against the ordinary coding tasks, if the KB has them.
    ordinary: Option<f64>,
}

/// The scenario facet for the query vector (f32 bytes).
fn rank_scenarios(
    caps: &dyn Capabilities,
    query: &[u8],
    view: &LanguageView,
    in_policy: &dyn Fn(i64) -> bool,
) -> Result<ScenarioScores, PluginError> {
    let rows = caps
        .query(
            SCENARIO_SQL,
            &[
                SqlValue::Blob(query.to_vec()),
                SqlValue::Integer(i64::from(SCENARIO_NEIGHBOURS)),
            ],
        )
        .map_err(PluginError::Kb)?;
    let schema = |what: &str| PluginError::Schema(format!("scenario_index: {what}"));
    let [row] = rows.as_slice() else {
        return Err(schema(&format!("{} rows", rows.len())));
    };
    let [SqlValue::Blob(postings)] = row.as_slice() else {
        return Err(schema(&format!("unexpected row {row:?}")));
    };
    let mut ranked = Vec::new();
    let mut ordinary = None;
    text::packed::for_each_posting(postings, |id, score| {
        if id == i64::from(text::packed::ORDINARY_TASKS) {
            ordinary = Some(score);
        } else if view.admits(id) && in_policy(id) {
            ranked.push((id, score));
        }
    })
    .ok_or_else(|| schema("postings"))?;
    keep_best(&mut ranked);
    Ok(ScenarioScores {
        ranking: ranked,
        ordinary,
    })
}

/// Merges the scenario facet's ranking into the candidates.
/// Ranks the language's weaknesses by the classifier's probability: a
/// softmax over all of the model's classes (the ordinary tasks and the
/// weaknesses of other languages included, so a request that reads like
/// an ordinary task leaves every weakness a small probability). A KB
/// without a model has no such facet.
fn classifier_facet(
    caps: &dyn Capabilities,
    query: &[u8],
    view: &LanguageView,
    in_policy: &dyn Fn(i64) -> bool,
    candidates: &mut Vec<Candidate>,
) -> Result<(), PluginError> {
    let rows = caps
        .query(CLASSIFIER_SQL, &[SqlValue::Blob(query.to_vec())])
        .map_err(PluginError::Kb)?;
    let schema = |what: &str| PluginError::Schema(format!("cwe_classifier: {what}"));
    let row = match rows.as_slice() {
        [] => return Ok(()),
        [row] => row,
        _ => return Err(schema(&format!("{} rows", rows.len()))),
    };
    let [
        SqlValue::Blob(classes),
        SqlValue::Blob(biases),
        SqlValue::Blob(products),
    ] = row.as_slice()
    else {
        return Err(schema(&format!("unexpected row {row:?}")));
    };
    let classes = text::packed::read_ids(classes).ok_or_else(|| schema("classes"))?;
    let biases = text::packed::read_scores(biases).ok_or_else(|| schema("biases"))?;
    let products = text::packed::read_scores(products).ok_or_else(|| schema("weights"))?;
    if biases.len() != classes.len() || products.len() != classes.len() {
        return Err(schema(&format!(
            "{} classes, {} biases, {} weight rows",
            classes.len(),
            biases.len(),
            products.len()
        )));
    }
    let logits: Vec<f64> = biases.iter().zip(&products).map(|(b, p)| b + p).collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let mut ranked: Vec<(i64, f64)> = classes
        .iter()
        .zip(&logits)
        .filter(|(id, _)| {
            **id != i64::from(text::packed::ORDINARY_TASKS) && view.admits(**id) && in_policy(**id)
        })
        .map(|(id, logit)| (*id, (logit - max).exp() / total))
        .collect();
    keep_best(&mut ranked);
    record_ranking(ranked, candidates, |c| &mut c.classifier);
    Ok(())
}

/// Orders (CWE, score) pairs best first (ties by id, so the order is a
/// function of the scores) and keeps a facet's FACET_CANDIDATES.
fn keep_best(ranked: &mut Vec<(i64, f64)>) {
    ranked.sort_by(|(a, x), (b, y)| y.total_cmp(x).then(a.cmp(b)));
    ranked.truncate(FACET_CANDIDATES);
}

/// Records a facet's ranking (best first) as each CWE's standing in the
/// facet `slot` names.
fn record_ranking(
    ranking: Vec<(i64, f64)>,
    candidates: &mut Vec<Candidate>,
    slot: fn(&mut Candidate) -> &mut Option<FacetScore>,
) {
    for (rank, (id, score)) in ranking.into_iter().enumerate() {
        *slot(candidate(candidates, id)) = Some(FacetScore {
            score,
            rank: rank as u32 + 1,
        });
    }
}

/// The candidate for CWE `id`, added without facet scores if it is new.
fn candidate(candidates: &mut Vec<Candidate>, id: i64) -> &mut Candidate {
    match candidates.iter().position(|c| c.id == id) {
        Some(at) => &mut candidates[at],
        None => {
            candidates.push(Candidate {
                id,
                lexical: None,
                semantic: None,
                scenario: None,
                classifier: None,
                named: None,
                via: None,
            });
            candidates.last_mut().expect("just pushed")
        }
    }
}

/// One weakness the semantic facet ranks, best first.
struct SemanticRow {
    id: i64,
    similarity: f64,
    /// Whether the KB has knowledge for it (only the hierarchy walk sees
    /// weaknesses it has none for).
    in_scope: bool,
}

/// Every weakness for the language, in scope or not, best first: where the
/// hierarchy walk starts (SEMANTIC_ALL_SQL).
fn semantic_rows_walking(
    caps: &dyn Capabilities,
    query: &[u8],
    language: &str,
) -> Result<Vec<SemanticRow>, PluginError> {
    caps.query(
        SEMANTIC_ALL_SQL,
        &[
            SqlValue::Blob(query.to_vec()),
            SqlValue::Text(language.to_string()),
        ],
    )
    .map_err(PluginError::Kb)?
    .iter()
    .map(|row| match row.as_slice() {
        [
            SqlValue::Integer(id),
            SqlValue::Real(similarity),
            SqlValue::Integer(in_scope),
        ] => Ok(SemanticRow {
            id: *id,
            similarity: *similarity,
            in_scope: *in_scope == 1,
        }),
        _ => Err(PluginError::Schema(format!(
            "unexpected semantic row {row:?}"
        ))),
    })
    .collect()
}

/// Ranks `rows` (best first) into the candidates, up to the rank cut.
/// Who stands in for `id`, a weakness the KB holds no knowledge for: its
/// in-scope direct parents and children for the request's language and the
/// policy's scope (a `scope_list`), each marked as standing in for it.
fn stand_ins(
    caps: &dyn Capabilities,
    id: i64,
    language: &str,
    scope: &str,
) -> Result<Vec<(i64, Option<String>)>, PluginError> {
    caps.query(
        NEIGHBOURS_SQL,
        &[
            SqlValue::Integer(id),
            SqlValue::Text(language.to_string()),
            SqlValue::Text(scope.to_string()),
        ],
    )
    .map_err(PluginError::Kb)?
    .iter()
    .map(|row| match row.as_slice() {
        [SqlValue::Integer(n)] => Ok((*n, Some(format!("CWE-{id}")))),
        _ => Err(PluginError::Schema(format!(
            "unexpected neighbour row {row:?}"
        ))),
    })
    .collect()
}

/// Full mode: the CWEs the upstream model named, ranked in its order
/// (score 1/rank), each one the KB holds knowledge for in the request's
/// language and the policy's scope, and for one it does not, its in-scope
/// parents and children standing in (as the hierarchy walk does for the
/// semantic facet).
fn named_facet(
    caps: &dyn Capabilities,
    params: &RetrievalParams,
    named: &[i64],
    view: &LanguageView,
    language: &str,
    scope: &str,
    candidates: &mut Vec<Candidate>,
) -> Result<(), PluginError> {
    let mut rank = 0u32;
    for &id in named {
        let standing_in: Vec<(i64, Option<String>)> =
            if view.cwes.binary_search(&id).is_ok() && in_policy(params, id) {
                vec![(id, None)]
            } else {
                stand_ins(caps, id, language, scope)?
            };
        for (cwe, via) in standing_in {
            if candidates.iter().any(|c| c.id == cwe && c.named.is_some()) {
                continue;
            }
            rank += 1;
            let c = candidate(candidates, cwe);
            c.named = Some(FacetScore {
                score: 1.0 / f64::from(rank),
                rank,
            });
            if c.via.is_none() {
                c.via = via;
            }
        }
        if rank as usize >= FACET_CANDIDATES {
            break;
        }
    }
    Ok(())
}

fn semantic_facet(
    caps: &dyn Capabilities,
    params: &RetrievalParams,
    rows: &[SemanticRow],
    language: &str,
    scope: &str,
    candidates: &mut Vec<Candidate>,
) -> Result<(), PluginError> {
    let mut rank = 0u32;
    for &SemanticRow {
        id,
        similarity,
        in_scope,
    } in rows
    {
        // Who takes this hit's place: itself, or (walking the hierarchy)
        // the in-scope parents and children of a weakness the KB has no
        // knowledge for, when the hit is strong (above the threshold).
        let standing_in: Vec<(i64, Option<String>)> = if in_scope && in_policy(params, id) {
            vec![(id, None)]
        } else if !in_scope && params.hierarchy_walk && similarity > params.semantic_threshold {
            stand_ins(caps, id, language, scope)?
        } else {
            Vec::new()
        };
        for (cwe, via) in standing_in {
            if candidates
                .iter()
                .any(|c| c.id == cwe && c.semantic.is_some())
            {
                continue;
            }
            rank += 1;
            let score = Some(FacetScore {
                score: similarity,
                rank,
            });
            let c = candidate(candidates, cwe);
            c.semantic = score;
            c.via = via;
        }
        if rank >= params.rank_cut {
            break;
        }
    }
    Ok(())
}

/// CWE ids as the JSON array ("[89,79]") GUIDELINE_SQL and NAMES_SQL read
/// with `json_each`.
fn id_array(ids: impl Iterator<Item = i64>) -> SqlValue {
    let ids: Vec<String> = ids.map(|id| id.to_string()).collect();
    SqlValue::Text(format!("[{}]", ids.join(",")))
}

/// The names of `ids`, in their order.
fn cwe_names(caps: &dyn Capabilities, ids: &[i64]) -> Result<Vec<String>, PluginError> {
    let rows = caps
        .query(NAMES_SQL, &[id_array(ids.iter().copied())])
        .map_err(PluginError::Kb)?;
    if rows.len() != ids.len() {
        return Err(PluginError::Schema(format!(
            "{} names for {} CWEs",
            rows.len(),
            ids.len()
        )));
    }
    ids.iter()
        .zip(&rows)
        .map(|(id, row)| match row.as_slice() {
            [SqlValue::Integer(got), SqlValue::Text(name)] if got == id => Ok(name.clone()),
            other => Err(PluginError::Schema(format!(
                "unexpected name row {other:?}"
            ))),
        })
        .collect()
}

/// The example pool rows of the chosen CWEs from one of the example queries.
fn example_rows(
    caps: &dyn Capabilities,
    chosen: &[&Candidate],
    language: &str,
    request_terms: &[String],
    query: Option<&[u8]>,
    sql: &str,
) -> Result<Vec<Vec<SqlValue>>, PluginError> {
    caps.query(
        sql,
        &[
            id_array(chosen.iter().map(|c| c.id)),
            SqlValue::Text(language.to_string()),
            query.map_or(SqlValue::Null, |q| SqlValue::Blob(q.to_vec())),
            SqlValue::Blob(text::term_set(request_terms)),
        ],
    )
    .map_err(PluginError::Kb)
}

/// The example candidates in pool rows of the chosen CWEs: per CWE, its
/// `EXAMPLE_POOL_SIZE` shortest (over all the rows of that CWE), numbered
/// shortest first. Ids are borrowed from the rows.
fn example_candidates<'a>(
    chosen: &[&Candidate],
    rows: &'a [Vec<SqlValue>],
) -> Result<Vec<ExampleCandidate<'a>>, PluginError> {
    use text::packed;
    // (cwe rank, code length, candidate) of every row, before cutting each
    // CWE to its pool size.
    let mut all: Vec<(usize, usize, ExampleCandidate<'a>)> = Vec::new();
    for row in rows {
        let schema = || PluginError::Schema(format!("unexpected example pool row {row:?}"));
        let [
            SqlValue::Integer(cwe_rank),
            SqlValue::Text(ids),
            SqlValue::Blob(lengths),
            SqlValue::Blob(lines),
            SqlValue::Blob(shared_apis),
            SqlValue::Blob(shared_task_words),
            similarities,
        ] = row.as_slice()
        else {
            return Err(schema());
        };
        let cwe_rank = usize::try_from(*cwe_rank).map_err(|_| schema())?;
        let cwe = chosen.get(cwe_rank).ok_or_else(schema)?.id;
        let ids: Vec<&'a str> = ids.split('\n').collect();
        let lengths = packed::read_counts(lengths).ok_or_else(schema)?;
        let lines = packed::read_counts(lines).ok_or_else(schema)?;
        let shared_apis = packed::read_counts(shared_apis).ok_or_else(schema)?;
        let shared_task_words = packed::read_counts(shared_task_words).ok_or_else(schema)?;
        let similarities = match similarities {
            SqlValue::Null => vec![0.0; ids.len()],
            SqlValue::Blob(scores) => packed::read_scores(scores).ok_or_else(schema)?,
            _ => return Err(schema()),
        };
        let n = ids.len();
        if [
            lengths.len(),
            lines.len(),
            shared_apis.len(),
            shared_task_words.len(),
            similarities.len(),
        ] != [n; 5]
        {
            return Err(schema());
        }
        for i in 0..n {
            all.push((
                cwe_rank,
                lengths[i],
                ExampleCandidate {
                    id: ids[i],
                    cwe,
                    overlap: 2 * shared_apis[i] as i64 + shared_task_words[i] as i64,
                    similarity: similarities[i],
                    cwe_rank,
                    too_short: lines[i] < 3,
                    position: 0,
                },
            ));
        }
    }
    // Shortest first within each CWE (a CWE's rows from several languages
    // merge here), then each CWE's pool size.
    all.sort_by(|(rank_a, len_a, a), (rank_b, len_b, b)| {
        rank_a
            .cmp(rank_b)
            .then(len_a.cmp(len_b))
            .then(a.id.cmp(b.id))
    });
    let mut pool: Vec<ExampleCandidate<'a>> = Vec::with_capacity(all.len());
    let mut position = 0;
    for (cwe_rank, _, mut candidate) in all {
        if pool.last().is_some_and(|last| last.cwe_rank != cwe_rank) {
            position = 0;
        }
        if position < packed::EXAMPLE_POOL_SIZE {
            candidate.position = position;
            pool.push(candidate);
        }
        position += 1;
    }
    Ok(pool)
}

/// The rank of each key, highest first, with ties sharing the better rank
/// (1 + how many keys are strictly higher), so equal evidence is not
/// ordered by accident. Sorting keeps it O(n log n): four injected CWEs
/// bring 128 candidates.
fn shared_ranks(keys: impl Iterator<Item = f64>) -> Vec<usize> {
    let keys: Vec<f64> = keys.collect();
    let mut descending = keys.clone();
    descending.sort_by(|a, b| b.total_cmp(a));
    keys.iter()
        .map(|key| descending.partition_point(|other| other > key) + 1)
        .collect()
}

/// One example candidate at the code level.
struct ExampleCandidate<'a> {
    id: &'a str,
    cwe: i64,
    /// Shared API calls (twice: the strongest signal RESCUE has) and shared
    /// task words with the request.
    overlap: i64,
    similarity: f64,
    /// Rank of the example's CWE among the injected ones (0 = best).
    cwe_rank: usize,
    /// Examples under three lines rarely show the fix.
    too_short: bool,
    /// Position in the shortest-first list of its CWE (ties go to shorter).
    position: usize,
}

/// The secure example that best fits the request, among the examples of the
/// chosen CWEs in the request's language (an example in another language
/// costs tokens and teaches the wrong idioms): RRF of the overlap ranking,
/// the semantic ranking and the CWE ranking.
fn best_example(
    caps: &dyn Capabilities,
    chosen: &[&Candidate],
    language: &str,
    request_terms: &[String],
    query: Option<&[u8]>,
) -> Result<Option<SecureExample>, PluginError> {
    let rows = example_rows(
        caps,
        chosen,
        language,
        request_terms,
        query,
        if language.is_empty() {
            EXAMPLES_OTHER_LANGUAGES_SQL
        } else {
            EXAMPLES_SQL
        },
    )?;
    let other_language_rows;
    let mut pool = example_candidates(chosen, &rows)?;
    // Same language preferred: other languages only when it has none.
    if pool.is_empty() && !language.is_empty() {
        other_language_rows = example_rows(
            caps,
            chosen,
            language,
            request_terms,
            query,
            EXAMPLES_OTHER_LANGUAGES_SQL,
        )?;
        pool = example_candidates(chosen, &other_language_rows)?;
    }
    if pool.is_empty() {
        return Ok(None);
    }

    let by_overlap = shared_ranks(pool.iter().map(|e| e.overlap as f64));
    let by_similarity = shared_ranks(pool.iter().map(|e| e.similarity));
    let by_cwe = shared_ranks(pool.iter().map(|e| -(e.cwe_rank as f64)));
    const K: f64 = 60.0;
    let fused: Vec<f64> = (0..pool.len())
        .map(|i| {
            1.0 / (K + by_overlap[i] as f64)
                + 1.0 / (K + by_similarity[i] as f64)
                + 1.0 / (K + by_cwe[i] as f64)
        })
        .collect();
    let best = (0..pool.len())
        .min_by(|&a, &b| {
            pool[a]
                .too_short
                .cmp(&pool[b].too_short)
                .then(fused[b].total_cmp(&fused[a]))
                .then(pool[a].cwe_rank.cmp(&pool[b].cwe_rank))
                .then(pool[a].position.cmp(&pool[b].position))
        })
        .expect("the pool is not empty");
    let chosen = pool.swap_remove(best);
    let rows = caps
        .query(EXAMPLE_CODE_SQL, &[SqlValue::Text(chosen.id.to_string())])
        .map_err(PluginError::Kb)?;
    match rows.first().map(Vec::as_slice) {
        Some([SqlValue::Text(language), SqlValue::Text(code)]) => Ok(Some(SecureExample {
            id: chosen.id.to_string(),
            cwe: format!("CWE-{}", chosen.cwe),
            language: language.clone(),
            code: code.clone(),
        })),
        other => Err(PluginError::Schema(format!(
            "unexpected example code row {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A fake knowledge base: answers each kind of query from fixed data
    /// (packed as the real KB packs it) and records what the plugin asked for.
    #[derive(Default)]
    struct FakeKb {
        /// (CWE, BM25) postings, as if the request had one known word.
        lexical: Vec<(i64, f64)>,
        /// Rows of the lexical query instead, when set.
        raw_lexical_rows: Option<Vec<Vec<SqlValue>>>,
        /// (CWE, similarity) of the language's weaknesses with a vector.
        semantic: Vec<(i64, f64)>,
        /// (CWE, mean similarity of its closest scenarios), by CWE.
        scenarios: Vec<(i64, f64)>,
        /// Rows of the scenario query instead, when set.
        raw_scenario_rows: Option<Vec<Vec<SqlValue>>>,
        /// (class, logit) of the classifier's model; no model when empty.
        classifier: Vec<(i64, f64)>,
        /// Rows of the classifier query instead, when set.
        raw_classifier_rows: Option<Vec<Vec<SqlValue>>>,
        /// The language's in-scope weaknesses; by default every CWE above.
        language_cwes: Option<Vec<i64>>,
        /// Rows of the hierarchy walk's query (SEMANTIC_ALL_SQL).
        walk: Vec<Vec<SqlValue>>,
        neighbours: Vec<Vec<SqlValue>>,
        examples: Vec<FakeExample>,
        other_language_examples: Vec<FakeExample>,
        /// Rows of the other-languages example query instead, when set.
        raw_other_language_rows: Option<Vec<Vec<SqlValue>>>,
        calls: Vec<String>,
        vector: Vec<f32>,
        answer: Option<String>,
        queries: RefCell<Vec<(String, Vec<SqlValue>)>>,
        prompts: RefCell<Vec<String>>,
        embedded: RefCell<Vec<String>>,
    }

    impl Capabilities for FakeKb {
        fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, String> {
            self.queries
                .borrow_mut()
                .push((sql.to_string(), params.to_vec()));
            Ok(if sql == LEXICAL_SQL {
                self.raw_lexical_rows.clone().unwrap_or_else(|| {
                    vec![vec![SqlValue::Blob(text::packed::write_postings(
                        &self.lexical,
                    ))]]
                })
            } else if sql == LANGUAGE_SQL {
                let mut cwes = self.language_cwes.clone().unwrap_or_else(|| {
                    self.lexical
                        .iter()
                        .chain(&self.semantic)
                        .chain(&self.scenarios)
                        .chain(&self.classifier)
                        .map(|(id, _)| *id)
                        .filter(|id| *id != 0)
                        .collect()
                });
                cwes.sort();
                cwes.dedup();
                // As in the KB, only the language's weaknesses have vectors.
                let mut semantic: Vec<(i64, f64)> = self
                    .semantic
                    .iter()
                    .filter(|(id, _)| cwes.contains(id))
                    .copied()
                    .collect();
                semantic.sort_by_key(|(id, _)| *id);
                let scores = match &params[0] {
                    SqlValue::Null => SqlValue::Null,
                    _ => {
                        SqlValue::Blob(text::packed::write_scores(semantic.iter().map(|(_, s)| *s)))
                    }
                };
                vec![vec![
                    SqlValue::Blob(text::packed::write_ids(cwes)),
                    SqlValue::Blob(text::packed::write_ids(semantic.iter().map(|(id, _)| *id))),
                    scores,
                ]]
            } else if sql == SCENARIO_SQL {
                assert!(matches!(params[0], SqlValue::Blob(_)), "a query vector");
                assert_eq!(params[1], SqlValue::Integer(3), "SCENARIO_NEIGHBOURS");
                if let Some(rows) = &self.raw_scenario_rows {
                    return Ok(rows.clone());
                }
                vec![vec![SqlValue::Blob(text::packed::write_postings(
                    &self.scenarios,
                ))]]
            } else if sql == CLASSIFIER_SQL {
                assert!(matches!(params[0], SqlValue::Blob(_)), "a query vector");
                if let Some(rows) = &self.raw_classifier_rows {
                    return Ok(rows.clone());
                }
                if self.classifier.is_empty() {
                    return Ok(Vec::new());
                }
                // Biases carry the logits; the weights score 0.
                vec![vec![
                    SqlValue::Blob(text::packed::write_ids(
                        self.classifier.iter().map(|(id, _)| *id),
                    )),
                    SqlValue::Blob(text::packed::write_scores(
                        self.classifier.iter().map(|(_, logit)| *logit),
                    )),
                    SqlValue::Blob(text::packed::write_scores(
                        self.classifier.iter().map(|_| 0.0),
                    )),
                ]]
            } else if sql == SEMANTIC_ALL_SQL {
                self.walk.clone()
            } else if sql == NEIGHBOURS_SQL {
                self.neighbours.clone()
            } else if sql == GUIDELINE_SQL {
                per_id(params, |id| {
                    vec![
                        SqlValue::Text(format!("name of {id}")),
                        SqlValue::Text(format!("- guideline of {id}")),
                    ]
                })
            } else if sql == NAMES_SQL {
                per_id(params, |id| vec![SqlValue::Text(format!("name of {id}"))])
            } else if sql == EXAMPLE_CODE_SQL {
                let SqlValue::Text(id) = &params[0] else {
                    panic!("code of {params:?}")
                };
                vec![vec![
                    SqlValue::Text("python".into()),
                    SqlValue::Text(format!("# code of {id}")),
                ]]
            } else if sql == EXAMPLES_OTHER_LANGUAGES_SQL {
                self.raw_other_language_rows
                    .clone()
                    .unwrap_or_else(|| FakeExample::rows(&self.other_language_examples, params))
            } else if sql == EXAMPLES_SQL {
                FakeExample::rows(&self.examples, params)
            } else {
                panic!("unexpected query {sql}")
            })
        }
        fn extract_calls(&self, _language: &str, _source: &str) -> Vec<String> {
            self.calls.clone()
        }
        fn embed(&self, text: &str) -> Vec<f32> {
            self.embedded.borrow_mut().push(text.to_string());
            self.vector.clone()
        }
        fn complete(&self, prompt: &str, _max_tokens: u32) -> Result<String, String> {
            self.prompts.borrow_mut().push(prompt.to_string());
            self.answer.clone().ok_or_else(|| "unavailable".to_string())
        }
        fn debug(&self, _message: &str) {}
        fn warn(&self, _message: &str) {}
    }

    /// One row per id of the JSON array in `params[0]`: the id, then `rest`.
    fn per_id(params: &[SqlValue], rest: impl Fn(&str) -> Vec<SqlValue>) -> Vec<Vec<SqlValue>> {
        let SqlValue::Text(ids) = &params[0] else {
            panic!("a JSON array of ids expected, got {params:?}")
        };
        ids.trim_matches(['[', ']'])
            .split(',')
            .map(|id| {
                let mut row = vec![SqlValue::Integer(id.parse().unwrap())];
                row.extend(rest(id));
                row
            })
            .collect()
    }

    fn lexical(id: i64, bm25: f64) -> (i64, f64) {
        (id, bm25)
    }

    fn semantic(id: i64, similarity: f64) -> (i64, f64) {
        (id, similarity)
    }

    /// An example candidate; its rows compare word sets as the KB does.
    #[derive(Clone)]
    struct FakeExample {
        id: &'static str,
        apis: &'static str,
        intro: &'static str,
        lines: i64,
        similarity: f64,
    }

    impl FakeExample {
        /// The pool row of the first chosen CWE, holding `examples` in
        /// their order (shortest first), its columns packed as the KB packs
        /// them, the overlaps and similarities computed as the host does.
        fn rows(examples: &[FakeExample], params: &[SqlValue]) -> Vec<Vec<SqlValue>> {
            let SqlValue::Blob(terms) = &params[3] else {
                panic!("a term set expected, got {params:?}")
            };
            if examples.is_empty() {
                return Vec::new();
            }
            let overlaps = |text: fn(&FakeExample) -> &str| {
                SqlValue::Blob(text::packed::write_counts(examples.iter().map(|e| {
                    text::shared_words(&text::word_set(text(e)), terms).expect("word sets")
                })))
            };
            let ids: Vec<&str> = examples.iter().map(|e| e.id).collect();
            vec![vec![
                SqlValue::Integer(0),
                SqlValue::Text(ids.join("\n")),
                SqlValue::Blob(text::packed::write_counts(0..examples.len())),
                SqlValue::Blob(text::packed::write_counts(
                    examples.iter().map(|e| e.lines as usize),
                )),
                overlaps(|e| e.apis),
                overlaps(|e| e.intro),
                SqlValue::Blob(text::packed::write_scores(
                    examples.iter().map(|e| e.similarity),
                )),
            ]]
        }
    }

    fn example_row(
        id: &'static str,
        apis: &'static str,
        intro: &'static str,
        lines: i64,
        similarity: f64,
    ) -> FakeExample {
        FakeExample {
            id,
            apis,
            intro,
            lines,
            similarity,
        }
    }

    fn params() -> RetrievalParams {
        RetrievalParams {
            mode: Mode::Fast,
            top_k: 2,
            lexical_threshold: 3.0,
            semantic_threshold: 0.6,
            scenario_threshold: 0.6,
            classifier_threshold: 0.1,
            ordinary_margin: -2.0,
            fusion: Fusion::ScoreMargin,
            rrf_k: 60,
            score_fusion_base: 2.0,
            rank_cut: 10,
            lexical_weight: 1.0,
            semantic_weight: 1.0,
            scenario_weight: 1.0,
            classifier_weight: 1.0,
            hierarchy_walk: false,
            max_chars: 4000,
            cwe_scope: vec![],
            explain: true,
        }
    }

    fn facets(task: &str) -> RequestFacets {
        RequestFacets {
            task: task.into(),
            code_blocks: vec![],
            language: Some("python".into()),
        }
    }

    /// Runs retrieval and returns what it injects; fails if nothing is.
    fn augmented(kb: &FakeKb, facets: &RequestFacets, params: &RetrievalParams) -> Augmentation {
        augment(kb, facets, params)
            .unwrap()
            .augmentation
            .expect("augmented")
    }

    fn ids(hits: &[CweHit]) -> Vec<&str> {
        hits.iter().map(|c| c.id.as_str()).collect()
    }

    // "build sql query": 3 terms, so a BM25 of 12 normalises to 6.9.
    const TASK: &str = "build sql query";

    #[test]
    fn languages_are_named_as_the_catalog_names_them() {
        for (asked, catalog) in [
            ("cpp", "c++"),
            ("TypeScript", "javascript"),
            ("golang", "go"),
            ("csharp", "c#"),
            ("php", "php"),
            ("rust", "rust"),
        ] {
            assert_eq!(catalog_language(asked), catalog, "{asked}");
        }
    }

    #[test]
    fn keeps_top_k_above_a_facet_threshold() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0), lexical(20, 9.0), lexical(79, 8.0)],
            ..FakeKb::default()
        };
        let out = augment(&kb, &facets(TASK), &params()).unwrap();
        let a = out.augmentation.unwrap();
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-20"]);
        assert!(a.text.contains("guideline of 89"));
        assert!(!a.text.contains("guideline of 79"));
        let lexical = a.cwes[0].lexical.unwrap();
        assert_eq!(lexical.rank, 1);
        assert!((lexical.score - 12.0 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(a.cwes[0].semantic, None);
        assert_eq!(ids(&out.candidates), ["CWE-89", "CWE-20", "CWE-79"]);
        // Names are read for what is shown: the injected CWEs with their
        // guidelines, the ranking (explain) in one query of its own.
        assert_eq!(a.cwes[0].name, "name of 89");
        assert_eq!(out.candidates[2].name, "name of 79");
        assert!(kb.queries.borrow().iter().any(|(sql, _)| sql == NAMES_SQL));
    }

    #[test]
    fn without_explain_there_is_no_ranking_and_no_names_query() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0), lexical(79, 8.0)],
            ..FakeKb::default()
        };
        let mut p = params();
        p.explain = false;
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        assert!(out.candidates.is_empty());
        let a = out.augmentation.expect("augmented");
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-79"]);
        assert_eq!(a.cwes[1].name, "name of 79");
        assert!(kb.queries.borrow().iter().all(|(sql, _)| sql != NAMES_SQL));
    }

    #[test]
    fn nothing_above_any_threshold_means_no_augmentation_but_a_ranking() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 4.9)],
            semantic: vec![semantic(79, 0.5)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let out = augment(&kb, &facets(TASK), &params()).unwrap();
        assert!(out.augmentation.is_none());
        assert_eq!(ids(&out.candidates), ["CWE-89", "CWE-79"]);
    }

    #[test]
    fn the_facets_are_fused_by_thresholded_reciprocal_rank() {
        // 79 is second in both facets and above both thresholds: 2/(60+2)
        // beats 89's 1/(60+1) from the lexical facet alone (its semantic
        // similarity is under the threshold).
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0), lexical(79, 11.0)],
            semantic: vec![semantic(20, 0.9), semantic(79, 0.8), semantic(89, 0.55)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.fusion = Fusion::ReciprocalRank;
        p.top_k = 4;
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        let a = out.augmentation.unwrap();
        // 20 (semantic rank 1) and 89 (lexical rank 1) tie at 1/61: the
        // better lexical rank breaks the tie.
        assert_eq!(ids(&a.cwes), ["CWE-79", "CWE-89", "CWE-20"]);
        let xss = &a.cwes[0];
        assert!((xss.score - 2.0 / 62.0).abs() < 1e-12);
        assert_eq!(xss.semantic.unwrap().rank, 2);
        // Before thresholds, 89's weak semantic rank counts too.
        assert_eq!(ids(&out.candidates), ["CWE-89", "CWE-79", "CWE-20"]);
        // Facet weights and the rank cut take effect.
        p.semantic_weight = 0.0;
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-79"]);
        p.semantic_weight = 1.0;
        p.rank_cut = 1;
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-20"]);
    }

    #[test]
    fn score_margin_fusion_tells_a_clear_winner_from_a_near_tie() {
        // 89 leads the lexical facet by far and is third in the semantic one
        // by a hair; 79 is a distant second lexically and first semantically
        // by the same hair. Ranks alone prefer 79 (1/62 + 1/61 against
        // 1/61 + 1/63); the margins prefer 89.
        let kb = FakeKb {
            lexical: vec![
                lexical(89, 20.0),
                lexical(79, 6.0),
                lexical(22, 5.9),
                lexical(78, 5.8),
            ],
            semantic: vec![
                semantic(79, 0.80),
                semantic(22, 0.79),
                semantic(89, 0.78),
                semantic(78, 0.20),
            ],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.top_k = 4;
        p.lexical_threshold = 0.0;
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        let a = out.augmentation.unwrap();
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-79", "CWE-22", "CWE-78"]);
        assert_eq!(
            ids(&out.candidates),
            ["CWE-89", "CWE-79", "CWE-22", "CWE-78"]
        );
        // Each vote is worth the base plus a margin of 0 to sqrt(2 x 4):
        // 78 is the floor of both facets, and the semantic threshold (0.6)
        // keeps its second vote out of the injected score.
        let score = |id: &str| a.cwes.iter().find(|c| c.id == id).unwrap().score;
        assert!((score("CWE-78") - 2.0).abs() < 1e-9, "{}", score("CWE-78"));
        assert!(score("CWE-89") > 8.0 && score("CWE-89") < 4.0 + 2.0 * 8f64.sqrt());
        // The same request under the paper's fusion.
        p.fusion = Fusion::ReciprocalRank;
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes)[..2], ["CWE-79", "CWE-89"]);
    }

    #[test]
    fn the_semantic_query_is_the_lexical_terms() {
        let kb = FakeKb {
            vector: vec![0.0; 4],
            ..FakeKb::default()
        };
        augment(
            &kb,
            &facets("Write a Python function that builds an SQL query"),
            &params(),
        )
        .unwrap();
        assert_eq!(kb.embedded.borrow().as_slice(), ["builds sql query"]);
        // A zero vector means no semantic signal: nothing to score.
        let queries = kb.queries.borrow();
        let (_, language_params) = queries
            .iter()
            .find(|(sql, _)| sql == LANGUAGE_SQL)
            .expect("the language's weaknesses are read");
        assert_eq!(language_params[0], SqlValue::Null);
    }

    #[test]
    fn a_one_word_query_reaches_only_the_lexical_facet() {
        let kb = FakeKb {
            semantic: vec![semantic(352, 0.9)],
            scenarios: vec![(352, 0.9)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let out = augment(
            &kb,
            &facets("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\""),
            &params(),
        )
        .unwrap();
        assert!(out.augmentation.is_none() && out.candidates.is_empty());
        let queries = kb.queries.borrow();
        assert!(queries.iter().all(|(sql, _)| sql != SCENARIO_SQL));
        let (_, language_params) = queries
            .iter()
            .find(|(sql, _)| sql == LANGUAGE_SQL)
            .expect("the language's weaknesses are read");
        assert_eq!(language_params[0], SqlValue::Null, "no query vector");
        drop(queries);
        assert!(kb.embedded.borrow().is_empty(), "nothing embedded");
        // Two words are a query.
        let out = augment(&kb, &facets("add users"), &params()).unwrap();
        assert_eq!(ids(&out.augmentation.unwrap().cwes), ["CWE-352"]);
    }

    #[test]
    fn scores_are_normalised_by_query_length() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0)],
            ..FakeKb::default()
        };
        assert!(
            augment(&kb, &facets(TASK), &params())
                .unwrap()
                .augmentation
                .is_some()
        );
        let long_task: Vec<String> = (0..25).map(|i| format!("word{i}x")).collect();
        assert!(
            augment(&kb, &facets(&long_task.join(" ")), &params())
                .unwrap()
                .augmentation
                .is_none()
        );
    }

    #[test]
    fn apis_from_code_join_the_query_and_language_filters() {
        let kb = FakeKb {
            calls: vec!["cursor.execute".into()],
            ..FakeKb::default()
        };
        let mut f = facets("fix this");
        f.code_blocks.push(crate::CodeBlock {
            language: None,
            text: "cursor.execute(q)".into(),
        });
        augment(&kb, &f, &params()).unwrap();
        let queries = kb.queries.borrow();
        let sent = |which: &str| {
            &queries
                .iter()
                .find(|(sql, _)| sql == which)
                .expect("queried")
                .1
        };
        assert_eq!(
            sent(LEXICAL_SQL)[0],
            SqlValue::Text(r#"["fix","cursor","execute"]"#.into())
        );
        assert_eq!(sent(LANGUAGE_SQL)[1], SqlValue::Text("python".into()));
    }

    #[test]
    fn weaknesses_outside_the_language_are_no_candidates() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0), lexical(79, 11.0)],
            semantic: vec![semantic(79, 0.9), semantic(89, 0.8)],
            language_cwes: Some(vec![89]),
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let out = augment(&kb, &facets(TASK), &params()).unwrap();
        assert_eq!(ids(&out.candidates), ["CWE-89"]);
        let only = &out.candidates[0];
        assert_eq!(only.lexical.unwrap().rank, 1);
        assert_eq!(only.semantic.unwrap().rank, 1);
    }

    #[test]
    fn the_cwe_scope_reaches_both_facets() {
        let kb = FakeKb {
            lexical: vec![lexical(20, 12.0), lexical(89, 11.0)],
            semantic: vec![semantic(20, 0.9), semantic(79, 0.8)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.cwe_scope = vec![89, 79];
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        assert_eq!(ids(&out.candidates), ["CWE-89", "CWE-79"]);
        assert_eq!(out.candidates[0].lexical.unwrap().rank, 1);
        assert_eq!(out.candidates[1].semantic.unwrap().rank, 1);
    }

    #[test]
    fn a_cwe_whose_scenarios_resemble_the_task_is_found_without_shared_words() {
        // Neither the lexical nor the semantic facet knows CWE-918; its
        // scenarios resemble the task. CWE-79's are further off.
        let kb = FakeKb {
            semantic: vec![semantic(79, 0.3)],
            scenarios: vec![(79, 0.42), (918, 0.7)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets("fetch the page at the link"), &params());
        assert_eq!(ids(&a.cwes), ["CWE-918"]);
        let scenario = a.cwes[0].scenario.unwrap();
        assert_eq!(scenario.rank, 1);
        assert_eq!(scenario.score, 0.7);
        assert!(a.cwes[0].lexical.is_none() && a.cwes[0].semantic.is_none());
        // CWE-79 (scenarios 0.42, semantic 0.3) is below both thresholds:
        // not injected, though the ranking before thresholds, where two
        // facets vote for it, puts it first.
        let out = augment(&kb, &facets("fetch the page at the link"), &params()).unwrap();
        assert_eq!(ids(&out.candidates), ["CWE-79", "CWE-918"]);
        assert_eq!(out.candidates[0].scenario.unwrap().rank, 2);
    }

    #[test]
    fn a_request_closer_to_ordinary_tasks_than_to_any_weakness_is_not_augmented() {
        let kb = |ordinary: f64| FakeKb {
            lexical: vec![lexical(89, 12.0)],
            scenarios: vec![(0, ordinary), (89, 0.7), (79, 0.5)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.ordinary_margin = -0.05;
        // Best scenario 0.7 against ordinary 0.8: a gap of -0.1, under the margin.
        let out = augment(&kb(0.8), &facets(TASK), &p).unwrap();
        assert!(out.augmentation.is_none());
        assert_eq!(ids(&out.candidates)[0], "CWE-89", "the ranking stays");
        assert!(
            out.candidates.iter().all(|c| c.id != "CWE-0"),
            "ordinary tasks are no candidate"
        );
        // Ordinary 0.72: a gap of -0.02, over the margin.
        let a = augmented(&kb(0.72), &facets(TASK), &p);
        assert_eq!(ids(&a.cwes)[0], "CWE-89");
        // Without ordinary tasks in the KB there is no gate.
        let mut without = kb(0.8);
        without.scenarios.remove(0);
        assert!(
            augment(&without, &facets(TASK), &p)
                .unwrap()
                .augmentation
                .is_some()
        );
        // The gate off (-2): augmented whatever the gap.
        p.ordinary_margin = -2.0;
        assert!(
            augment(&kb(0.8), &facets(TASK), &p)
                .unwrap()
                .augmentation
                .is_some()
        );
    }

    #[test]
    fn the_scenario_facet_respects_language_and_policy_and_can_be_off() {
        let kb = FakeKb {
            scenarios: vec![(78, 0.9), (89, 0.8), (125, 0.85)],
            language_cwes: Some(vec![78, 89]),
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.cwe_scope = vec![89, 125];
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        // 125 is not a weakness of the language, 78 not in the policy scope.
        assert_eq!(ids(&out.candidates), ["CWE-89"]);

        p.scenario_weight = 0.0;
        kb.queries.borrow_mut().clear();
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        assert!(out.candidates.is_empty());
        assert!(
            kb.queries
                .borrow()
                .iter()
                .all(|(sql, _)| sql != SCENARIO_SQL),
            "a facet that cannot count is not computed"
        );
    }

    #[test]
    fn the_classifier_ranks_weaknesses_by_their_softmax_probability() {
        // Logits: ordinary tasks 1, CWE-918 3, CWE-79 2, CWE-89 0; the
        // scenario facet votes for CWE-352, which triggers augmentation.
        let kb = FakeKb {
            classifier: vec![(0, 1.0), (79, 2.0), (89, 0.0), (918, 3.0)],
            scenarios: vec![(352, 0.65)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let total: f64 = [1.0f64, 2.0, 0.0, 3.0].iter().map(|l| l.exp()).sum();
        let mut p = params();
        p.top_k = 4;
        let a = augmented(&kb, &facets("fetch the page at the link"), &p);
        // Above the 0.1 threshold: 918 (0.64) and 79 (0.24); not 89 (0.03).
        assert_eq!(ids(&a.cwes), ["CWE-918", "CWE-79", "CWE-352"]);
        let top = a.cwes[0].classifier.unwrap();
        assert_eq!(top.rank, 1);
        assert!((top.score - 3f64.exp() / total).abs() < 1e-12, "{top:?}");
        assert!(a.cwes[0].scenario.is_none() && a.cwes[0].lexical.is_none());
        let out = augment(&kb, &facets("fetch the page at the link"), &params()).unwrap();
        assert_eq!(
            ids(&out.candidates),
            ["CWE-918", "CWE-79", "CWE-352", "CWE-89"]
        );
        assert!(
            out.candidates.iter().all(|c| c.id != "CWE-0"),
            "ordinary tasks are no candidate"
        );
        assert_eq!(out.candidates[3].classifier.unwrap().rank, 3);
    }

    #[test]
    fn the_classifier_alone_never_triggers_augmentation() {
        // CWE-918 takes 88% of the probability, far above the threshold,
        // but no other facet votes: the request is ranked, not augmented.
        let kb = FakeKb {
            classifier: vec![(0, 0.0), (79, 1.0), (918, 3.0)],
            scenarios: vec![(918, 0.5)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let out = augment(&kb, &facets("fetch the page at the link"), &params()).unwrap();
        assert!(out.augmentation.is_none());
        assert_eq!(ids(&out.candidates), ["CWE-918", "CWE-79"]);
        assert!(out.candidates[0].classifier.unwrap().score > 0.8);
        // A scenario score over its threshold (0.6) is a trigger; the
        // classifier's vote then counts for 79 too.
        let kb = FakeKb {
            scenarios: vec![(918, 0.65)],
            ..kb
        };
        let a = augmented(&kb, &facets("fetch the page at the link"), &params());
        assert_eq!(ids(&a.cwes), ["CWE-918", "CWE-79"]);
    }

    #[test]
    fn a_request_the_classifier_reads_as_ordinary_gets_no_classifier_vote() {
        // The ordinary class takes almost all of the probability: every
        // weakness stays under the threshold, though 79 ranks first.
        let kb = FakeKb {
            classifier: vec![(0, 6.0), (79, 2.0), (89, 1.0)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let out = augment(&kb, &facets(TASK), &params()).unwrap();
        assert!(out.augmentation.is_none());
        assert_eq!(ids(&out.candidates), ["CWE-79", "CWE-89"]);
        assert!(out.candidates[0].classifier.unwrap().score < 0.02);
    }

    #[test]
    fn the_classifier_facet_respects_language_and_policy_and_can_be_off() {
        let kb = FakeKb {
            classifier: vec![(0, 0.0), (78, 3.0), (89, 2.0), (125, 2.5)],
            language_cwes: Some(vec![78, 89]),
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.cwe_scope = vec![89, 125];
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        // 125 is not a weakness of the language, 78 not in the policy scope;
        // both still share the probability (a softmax over every class).
        assert_eq!(ids(&out.candidates), ["CWE-89"]);
        let total: f64 = [0.0f64, 3.0, 2.0, 2.5].iter().map(|l| l.exp()).sum();
        let score = out.candidates[0].classifier.unwrap().score;
        assert!((score - 2f64.exp() / total).abs() < 1e-12);

        p.classifier_weight = 0.0;
        kb.queries.borrow_mut().clear();
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        assert!(out.candidates.is_empty());
        assert!(
            kb.queries
                .borrow()
                .iter()
                .all(|(sql, _)| sql != CLASSIFIER_SQL),
            "a facet that cannot count is not computed"
        );
    }

    #[test]
    fn a_kb_without_a_classifier_or_with_a_broken_one() {
        // No model row: the other facets work as before.
        let kb = FakeKb {
            scenarios: vec![(918, 0.7)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets("fetch the page at the link"), &params());
        assert_eq!(ids(&a.cwes), ["CWE-918"]);
        assert!(a.cwes[0].classifier.is_none());
        // A model whose columns disagree is a schema error, not a guess.
        let kb = FakeKb {
            raw_classifier_rows: Some(vec![vec![
                SqlValue::Blob(text::packed::write_ids([0, 89])),
                SqlValue::Blob(text::packed::write_scores([0.0])),
                SqlValue::Blob(text::packed::write_scores([0.0, 0.0])),
            ]]),
            ..kb
        };
        let err = augment(&kb, &facets("fetch the page at the link"), &params()).unwrap_err();
        assert!(
            matches!(&err, PluginError::Schema(m) if m.contains("2 classes, 1 biases")),
            "{err:?}"
        );
    }

    #[test]
    fn a_parent_or_child_stands_in_for_a_strong_hit_outside_the_kb() {
        let walk_row = |id: i64, sim: f64, in_scope: i64| {
            vec![
                SqlValue::Integer(id),
                SqlValue::Real(sim),
                SqlValue::Integer(in_scope),
            ]
        };
        let kb = FakeKb {
            walk: vec![walk_row(522, 0.9, 0), walk_row(79, 0.7, 1)],
            neighbours: vec![vec![SqlValue::Integer(256)]],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let mut p = params();
        p.hierarchy_walk = true;
        let a = augmented(&kb, &facets("store the password"), &p);
        assert_eq!(ids(&a.cwes), ["CWE-256", "CWE-79"]);
        assert_eq!(a.cwes[0].via.as_deref(), Some("CWE-522"));
        assert_eq!(a.cwes[0].semantic.unwrap().rank, 1);
        // Without the walk, the out-of-scope hit is simply not a candidate.
        p.hierarchy_walk = false;
        let kb = FakeKb {
            semantic: vec![semantic(79, 0.7)],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets("store the password"), &p);
        assert_eq!(ids(&a.cwes), ["CWE-79"]);
        assert_eq!(a.cwes[0].semantic.unwrap().rank, 1);
    }

    #[test]
    fn malformed_rows_are_a_schema_error() {
        for rows in [
            vec![vec![SqlValue::Null]],
            vec![vec![SqlValue::Blob(vec![0; 13])]],
        ] {
            let kb = FakeKb {
                raw_lexical_rows: Some(rows),
                ..FakeKb::default()
            };
            assert!(matches!(
                augment(&kb, &facets("sql query"), &params()),
                Err(PluginError::Schema(_))
            ));
        }
        for rows in [
            vec![],
            vec![vec![SqlValue::Null]],
            vec![vec![SqlValue::Blob(vec![0; 13])]],
            vec![vec![SqlValue::Blob(vec![]), SqlValue::Blob(vec![])]],
        ] {
            let kb = FakeKb {
                raw_scenario_rows: Some(rows.clone()),
                vector: vec![1.0; 4],
                ..FakeKb::default()
            };
            assert!(
                matches!(
                    augment(&kb, &facets("sql query"), &params()),
                    Err(PluginError::Schema(_))
                ),
                "{rows:?}"
            );
        }
    }

    #[test]
    fn the_example_that_fits_the_request_is_included() {
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0)],
            examples: vec![
                example_row("ex:short", "sqlite3.connect", "Open a database", 1, 0.9),
                example_row(
                    "ex:fits",
                    "cur.execute,fetchall",
                    "Run an SQL query for a user name",
                    3,
                    0.7,
                ),
                example_row("ex:other", "print", "Add numbers", 3, 0.1),
            ],
            vector: vec![1.0; 4],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets("sql query execute"), &params());
        assert_eq!(a.example_id.as_deref(), Some("ex:fits"));
        assert!(a.text.contains("# code of ex:fits"));
    }

    #[test]
    fn the_request_language_is_preferred_and_others_stand_in() {
        let same = example_row("ex:python", "execute", "Run a query", 3, 0.5);
        let other = example_row("ex:c", "execute", "Run a query", 3, 0.9);
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0)],
            examples: vec![same],
            other_language_examples: vec![other.clone()],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets(TASK), &params());
        assert_eq!(a.example_id.as_deref(), Some("ex:python"));
        assert!(
            kb.queries
                .borrow()
                .iter()
                .all(|(sql, _)| sql != EXAMPLES_OTHER_LANGUAGES_SQL),
            "no other-language query when the language has an example"
        );
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0)],
            other_language_examples: vec![other],
            ..FakeKb::default()
        };
        let a = augmented(&kb, &facets(TASK), &params());
        assert_eq!(a.example_id.as_deref(), Some("ex:c"));
    }

    #[test]
    fn full_mode_question_names_the_language_when_known() {
        let mut request = facets("look up a user");
        request.language = None;
        assert!(full_mode_question(&request).ends_with("anything else.\n\nTask:\nlook up a user"));
        request.language = Some("python".into());
        let question = full_mode_question(&request);
        assert!(
            question.ends_with("else.\n\nLanguage: python\n\nTask:\nlook up a user"),
            "{question}"
        );
    }

    #[test]
    fn full_mode_adds_the_draft_apis_and_the_causes() {
        let kb = FakeKb {
            calls: vec!["cursor.execute".into()],
            vector: vec![1.0; 4],
            answer: Some(
                "CAUSES: untrusted input concatenated into queries (CWE-89).\n```python\ncur.execute(q)\n```\n"
                    .into(),
            ),
            ..FakeKb::default()
        };
        let mut p = params();
        p.mode = Mode::Full;
        augment(&kb, &facets("look up a user"), &p).unwrap();
        assert!(kb.prompts.borrow()[0].ends_with("look up a user"));
        let queries = kb.queries.borrow();
        let (_, lexical_params) = queries
            .iter()
            .find(|(sql, _)| sql == LEXICAL_SQL)
            .expect("lexical query");
        assert_eq!(
            lexical_params[0],
            SqlValue::Text(r#"["look","user","cursor","execute"]"#.into())
        );
        let embedded = kb.embedded.borrow();
        assert!(
            embedded[0].starts_with("look user cursor execute untrusted concatenated queries"),
            "{embedded:?}"
        );
        // Fast mode never calls the model; a failing call degrades to fast.
        drop(queries);
        drop(embedded);
        let kb = FakeKb::default();
        augment(&kb, &facets("look up a user"), &params()).unwrap();
        assert!(kb.prompts.borrow().is_empty());
        augment(&kb, &facets("look up a user"), &p).unwrap();
        assert_eq!(kb.prompts.borrow().len(), 1);
    }

    #[test]
    fn insights_are_parsed_from_loose_answers() {
        let i = parse_insight("CAUSES: a\nb\n```c\nstrcpy(d, s);\n```\ntrailing");
        assert_eq!(i.causes, "a b");
        assert_eq!(i.draft, Some((Some("c".into()), "strcpy(d, s);\n".into())));
        let i = parse_insight("no structure at all");
        assert_eq!(i.causes, "no structure at all");
        assert_eq!(i.draft, None);
        let i = parse_insight("```\nunclosed(x)\n");
        assert_eq!(i.draft, Some((None, "unclosed(x)\n".into())));
        assert_eq!((i.risk, i.named.as_slice()), (None, &[][..]));
    }

    #[test]
    fn the_verdict_and_the_named_cwes_are_read_from_the_answer() {
        let i = parse_insight(
            "RISK: yes\nCAUSES: the query is concatenated (CWE-89/CWE-79), cwe 22 and CWE_78; \
             again CWE-89, not CWE- or CWEx.\n```python\nrun(CWE-1)\n```",
        );
        assert_eq!(i.risk, Some(true));
        assert_eq!(i.named, [89, 79, 22, 78]);
        assert!(i.causes.starts_with("the query") && !i.causes.contains("RISK"));
        for (answer, risk) in [
            ("**Risk:** No.\nCAUSES: none", Some(false)),
            ("risk: YES, because\nCAUSES: CWE-20", Some(true)),
            ("RISK: maybe\nCAUSES: CWE-20", None),
            ("CAUSES: CWE-20\nRISK: no", Some(false)),
        ] {
            assert_eq!(parse_insight(answer).risk, risk, "{answer}");
        }
    }

    #[test]
    fn in_full_mode_the_named_cwes_come_first_and_the_verdict_decides() {
        let kb_answering = |answer: &str| FakeKb {
            lexical: vec![lexical(79, 12.0)],
            language_cwes: Some(vec![20, 22, 79, 89]),
            neighbours: vec![vec![SqlValue::Integer(20)]],
            answer: Some(answer.into()),
            ..FakeKb::default()
        };
        let mut p = params();
        p.mode = Mode::Full;
        p.top_k = 3;

        // The model names 89 and 22 first; the lexical facet's 79 follows.
        let kb = kb_answering("RISK: yes\nCAUSES: CWE-89, then CWE-22.");
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        let a = out.augmentation.expect("augmented");
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-22", "CWE-79"]);
        assert_eq!(a.cwes[0].named.map(|n| n.rank), Some(1));
        assert_eq!(a.cwes[2].named, None);
        assert_eq!(ids(&out.candidates), ["CWE-89", "CWE-22", "CWE-79"]);

        // A weakness outside the KB is stood in for by its in-scope
        // neighbours, as the hierarchy walk does.
        let kb = kb_answering("RISK: yes\nCAUSES: log forging (CWE-117).");
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes), ["CWE-20", "CWE-79"]);
        assert_eq!(a.cwes[0].via.as_deref(), Some("CWE-117"));

        // "RISK: no" keeps the request as it is, whatever the facets say.
        let kb = kb_answering("RISK: no\nCAUSES: none (not CWE-89).");
        let out = augment(&kb, &facets(TASK), &p).unwrap();
        assert!(out.augmentation.is_none());
        assert_eq!(ids(&out.candidates)[0], "CWE-89", "still ranked for eval");

        // No verdict: the facets decide whether, the names still come first.
        let kb = kb_answering("CAUSES: CWE-89.");
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes), ["CWE-89", "CWE-79"]);

        // A "yes" whose names are all outside the language and scope falls
        // back to the facets' own trigger.
        let kb = FakeKb {
            neighbours: vec![],
            ..kb_answering("RISK: yes\nCAUSES: CWE-416.")
        };
        let a = augmented(&kb, &facets(TASK), &p);
        assert_eq!(ids(&a.cwes), ["CWE-79"]);
        let kb = FakeKb {
            lexical: vec![],
            neighbours: vec![],
            ..kb_answering("RISK: yes\nCAUSES: CWE-416.")
        };
        assert!(
            augment(&kb, &facets(TASK), &p)
                .unwrap()
                .augmentation
                .is_none()
        );
    }

    #[test]
    fn ties_share_the_better_rank() {
        assert_eq!(
            shared_ranks([0.5, 2.0, 0.5, -1.0, 2.0].into_iter()),
            [3, 1, 3, 5, 1]
        );
        assert!(shared_ranks(std::iter::empty()).is_empty());
    }

    #[test]
    fn a_cwes_pools_in_other_languages_merge_shortest_first_up_to_the_pool_size() {
        use text::packed;
        let pool_row = |language: &str, lengths: Vec<usize>| {
            let n = lengths.len();
            let ids: Vec<String> = lengths.iter().map(|l| format!("{language}:{l}")).collect();
            vec![
                SqlValue::Integer(0),
                SqlValue::Text(ids.join("\n")),
                SqlValue::Blob(packed::write_counts(lengths)),
                SqlValue::Blob(packed::write_counts(vec![5; n])),
                SqlValue::Blob(packed::write_counts(vec![0; n])),
                SqlValue::Blob(packed::write_counts(vec![0; n])),
                SqlValue::Null,
            ]
        };
        let kb = FakeKb {
            lexical: vec![lexical(89, 12.0)],
            raw_other_language_rows: Some(vec![
                pool_row("c", (100..140).collect()),
                pool_row("go", vec![7, 120]),
            ]),
            ..FakeKb::default()
        };
        let chosen = Candidate {
            id: 89,
            lexical: None,
            semantic: None,
            scenario: None,
            classifier: None,
            named: None,
            via: None,
        };
        let rows = example_rows(
            &kb,
            &[&chosen],
            "python",
            &[],
            None,
            EXAMPLES_OTHER_LANGUAGES_SQL,
        )
        .unwrap();
        let pool = example_candidates(&[&chosen], &rows).unwrap();
        assert_eq!(pool.len(), text::packed::EXAMPLE_POOL_SIZE);
        let ids: Vec<&str> = pool.iter().map(|e| e.id).collect();
        assert_eq!(&ids[..3], ["go:7", "c:100", "c:101"]);
        assert!(ids.contains(&"go:120") && !ids.contains(&"c:139"));
        assert!(pool.iter().enumerate().all(|(i, e)| e.position == i));
        // Without examples in the request's language, the merged pool is
        // where the example comes from: the shortest, all else equal.
        let a = augmented(&kb, &facets(TASK), &params());
        assert_eq!(a.example_id.as_deref(), Some("go:7"));
    }
}
