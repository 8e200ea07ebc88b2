//! Full mode's extra upstream call: the host side of the plugin's `llm`
//! import.
//!
//! The plugin asks for one completion (the vulnerability causes of the task
//! and a zero-shot draft); the host sends it to the upstream the request is
//! going to, with the client's own credentials, which never enter the
//! sandbox. A process-wide token bucket bounds the rate of these calls and a
//! timeout bounds each one; when either says no, the plugin carries on in
//! fast mode, so full mode can slow a request down by at most the timeout and
//! can never fail it. Recent answers are kept (per credentials, model and
//! question): an agent loop resends the same last user turn with every
//! tool-call step, and should not pay the model for the same answer each time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};

use crate::config::{FullModeConfig, UpstreamApi};
use crate::runtime::{Completer, CompletionError};
use crate::upstream::{ProxyBody, Upstream};

/// Largest completion body the host reads.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Request headers that carry the client's identity to the upstream; the
/// full-mode call sends these and nothing else of the client's.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
];

/// A token bucket shared by every request.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().expect("rate limiter lock");
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token, sleeping until there is one.
    pub fn acquire_blocking(&self) {
        while !self.try_acquire() {
            let refill = 1.0 / self.per_second.max(0.01);
            std::thread::sleep(Duration::from_secs_f64(refill.min(1.0)));
        }
    }
}

/// Recent full-mode answers by what was asked (credentials, upstream, model,
/// question): at most `capacity`, the oldest evicted first, each served
/// for `ttl`.
#[derive(Debug)]
pub struct AnswerCache {
    capacity: usize,
    ttl: Duration,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    answers: HashMap<[u8; 32], (Instant, Arc<str>)>,
    /// Keys in insertion order, for eviction.
    order: VecDeque<[u8; 32]>,
}

impl AnswerCache {
    /// A cache of `capacity` answers (0: off).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<str>> {
        let state = self.state.lock().expect("answer cache lock");
        state
            .answers
            .get(key)
            .filter(|(stored, _)| stored.elapsed() < self.ttl)
            .map(|(_, answer)| Arc::clone(answer))
    }

    fn insert(&self, key: [u8; 32], answer: &str) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.state.lock().expect("answer cache lock");
        let state = &mut *state;
        if state
            .answers
            .insert(key, (Instant::now(), Arc::from(answer)))
            .is_none()
        {
            state.order.push_back(key);
        }
        while state.order.len() > self.capacity {
            if let Some(oldest) = state.order.pop_front() {
                state.answers.remove(&oldest);
            }
        }
    }

    /// Answers held (fresh or not yet evicted).
    pub fn len(&self) -> usize {
        self.state.lock().expect("answer cache lock").answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a full-mode call ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    RateLimited,
    /// Every full-mode slot was waiting on the upstream: not called.
    Busy,
    /// Answered from the cache of recent answers: not called.
    Cached,
    Timeout,
    Failed,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::RateLimited => "rate_limited",
            CallOutcome::Busy => "busy",
            CallOutcome::Cached => "cached",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Failed => "failed",
        }
    }
}

/// One request's way to its upstream.
pub struct UpstreamCompleter {
    upstream: Upstream,
    model: String,
    credentials: HeaderMap,
    timeout: Duration,
    limiter: Arc<RateLimiter>,
    cache: Option<Arc<AnswerCache>>,
    runtime: tokio::runtime::Handle,
    outcome: Mutex<Option<CallOutcome>>,
}

impl UpstreamCompleter {
    /// `model`: the configured full-mode model, else the request's.
    pub fn new(
        upstream: &Upstream,
        request_model: Option<&str>,
        client_headers: &HeaderMap,
        config: &FullModeConfig,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        let mut credentials = HeaderMap::new();
        for name in CREDENTIAL_HEADERS {
            for value in client_headers.get_all(*name) {
                credentials.append(*name, value.clone());
            }
        }
        Self {
            upstream: upstream.clone(),
            model: config
                .model
                .clone()
                .or_else(|| request_model.map(str::to_string))
                .unwrap_or_default(),
            credentials,
            timeout: Duration::from_millis(config.timeout_ms),
            limiter,
            cache: None,
            runtime: tokio::runtime::Handle::current(),
            outcome: Mutex::new(None),
        }
    }

