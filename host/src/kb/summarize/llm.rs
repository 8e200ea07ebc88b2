//! The LLM summarizer: Algorithm 1's summaries written by a model behind any
//! OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp,
//! Ollama, a gateway).
//!
//! Every request is deterministic in its text (temperature 0, fixed prompt
//! templates, pairs in build order) and its answer is cached on disk under
//! the SHA-256 of the exact request body, which holds the model name and the
//! prompt: a rebuild from the same inputs sends nothing and yields the same
//! knowledge base; changing the model, a prompt or a pair misses the cache
//! for exactly the calls it affects. The API key is read from an environment
//! variable at start and sent only in the `Authorization` header; it is
//! never written to the cache, the knowledge base or a log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::offline::language_name;
use super::{CweBrief, Evidence, PairDigest, Summarizer, Summary};
use crate::{Error, Result};

/// Where and how to reach the model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// As an OpenAI SDK is given it, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key; unset or empty sends no
    /// `Authorization` header (local servers).
    pub api_key_env: String,
    /// Directory of cached answers.
    pub cache_dir: PathBuf,
    /// Per request, until the whole answer is read.
    pub timeout: Duration,
    /// Wait before the first retry of a busy or unreachable endpoint;
    /// doubled for each further one.
    pub retry_delay: Duration,
}

impl LlmConfig {
    /// `~/.cache/rescue-proxy/kb-llm` (or under `$XDG_CACHE_HOME`), else
    /// `.rescue-kb-llm-cache` in the working directory.
    pub fn default_cache_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("rescue-proxy").join("kb-llm"))
            .unwrap_or_else(|| PathBuf::from(".rescue-kb-llm-cache"))
    }
}

/// Longest slice put in a prompt, in characters.
pub const MAX_SNIPPET_CHARS: usize = 2500;
/// Attempts per request when the endpoint is unreachable or answers 429/5xx.
const ATTEMPTS: u32 = 4;

const SYSTEM: &str = "You are an application security expert. You write short, general, actionable \
secure-coding knowledge that helps a code-generating model avoid a weakness. You answer with JSON only.";

const ANSWER_FORMAT: &str = "- \"guideline\": 3 to 6 rules for writing code without this weakness. \
Each rule is one sentence that starts with \"Do\" or \"Don't\", is general (no names that only exist \
in these projects) and actionable, and names a concrete API or technique when it applies across projects.\n\
- \"cause\": 2 or 3 sentences on what makes code vulnerable to this weakness.\n\
Answer with JSON only: {\"guideline\": [\"...\", \"...\"], \"cause\": \"...\"}";

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Llm {
    config: LlmConfig,
    url: String,
    api_key: Option<String>,
    runtime: tokio::runtime::Runtime,
    client: Client<Connector, Full<Bytes>>,
    requests: usize,
    cache_hits: usize,
}

fn llm_error(message: impl Into<String>) -> Error {
    Error::KbSummarize {
        message: message.into(),
    }
}

