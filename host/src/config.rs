//! Configuration: a TOML file whose unknown keys are an error, with defaults
//! that run on the shipped kb.sqlite without any file at all. Command-line
//! flags and `RESCUE_*` environment variables override the file (see `cli`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// Where requests go. Empty means the defaults: OpenAI's API for OpenAI
    /// routes and Anthropic's for `/v1/messages`.
    pub upstreams: Vec<UpstreamConfig>,
    pub kb: KbConfig,
    pub plugin: PluginConfig,
    pub augment: AugmentConfig,
    pub retrieval: RetrievalConfig,
    /// Rules that override `[augment]` and `[retrieval]` per client key, team, route and model;
    /// the first rule that matches a request decides (see `policy`).
    pub policies: Vec<PolicyRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Port 0 picks a free port (printed at start-up).
    pub listen: String,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Log format: "text" or "json".
    pub log_format: LogFormat,
    /// Header that names the calling team, for policy rules.
    pub team_header: String,
    /// How often the knowledge base and plugin files are checked for changes
    /// (hot reload); 0 disables polling (SIGHUP still reloads).
    pub reload_poll_ms: u64,
    /// Requests (including their streamed responses) handled at once; more
    /// are refused with 503 and `Retry-After` instead of queueing unboundedly.
    pub max_concurrent_requests: usize,
    /// Largest request head (request line and headers) accepted; beyond it
    /// the connection gets 431.
    pub max_header_bytes: usize,
    /// Async runtime worker threads; 0 (the default) means one per core plus
    /// one per plugin slot (`plugin.max_instances`): a fast-mode plugin run
    /// holds its worker, so this keeps a core's worth of workers free for
    /// everything else while every slot is busy.
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 * 1024 * 1024,
            log_format: LogFormat::Text,
            team_header: "x-rescue-team".into(),
            reload_poll_ms: 2_000,
            max_concurrent_requests: 1_024,
            max_header_bytes: 64 * 1024,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Which API an upstream speaks, and so which routes it can serve.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamApi {
    /// OpenAI or OpenAI-compatible: chat/completions, completions, responses,
    /// models and every other path.
    Openai,
    /// Anthropic: /v1/messages and everything under it.
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for logs and errors.
    #[serde(default)]
    pub name: String,
    pub api: UpstreamApi,
    /// Base URL as an SDK would be given it, including the version prefix:
    /// `https://api.openai.com/v1`, `https://api.anthropic.com/v1`. A request
    /// for `/v1/chat/completions` goes to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Glob patterns (`*` wildcard) on the request's `model`; the first
    /// upstream of the route's API whose patterns match serves it. Empty
    /// matches every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Time allowed to establish the TCP (and TLS) connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request until the response headers arrive.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Longest silence allowed between two pieces of a response body (a stream
    /// that stalls longer is cut, and the client sees it end in an error).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_idle_timeout_ms() -> u64 {
    120_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_response_timeout_ms() -> u64 {
    300_000
}

impl UpstreamConfig {
    pub fn new(name: &str, api: UpstreamApi, base_url: &str) -> Self {
        Self {
            name: name.into(),
            api,
            base_url: base_url.into(),
            models: Vec::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// True when `model` (if the request names one) is served here.
    pub fn serves_model(&self, model: Option<&str>) -> bool {
        match model {
            _ if self.models.is_empty() => true,
            Some(model) => self.models.iter().any(|pattern| glob_match(pattern, model)),
            None => false,
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The upstreams used when the configuration names none.
pub fn default_upstreams() -> Vec<UpstreamConfig> {
    vec![
        UpstreamConfig::new("openai", UpstreamApi::Openai, "https://api.openai.com/v1"),
        UpstreamConfig::new(
            "anthropic",
            UpstreamApi::Anthropic,
            "https://api.anthropic.com/v1",
        ),
    ]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KbConfig {
    /// The knowledge base built by `rescue kb build`.
    pub path: PathBuf,
    /// SQLite VM steps one plugin query may take, in thousands.
    pub query_step_limit: u64,
    /// Rows one plugin query may return.
    pub query_row_limit: usize,
}

impl Default for KbConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("kb.sqlite"),
            query_step_limit: 10_000,
            query_row_limit: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// A plugin component to load instead of the one built into the binary.
    pub path: Option<PathBuf>,
    /// Where precompiled plugin code is cached (default: ~/.cache/rescue-proxy).
    /// Set `cache = false` to always compile in memory.
    pub cache_dir: Option<PathBuf>,
    pub cache: bool,
    /// Fuel for one run (about one unit per Wasm instruction); 0 (the
    /// default) turns metering off: `timeout_ms` bounds a run either way, and
    /// metering costs ~6% of a retrieval.
    pub fuel: u64,
    /// Wall-clock budget for one run, including waiting for a free slot.
    pub timeout_ms: u64,
    /// Largest linear memory of one plugin instance (at least the
    /// built-in plugin's initial 4 MiB).
    pub memory_limit_bytes: usize,
    /// Plugin runs in flight at once.
    pub max_instances: u32,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            path: None,
            cache_dir: None,
            cache: true,
            fuel: 0,
            timeout_ms: 250,
            memory_limit_bytes: 64 * 1024 * 1024,
            // Measured (BENCHMARKS.md): more runs in flight than cores only
            // adds contention; 2 slots on 2 cores gave 1.5x the throughput of 64.
            max_instances: std::thread::available_parallelism()
                .map_or(2, |n| n.get() as u32)
                .max(2),
        }
    }
}

/// When a request is treated as a code-generation task.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentPolicy {
    /// Every chat request goes through retrieval (retrieval's threshold still
    /// decides whether anything is injected).
    Always,
    /// Only requests that look like code generation (see `policy`).
    Detect,
    /// Pure pass-through; the plugin is never called.
    Never,
}

/// What happens when the plugin fails (trap, fuel, timeout, memory cap).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Forward the request unaugmented; the response says why in `X-Rescue-Fail`.
    Open,
    /// Refuse the request with 503.
    Closed,
}

/// Where the knowledge block goes in a chat request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// A separate system message after the client's leading system messages.
    System,
    /// Prepended to the last user message.
    UserPrefix,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub policy: AugmentPolicy,
    pub on_plugin_failure: FailurePolicy,
    pub placement: Placement,
    /// Whether a client may skip augmentation with `x-rescue-opt-out: true`.
    pub allow_opt_out: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            policy: AugmentPolicy::Detect,
            on_plugin_failure: FailurePolicy::Open,
            placement: Placement::System,
            allow_opt_out: false,
        }
    }
}