    /// Answers from `cache` when it holds this very question from these
    /// credentials, and keeps new answers there.
    pub fn with_cache(mut self, cache: Arc<AnswerCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// What identifies an answer: who asks (the credential headers, so no
    /// tenant is served another's answer), where, which model, and what.
    fn cache_key(&self, prompt: &str, max_tokens: u32) -> [u8; 32] {
        let mut hash = Sha256::new();
        for (name, value) in &self.credentials {
            hash.update(name.as_str().as_bytes());
            hash.update([0]);
            hash.update(value.as_bytes());
            hash.update([0]);
        }
        for part in [self.upstream.base_url(), &self.model, prompt] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(max_tokens.to_le_bytes());
        hash.finalize().into()
    }

    /// How the call went, if the plugin made one.
    pub fn outcome(&self) -> Option<CallOutcome> {
        *self.outcome.lock().expect("outcome lock")
    }

    fn record(&self, outcome: CallOutcome) {
        *self.outcome.lock().expect("outcome lock") = Some(outcome);
    }

    fn request(&self, prompt: &str, max_tokens: u32) -> Result<Request<ProxyBody>, String> {
        let (path, body) = match self.upstream.api {
            UpstreamApi::Openai => (
                "/v1/chat/completions",
                serde_json::json!({
                    "model": self.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }),
            ),
            UpstreamApi::Anthropic => (
                "/v1/messages",
                serde_json::json!({
                    "model": self.model,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}],
                }),
            ),
        };
        let uri = self.upstream.target(path).map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(
                Full::new(Bytes::from(body.to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.extend(self.credentials.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.upstream.api == UpstreamApi::Anthropic && !headers.contains_key("anthropic-version")
        {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        Ok(request)
    }

    async fn call(&self, request: Request<ProxyBody>) -> Result<String, CompletionError> {
        let response = self
            .upstream
            .send(request)
            .await
            .map_err(|e| CompletionError::Failed(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| CompletionError::Failed(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(CompletionError::Failed(format!("upstream status {status}")));
        }
        answer_text(self.upstream.api, &body)
            .ok_or_else(|| CompletionError::Failed("no text in the upstream's answer".into()))
    }
}

/// The text of a chat completion (OpenAI) or message (Anthropic).
fn answer_text(api: UpstreamApi, body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    match api {
        UpstreamApi::Openai => json
            .pointer("/choices/0/message/content")?
            .as_str()
            .map(str::to_string),
        UpstreamApi::Anthropic => {
            let text: String = json
                .get("content")?
                .as_array()?
                .iter()
                .filter(|block| block.get("type").and_then(|t| t.as_str()) == Some("text"))
                .filter_map(|block| block.get("text").and_then(|t| t.as_str()))
                .collect();
            (!text.is_empty()).then_some(text)
        }
    }
}

impl Completer for UpstreamCompleter {
    fn complete(&self, prompt: &str, max_tokens: u32) -> Result<String, CompletionError> {
        let cached = self
            .cache
            .as_ref()
            .map(|cache| (cache, self.cache_key(prompt, max_tokens)));
        if let Some((cache, key)) = &cached
            && let Some(answer) = cache.get(key)
        {
            self.record(CallOutcome::Cached);
            return Ok(answer.to_string());
        }
        if !self.limiter.try_acquire() {
            self.record(CallOutcome::RateLimited);
            return Err(CompletionError::RateLimited);
        }
        let request = match self.request(prompt, max_tokens) {
            Ok(request) => request,
            Err(message) => {
                self.record(CallOutcome::Failed);
                return Err(CompletionError::Failed(message));
            }
        };
        // Runs on the blocking pool (the plugin's thread), so waiting on the
        // async client here holds no async worker.
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, self.call(request)).await });
        let result = match result {
            Ok(inner) => inner,
            Err(_) => Err(CompletionError::Timeout),
        };
        if let (Some((cache, key)), Ok(answer)) = (cached, &result) {
            cache.insert(key, answer);
        }
        self.record(match &result {
            Ok(_) => CallOutcome::Ok,
            Err(CompletionError::Timeout) => CallOutcome::Timeout,
            Err(CompletionError::RateLimited) => CallOutcome::RateLimited,
            Err(_) => CallOutcome::Failed,
        });
        result
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn no_free_slot(&self) {
        self.record(CallOutcome::Busy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_cache_evicts_the_oldest_and_expires() {
        let key = |n: u8| [n; 32];
        let cache = AnswerCache::new(2, Duration::from_secs(60));
        cache.insert(key(1), "one");
        cache.insert(key(2), "two");
        cache.insert(key(1), "one again");
        assert_eq!(cache.get(&key(1)).as_deref(), Some("one again"));
        cache.insert(key(3), "three");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(1)), None, "the oldest key goes first");
        assert_eq!(cache.get(&key(3)).as_deref(), Some("three"));

        let expired = AnswerCache::new(2, Duration::ZERO);
        expired.insert(key(1), "one");
        assert_eq!(expired.get(&key(1)), None);
        let off = AnswerCache::new(0, Duration::from_secs(60));
        off.insert(key(1), "one");
        assert!(off.is_empty());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(1000.0, 3);
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire(), "the burst is spent");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.try_acquire(), "tokens come back at the rate");
    }

    /// An upstream that accepts connections and never answers.
    async fn silent_upstream() -> (tokio::net::TcpListener, Upstream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config: crate::config::UpstreamConfig = toml::from_str(&format!(
            "api = \"openai\"\nbase_url = \"http://{}/v1\"\n",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        (listener, Upstream::new(&config).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_upstream_times_out_and_a_spent_bucket_refuses() {
        let (_listener, upstream) = silent_upstream().await;
        let config = FullModeConfig {
            timeout_ms: 100,
            ..FullModeConfig::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("cookie", HeaderValue::from_static("session=1"));
        let limiter = Arc::new(RateLimiter::new(0.001, 1));
        let completer = Arc::new(UpstreamCompleter::new(
            &upstream,
            Some("m"),
            &headers,
            &config,
            Arc::clone(&limiter),
        ));
        // Only credentials are carried over from the client.
        assert!(completer.credentials.contains_key("authorization"));
        assert!(!completer.credentials.contains_key("cookie"));
        let started = Instant::now();
        let c = Arc::clone(&completer);
        let result = tokio::task::spawn_blocking(move || c.complete("task", 10))
            .await
            .unwrap();
        assert_eq!(result, Err(CompletionError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(completer.outcome(), Some(CallOutcome::Timeout));
        let c = Arc::clone(&completer);
        let result = tokio::task::spawn_blocking(move || c.complete("task", 10))
            .await
            .unwrap();
        assert_eq!(result, Err(CompletionError::RateLimited));
        assert_eq!(completer.outcome(), Some(CallOutcome::RateLimited));
    }

    #[test]
    fn answers_are_read_in_both_shapes() {
        let openai = br#"{"choices":[{"message":{"role":"assistant","content":"CAUSES: x"}}]}"#;
        assert_eq!(
            answer_text(UpstreamApi::Openai, openai).as_deref(),
            Some("CAUSES: x")
        );
        let anthropic = br#"{"content":[{"type":"text","text":"CAUSES: "},{"type":"tool_use"},{"type":"text","text":"y"}]}"#;
        assert_eq!(
            answer_text(UpstreamApi::Anthropic, anthropic).as_deref(),
            Some("CAUSES: y")
        );
        assert_eq!(answer_text(UpstreamApi::Openai, b"{}"), None);
        assert_eq!(answer_text(UpstreamApi::Anthropic, b"not json"), None);
    }
}