impl Llm {
    pub fn new(config: LlmConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(llm_error(format!(
                "LLM base URL {base:?} is not an http(s) URL"
            )));
        }
        if config.model.trim().is_empty() {
            return Err(llm_error("no LLM model given"));
        }
        let api_key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| llm_error(format!("starting the HTTP runtime: {e}")))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| llm_error(format!("TLS set-up: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            url: format!("{base}/chat/completions"),
            config,
            api_key,
            runtime,
            client,
            requests: 0,
            cache_hits: 0,
        })
    }

    /// Requests sent to the endpoint so far (cache misses).
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Answers taken from the cache so far.
    pub fn cache_hits(&self) -> usize {
        self.cache_hits
    }

    /// The summary the model gives for `prompt`, from the cache when this
    /// exact request was answered before.
    fn summary(&mut self, prompt: String) -> Result<Summary> {
        let body = json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
        });
        let body = serde_json::to_vec(&body).expect("a JSON value serialises");
        let key = hex::encode(Sha256::digest(&body));
        let path = self.config.cache_dir.join(format!("{key}.json"));
        if let Some(summary) = read_cached(&path) {
            self.cache_hits += 1;
            return Ok(summary);
        }
        let content = self.post(body)?;
        let summary = parse_summary(&content).map_err(|why| {
            let head: String = content.chars().take(200).collect();
            llm_error(format!(
                "model {} answered something that is not a summary ({why}): {head:?}",
                self.config.model
            ))
        })?;
        write_cached(&path, &self.config.model, &content)?;
        Ok(summary)
    }

    /// POSTs one chat request and returns the first choice's message text,
    /// retrying with backoff while the endpoint is unreachable or busy.
    fn post(&mut self, body: Vec<u8>) -> Result<String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(self.config.retry_delay * (1 << (attempt - 1)));
            }
            self.requests += 1;
            let mut request = http::Request::post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json");
            if let Some(key) = &self.api_key {
                request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            let request = request
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(|e| llm_error(format!("building the request to {}: {e}", self.url)))?;
            let client = self.client.clone();
            let timeout = self.config.timeout;
            let outcome = self.runtime.block_on(async move {
                tokio::time::timeout(timeout, async move {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok::<_, String>((status, bytes))
                })
                .await
                .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
            });
            match outcome {
                Ok((status, bytes)) if status.is_success() => {
                    return first_choice(&bytes).ok_or_else(|| {
                        llm_error(format!(
                            "{} answered without choices[0].message.content",
                            self.url
                        ))
                    });
                }
                Ok((status, bytes)) => {
                    let head: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                    last = format!("{} answered {status}: {head}", self.url);
                    let retry =
                        status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retry {
                        break;
                    }
                }
                Err(e) => last = format!("{}: {e}", self.url),
            }
        }
        Err(llm_error(last))
    }
}

impl Summarizer for Llm {
    fn backend(&self) -> String {
        format!("llm-v1:{}", self.config.model)
    }

    fn summarize_batch(
        &mut self,
        cwe: &CweBrief,
        pairs: &[PairDigest],
        _evidence: &Evidence,
    ) -> Result<Summary> {
        self.summary(batch_prompt(cwe, pairs))
    }

    fn merge(
        &mut self,
        cwe: &CweBrief,
        parts: &[Summary],
        _evidence: &Evidence,
    ) -> Result<Summary> {
        self.summary(merge_prompt(cwe, parts))
    }
}

fn heading(cwe: &CweBrief) -> String {
    format!(
        "Weakness: CWE-{}: {}\nDescription: {}\n",
        cwe.id, cwe.name, cwe.description
    )
}

fn clip(code: &str) -> String {
    if code.chars().count() <= MAX_SNIPPET_CHARS {
        return code.to_string();
    }
    let cut: String = code.chars().take(MAX_SNIPPET_CHARS).collect();
    format!("{cut}\n...")
}

/// The round-one prompt: the pairs' slices, vulnerable then fixed.
pub fn batch_prompt(cwe: &CweBrief, pairs: &[PairDigest]) -> String {
    let mut p = heading(cwe);
    p.push_str(&format!(
        "\nBelow are {} pairs of a vulnerable function and its fixed version from real projects \
         (only the lines around each fix are shown).\n",
        pairs.len()
    ));
    for (i, pair) in pairs.iter().enumerate() {
        let fence = if pair.language == "cpp" {
            "cpp"
        } else {
            &pair.language
        };
        p.push_str(&format!(
            "\n## Pair {} ({})\nVulnerable:\n```{fence}\n{}\n```\nFixed:\n```{fence}\n{}\n```\n",
            i + 1,
            language_name(&pair.language),
            clip(&pair.vulnerable),
            clip(&pair.fixed),
        ));
    }
    p.push_str(&format!(
        "\nSummarize what these fixes teach about CWE-{}:\n{ANSWER_FORMAT}",
        cwe.id
    ));
    p
}

/// A later round's prompt: the summaries to merge.
pub fn merge_prompt(cwe: &CweBrief, parts: &[Summary]) -> String {
    let mut p = heading(cwe);
    p.push_str(&format!(
        "\nBelow are {} summaries of this weakness, each written from a different batch of \
         vulnerable/fixed code pairs.\n",
        parts.len()
    ));
    for (i, part) in parts.iter().enumerate() {
        p.push_str(&format!(
            "\n## Summary {}\nGuideline:\n{}\nCause: {}\n",
            i + 1,
            part.guideline,
            part.cause
        ));
    }
    p.push_str(&format!(
        "\nMerge them into one summary of CWE-{}: keep the rules that are general and actionable, \
         drop repetitions, at most 6 rules.\n{ANSWER_FORMAT}",
        cwe.id
    ));
    p
}