/// How much work retrieval does per request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetrievalMode {
    /// Facets from the request alone: no extra upstream call.
    Fast,
    /// One extra upstream call per request first, for the vulnerability
    /// causes of the task and a draft whose APIs join the lexical facet.
    Full,
}

/// What a facet's vote for a CWE is worth when the facets are fused.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FusionMethod {
    /// The paper's reciprocal rank fusion: weight / (rrf_k + rank).
    ReciprocalRank,
    /// weight * (score_fusion_base + margin): the margin is how far the
    /// score stands above the last of the facet's first `rank_cut` scores,
    /// in their standard deviations (EVAL.md, "Fusion").
    ScoreMargin,
}

/// Every retrieval hyper-parameter, in one place. The defaults were chosen
/// by measurement on the dev sets (EVAL.md, "Hyper-parameters").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    pub mode: RetrievalMode,
    /// Most CWEs whose guidelines are injected.
    pub top_k: u32,
    /// Lexical facet threshold: column-weighted BM25 (FTS5) divided by the
    /// square root of the number of query terms.
    pub lexical_threshold: f64,
    /// Semantic facet threshold: cosine similarity of the static embeddings.
    pub semantic_threshold: f64,
    /// Scenario facet threshold: mean cosine similarity of the request to
    /// the CWE's closest developer scenarios.
    pub scenario_threshold: f64,
    /// Classifier facet threshold: the probability the KB's
    /// logistic-regression model gives the CWE (softmax over every
    /// weakness and the ordinary coding tasks).
    pub classifier_threshold: f64,
    /// Augment only when the best CWE's scenario score exceeds the
    /// request's score against ordinary coding tasks by more than this
    /// (cosine difference; -2 turns the gate off).
    pub ordinary_margin: f64,
    /// How the facets' votes are weighed; both keep the thresholds, the
    /// rank cut and the weights.
    pub fusion: FusionMethod,
    /// Reciprocal rank fusion constant: a facet adds weight / (rrf_k + rank).
    pub rrf_k: u32,
    /// Score-margin fusion: what a vote is worth before its margin (larger
    /// values count votes, smaller ones follow the scores).
    pub score_fusion_base: f64,
    /// Only a facet's first `rank_cut` candidates take part in the fusion.
    pub rank_cut: u32,
    pub lexical_weight: f64,
    pub semantic_weight: f64,
    pub scenario_weight: f64,
    pub classifier_weight: f64,
    /// Let an in-scope parent or child stand in for a semantic hit on a
    /// weakness the knowledge base has no guideline for.
    pub hierarchy_walk: bool,
    /// Upper bound on the injected text, in characters.
    pub max_chars: u32,
    /// Full mode's call to the upstream.
    pub full: FullModeConfig,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            mode: RetrievalMode::Fast,
            top_k: 4,
            lexical_threshold: 3.4,
            semantic_threshold: 0.60,
            scenario_threshold: 0.54,
            classifier_threshold: 0.05,
            ordinary_margin: -0.06,
            fusion: FusionMethod::ScoreMargin,
            rrf_k: 60,
            score_fusion_base: 2.0,
            rank_cut: 10,
            lexical_weight: 1.0,
            semantic_weight: 1.0,
            scenario_weight: 1.0,
            classifier_weight: 1.0,
            hierarchy_walk: false,
            max_chars: 6_000,
            full: FullModeConfig::default(),
        }
    }
}