/// `choices[0].message.content` of a chat completion.
fn first_choice(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/choices/0/message/content")?
        .as_str()
        .map(str::to_string)
}

/// The model's JSON answer (possibly inside a code fence or prose) as a
/// summary: rules become "- " lines.
pub fn parse_summary(content: &str) -> std::result::Result<Summary, String> {
    let start = content.find('{').ok_or("no JSON object")?;
    let end = content.rfind('}').ok_or("no JSON object")?;
    if end < start {
        return Err("no JSON object".into());
    }
    let v: Value =
        serde_json::from_str(&content[start..=end]).map_err(|e| format!("invalid JSON: {e}"))?;
    let rules: Vec<String> = match v.get("guideline") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.lines().map(str::to_string).collect(),
        _ => return Err("no \"guideline\"".into()),
    };
    let rules: Vec<String> = rules
        .iter()
        .map(|r| {
            r.trim()
                .trim_start_matches(|c: char| {
                    c == '-' || c == '*' || c == '•' || c.is_ascii_digit() || c == '.' || c == ')'
                })
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|r| !r.is_empty())
        .map(|r| format!("- {r}"))
        .collect();
    let cause = v
        .get("cause")
        .and_then(Value::as_str)
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    if rules.is_empty() {
        return Err("empty \"guideline\"".into());
    }
    if cause.is_empty() {
        return Err("no \"cause\"".into());
    }
    Ok(Summary {
        guideline: rules.join("\n"),
        cause,
    })
}

fn read_cached(path: &Path) -> Option<Summary> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    parse_summary(v.get("content")?.as_str()?).ok()
}

/// Stores an answer atomically (temporary file, then rename), so an
/// interrupted build never leaves a half-written entry.
fn write_cached(path: &Path, model: &str, content: &str) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let entry = json!({"model": model, "content": content});
    std::fs::write(&tmp, serde_json::to_vec_pretty(&entry).expect("serialises")).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A scripted OpenAI-compatible endpoint on 127.0.0.1 for tests: answers a
/// batch prompt with a rule naming how many pairs it saw and a merge prompt
/// with one naming how many summaries it merged, and counts requests.
#[cfg(test)]
pub(crate) mod mock {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};

    pub struct MockLlm {
        pub addr: SocketAddr,
        pub requests: Arc<AtomicUsize>,
        /// Requests answered with a server error before normal answers.
        pub fail_first: Arc<AtomicUsize>,
    }

    impl MockLlm {
        pub fn base_url(&self) -> String {
            format!("http://{}/v1", self.addr)
        }
        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn answer(request: &Value) -> String {
        let prompt = request
            .pointer("/messages/1/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let cwe = prompt
            .split_whitespace()
            .nth(1)
            .unwrap_or("CWE-?")
            .trim_end_matches(':');
        let content = if prompt.contains("\nMerge them") {
            let n = prompt.matches("\n## Summary ").count();
            json!({"guideline": [format!("Do merge {n} summaries for {cwe}."), "Don't trust input."],
                   "cause": format!("Merged cause of {n} summaries.")})
        } else {
            let n = prompt.matches("\n## Pair ").count();
            json!({"guideline": [format!("1. Do fix what {n} pairs show.")],
                   "cause": format!("Cause seen in {n} pairs.")})
        };
        // Answers come fenced, as chat models like to write them.
        format!("```json\n{content}\n```")
    }

    pub fn start() -> MockLlm {
        let requests = Arc::new(AtomicUsize::new(0));
        let fail_first = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (counter, failures) = (requests.clone(), fail_first.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (counter, failures) = (counter.clone(), failures.clone());
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (counter, failures) = (counter.clone(), failures.clone());
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let path_ok = req.uri().path() == "/v1/chat/completions";
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let failing = failures
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok();
                            let (status, reply) = if failing {
                                (503, json!({"error": {"message": "busy"}}))
                            } else if !path_ok {
                                (404, json!({"error": {"message": "not found"}}))
                            } else {
                                (200, json!({
                                    "id": "mock", "object": "chat.completion",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": answer(&request)}}]
                                }))
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        MockLlm {
            addr: rx.recv().unwrap(),
            requests,
            fail_first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fenced_and_numbered_answers() {
        let s = parse_summary(
            "Sure:\n```json\n{\"guideline\": [\"1. Do use parameters.\", \"- Don't concatenate.\"], \"cause\": \"Queries  built from input.\"}\n```",
        )
        .unwrap();
        assert_eq!(s.guideline, "- Do use parameters.\n- Don't concatenate.");
        assert_eq!(s.cause, "Queries built from input.");
        assert!(parse_summary("no json").is_err());
        assert!(parse_summary("{\"guideline\": [], \"cause\": \"x\"}").is_err());
    }

    fn config(base_url: String, cache_dir: &Path) -> LlmConfig {
        LlmConfig {
            base_url,
            model: "mock-model".into(),
            api_key_env: "RESCUE_TEST_NO_SUCH_KEY".into(),
            cache_dir: cache_dir.to_owned(),
            timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(10),
        }
    }

    fn digests(n: usize) -> Vec<PairDigest> {
        (0..n)
            .map(|i| PairDigest {
                id: format!("p{i}"),
                language: "python".into(),
                project: format!("proj{i}"),
                vulnerable: format!("cur.execute('... %s' % name{i})"),
                fixed: format!("cur.execute('... %s', (name{i},))"),
                ..PairDigest::default()
            })
            .collect()
    }

    #[test]
    fn batches_merges_and_caches_against_a_mock_endpoint() {
        let server = mock::start();
        let dir = tempfile::tempdir().unwrap();
        let cwe = CweBrief {
            id: 89,
            name: "SQL Injection".into(),
            description: "Queries built from input.".into(),
            ..CweBrief::default()
        };
        let pairs = digests(23);

        let mut llm = Llm::new(config(server.base_url(), dir.path())).unwrap();
        let mut steps = 0;
        let summary =
            super::super::cluster_then_summarize(&mut llm, &cwe, &pairs, &mut || steps += 1)
                .unwrap()
                .unwrap();
        // 23 pairs: batches of 10, 10 and 3, then one merge of the three.
        assert_eq!(server.requests(), 4);
        assert_eq!((llm.requests(), llm.cache_hits(), steps), (4, 0, 4));
        assert_eq!(
            summary.guideline,
            "- Do merge 3 summaries for CWE-89.\n- Don't trust input."
        );
        assert_eq!(summary.cause, "Merged cause of 3 summaries.");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);

        // Same inputs, same cache: nothing is sent, the result is the same.
        let mut again = Llm::new(config(server.base_url(), dir.path())).unwrap();
        let cached = super::super::cluster_then_summarize(&mut again, &cwe, &pairs, &mut || {})
            .unwrap()
            .unwrap();
        assert_eq!(server.requests(), 4);
        assert_eq!((again.requests(), again.cache_hits()), (0, 4));
        assert_eq!(cached, summary);

        // Another model is another cache key.
        let mut other = config(server.base_url(), dir.path());
        other.model = "other-model".into();
        let mut other = Llm::new(other).unwrap();
        super::super::cluster_then_summarize(&mut other, &cwe, &pairs[..5], &mut || {}).unwrap();
        assert_eq!(other.requests(), 1);
        assert_eq!(other.backend(), "llm-v1:other-model");
    }

    #[test]
    fn retries_a_busy_endpoint_and_reports_a_dead_one() {
        let server = mock::start();
        server
            .fail_first
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let mut llm = Llm::new(config(server.base_url(), dir.path())).unwrap();
        let cwe = CweBrief {
            id: 78,
            ..CweBrief::default()
        };
        let s = llm
            .summarize_batch(&cwe, &digests(2), &Evidence::default())
            .unwrap();
        assert_eq!(s.guideline, "- Do fix what 2 pairs show.");
        assert_eq!(server.requests(), 2);

        // Nothing listens on this port (bound, then dropped).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = config(format!("http://127.0.0.1:{port}/v1"), dir.path());
        cfg.model = "unreachable".into();
        let mut dead = Llm::new(cfg).unwrap();
        let err = dead
            .summarize_batch(&cwe, &digests(1), &Evidence::default())
            .unwrap_err();
        assert!(matches!(err, Error::KbSummarize { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