/// Bounds on full mode's extra upstream call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullModeConfig {
    /// Model asked for the causes and the draft; unset: the request's own.
    pub model: Option<String>,
    /// Time the call may take; past it, retrieval goes on in fast mode.
    pub timeout_ms: u64,
    /// Calls per second across all requests (a token bucket); past it,
    /// requests are retrieved in fast mode.
    pub max_calls_per_second: f64,
    /// Calls the bucket lets through at once after a quiet spell.
    pub burst: u32,
    /// Full-mode runs in flight at once. Each holds a plugin instance while
    /// it waits for the upstream, so they have slots of their own and
    /// fast-mode runs never queue behind them; past this many, requests
    /// are retrieved in fast mode.
    pub max_in_flight: u32,
    /// Recent answers kept, per credentials, model and question (0: none):
    /// an agent loop resends the same task with every tool-call step.
    pub cache_entries: usize,
    /// How long a kept answer is served.
    pub cache_ttl_secs: u64,
}

impl Default for FullModeConfig {
    fn default() -> Self {
        Self {
            model: None,
            timeout_ms: 15_000,
            max_calls_per_second: 5.0,
            burst: 10,
            max_in_flight: 16,
            cache_entries: 1_024,
            cache_ttl_secs: 600,
        }
    }
}

/// The smallest `max_chars` that holds the knowledge block's fixed frame
/// (tags and preamble) and one shortened guideline.
pub const MIN_MAX_CHARS: u32 = 512;

/// One policy rule: matchers (all that are given must match; an empty list
/// matches anything) and the decisions it makes (unset ones fall back to
/// `[augment]`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// A name for logs.
    #[serde(default)]
    pub name: String,
    /// SHA-256 (hex) of the client's API key (`Authorization: Bearer` or
    /// `x-api-key`), so the config holds no keys; `rescue hash-key` computes it.
    #[serde(default)]
    pub key_sha256: Vec<String>,
    /// Values of the team header (`server.team_header`).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Route names: chat_completions, completions, responses, messages, count_tokens.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Glob patterns on the request's model.
    #[serde(default)]
    pub models: Vec<String>,

    pub augment: Option<AugmentPolicy>,
    pub on_plugin_failure: Option<FailurePolicy>,
    pub mode: Option<RetrievalMode>,
    pub top_k: Option<u32>,
    /// Only these CWEs may be injected ("CWE-89"); empty = all in the KB.
    #[serde(default)]
    pub cwes: Vec<String>,
    /// Only tasks in these languages are augmented; empty = any.
    #[serde(default)]
    pub languages: Vec<String>,
    pub allow_opt_out: Option<bool>,
}

impl Config {
    /// Plugin slots reserved for full-mode runs: `retrieval.full.max_in_flight`
    /// when the default mode or any policy rule is full, else none. Each
    /// slot reserves address space for its instance's memories (about 8 GiB
    /// of it, none of it resident), so a fast-only proxy reserves none.
    pub fn full_mode_slots(&self) -> u32 {
        let full = self.retrieval.mode == RetrievalMode::Full
            || self
                .policies
                .iter()
                .any(|rule| rule.mode == Some(RetrievalMode::Full));
        if full {
            self.retrieval.full.max_in_flight
        } else {
            0
        }
    }

    /// The async runtime's worker threads: as configured, or one per core plus
    /// one per plugin slot.
    pub fn worker_threads(&self) -> usize {
        match self.server.worker_threads {
            0 => {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                cores + self.plugin.max_instances as usize
            }
            n => n,
        }
    }

    /// The configured upstreams, or the defaults when none are configured.
    pub fn effective_upstreams(&self) -> Vec<UpstreamConfig> {
        if self.upstreams.is_empty() {
            default_upstreams()
        } else {
            self.upstreams.clone()
        }
    }

    /// Reads a TOML file; unknown keys, wrong types and invalid values are errors
    /// that name the file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                path: path.to_path_buf(),
                message,
            })
        };
        for (i, rule) in self.policies.iter().enumerate() {
            for cwe in &rule.cwes {
                if crate::policy::parse_cwe(cwe).is_none() {
                    return bad(format!(
                        "policies[{i}].cwes: {cwe:?} is not a CWE id like \"CWE-89\""
                    ));
                }
            }
            for route in &rule.routes {
                if !crate::protocol::ROUTE_NAMES.contains(&route.as_str()) {
                    return bad(format!(
                        "policies[{i}].routes: unknown route {route:?} (one of {})",
                        crate::protocol::ROUTE_NAMES.join(", ")
                    ));
                }
            }
            for key in &rule.key_sha256 {
                if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad(format!(
                        "policies[{i}].key_sha256: {key:?} is not a hex SHA-256"
                    ));
                }
            }
            if rule.top_k == Some(0) {
                return bad(format!("policies[{i}].top_k must be at least 1"));
            }
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if upstream.base_url.trim().is_empty() {
                return bad(format!("upstreams[{i}].base_url is empty"));
            }
        }
        let r = &self.retrieval;
        if r.top_k == 0 || r.rank_cut == 0 {
            return bad("retrieval.top_k and retrieval.rank_cut must be at least 1".into());
        }
        if r.max_chars < MIN_MAX_CHARS {
            return bad(format!(
                "retrieval.max_chars must be at least {MIN_MAX_CHARS}: the knowledge block's frame alone takes about 250"
            ));
        }
        for (name, value) in [
            ("lexical_threshold", r.lexical_threshold),
            ("semantic_threshold", r.semantic_threshold),
            ("scenario_threshold", r.scenario_threshold),
            ("classifier_threshold", r.classifier_threshold),
            ("ordinary_margin", r.ordinary_margin),
            ("lexical_weight", r.lexical_weight),
            ("semantic_weight", r.semantic_weight),
            ("scenario_weight", r.scenario_weight),
            ("classifier_weight", r.classifier_weight),
            ("score_fusion_base", r.score_fusion_base),
        ] {
            if !value.is_finite() {
                return bad(format!("retrieval.{name} must be a finite number"));
            }
        }
        if r.score_fusion_base <= 0.0 {
            return bad(
                "retrieval.score_fusion_base must be positive: a vote with no margin still counts"
                    .into(),
            );
        }
        if r.lexical_weight < 0.0
            || r.semantic_weight < 0.0
            || r.scenario_weight < 0.0
            || r.classifier_weight < 0.0
        {
            return bad("retrieval weights must not be negative".into());
        }
        if r.full.timeout_ms == 0
            || !(r.full.max_calls_per_second.is_finite() && r.full.max_calls_per_second > 0.0)
            || r.full.burst == 0
            || r.full.max_in_flight == 0
            || (r.full.cache_entries > 0 && r.full.cache_ttl_secs == 0)
        {
            return bad(
                "retrieval.full: timeout_ms, max_calls_per_second, burst and max_in_flight \
                 must be positive, and cache_ttl_secs too when cache_entries is"
                    .into(),
            );
        }
        if self.plugin.timeout_ms == 0 {
            return bad("plugin.timeout_ms must be positive".into());
        }
        // The built-in plugin starts with 4 MiB of linear memory (plugin/build.rs).
        if self.plugin.memory_limit_bytes < 4 * 1024 * 1024 {
            return bad(
                "plugin.memory_limit_bytes must be at least 4 MiB (the plugin's initial memory)"
                    .into(),
            );
        }
        if self.server.max_concurrent_requests == 0 {
            return bad("server.max_concurrent_requests must be positive".into());
        }
        if self.server.max_header_bytes < 8192 {
            return bad("server.max_header_bytes must be at least 8192".into());
        }
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mode_slots_are_reserved_only_when_full_mode_can_run() {
        let slots = |text: &str| {
            Config::from_toml(text, Path::new("x.toml"))
                .unwrap()
                .full_mode_slots()
        };
        assert_eq!(slots(""), 0);
        assert_eq!(slots("[retrieval]\nmode = \"full\"\n"), 16);
        assert_eq!(
            slots(
                "[retrieval.full]\nmax_in_flight = 3\n\n\
                 [[policies]]\nname = \"p\"\nmodels = [\"gpt-*\"]\nmode = \"full\"\n"
            ),
            3
        );
        assert_eq!(
            slots("[[policies]]\nname = \"p\"\nmodels = [\"gpt-*\"]\nmode = \"fast\"\n"),
            0
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.augment.policy, AugmentPolicy::Detect);
        assert_eq!(c.augment.on_plugin_failure, FailurePolicy::Open);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("x.toml") && text.contains("lisen"), "{text}");
        assert!(Config::from_toml("[nonsense]\n", Path::new("x.toml")).is_err());
    }

    #[test]
    fn upstream_lists_and_model_patterns() {
        let c = Config::from_toml(
            "[[upstreams]]\nname = \"local\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodels = [\"qwen*\", \"*-coder-*\"]\n\
             [[upstreams]]\napi = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let ups = c.effective_upstreams();
        assert_eq!(ups.len(), 2);
        assert!(ups[0].serves_model(Some("qwen2.5")));
        assert!(ups[0].serves_model(Some("deepseek-coder-v2")));
        assert!(!ups[0].serves_model(Some("gpt-4o")));
        assert!(!ups[0].serves_model(None));
        assert!(ups[1].serves_model(None));
        assert_eq!(ups[1].response_timeout_ms, 300_000);
        assert_eq!(Config::default().effective_upstreams().len(), 2);
        assert!(
            Config::from_toml(
                "[[upstreams]]\napi = \"grpc\"\nbase_url = \"x\"\n",
                Path::new("x.toml")
            )
            .is_err()
        );
    }

    #[test]
    fn the_example_deployment_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rescue.toml");
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.policies.len(), 3);
        assert_eq!(c.effective_upstreams().len(), 3);
        assert_eq!(c.server.log_format, LogFormat::Json);
    }

    #[test]
    fn globs() {
        assert!(glob_match("gpt-*", "gpt-4o"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
    }

    #[test]
    fn values_are_checked() {
        assert!(Config::from_toml("[retrieval]\ntop_k = 0\n", Path::new("x.toml")).is_err());
        assert!(Config::from_toml("[retrieval]\nmax_chars = 100\n", Path::new("x.toml")).is_err());
        assert!(Config::from_toml("[retrieval]\nrank_cut = 0\n", Path::new("x.toml")).is_err());
        assert!(Config::from_toml("[retrieval.full]\nburst = 0\n", Path::new("x.toml")).is_err());
        assert!(
            Config::from_toml("[retrieval]\nsemantic_weight = -1.0\n", Path::new("x.toml"))
                .is_err()
        );
        assert!(
            Config::from_toml("[retrieval]\nscenario_weight = -0.5\n", Path::new("x.toml"))
                .is_err()
        );
        assert!(
            Config::from_toml(
                "[retrieval]\nscenario_threshold = nan\n",
                Path::new("x.toml")
            )
            .is_err()
        );
        assert!(
            Config::from_toml("[augment]\npolicy = \"sometimes\"\n", Path::new("x.toml")).is_err()
        );
        let c = Config::from_toml(
            "[augment]\npolicy = \"always\"\non_plugin_failure = \"closed\"\nplacement = \"user-prefix\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.augment.placement, Placement::UserPrefix);
    }

    #[test]
    fn the_fusion_is_chosen_by_name_and_its_base_must_count() {
        assert_eq!(
            Config::default().retrieval.fusion,
            FusionMethod::ScoreMargin
        );
        let c = Config::from_toml(
            "[retrieval]\nfusion = \"reciprocal-rank\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.retrieval.fusion, FusionMethod::ReciprocalRank);
        for bad in [
            "fusion = \"rrf\"",
            "score_fusion_base = 0.0",
            "score_fusion_base = -1.0",
            "score_fusion_base = inf",
        ] {
            assert!(
                Config::from_toml(&format!("[retrieval]\n{bad}\n"), Path::new("x.toml")).is_err(),
                "{bad}"
            );
        }
    }
}
