//! The listener and the request pipeline.
//!
//! One request goes through named phases: route -> read body (bounded) ->
//! parse -> select upstream -> policy -> facets -> plugin -> apply -> forward
//! -> stream back. Only the routes of `protocol::Route` are augmented; every
//! other request is forwarded as it came (method, path, query, headers minus
//! hop-by-hop, body streamed).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub mod full_mode;

use crate::config::{Config, FailurePolicy, RetrievalMode, UpstreamApi};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::policy::{self, Decision, RequestContext};
use crate::protocol::{self, Route, Unit};
use crate::runtime::{Completer, PluginRuntime, RetrievalParams};
use crate::upstream::{IdleCut, ProxyBody, Upstream, Upstreams, strip_hop_by_hop};

pub const HEADER_AUGMENTED: &str = "x-rescue-augmented";
pub const HEADER_CWES: &str = "x-rescue-cwes";
pub const HEADER_FAIL: &str = "x-rescue-fail";
pub const HEADER_OPT_OUT: &str = "x-rescue-opt-out";
pub const HEADER_REQUEST_ID: &str = "x-request-id";

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub config: Config,
    /// The plugin and the knowledge base it reads, swapped whole on reload;
    /// a request keeps the `Arc` it started with, so in-flight requests
    /// finish on the old pair.
    runtime: RwLock<Arc<PluginRuntime>>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    /// One permit per request in flight (`server.max_concurrent_requests`).
    slots: Arc<Semaphore>,
    /// Full mode's calls to upstreams, across all requests.
    full_mode_limiter: Arc<full_mode::RateLimiter>,
    /// Full mode's recent answers, across all requests.
    full_mode_answers: Arc<full_mode::AnswerCache>,
}

impl AppState {
    pub fn new(config: Config, runtime: Arc<PluginRuntime>, upstreams: Upstreams) -> Self {
        let metrics = Metrics::default();
        let info = runtime.kb().info();
        metrics.set_kb(&info.content_hash, info.schema_version);
        let slots = Arc::new(Semaphore::new(config.server.max_concurrent_requests));
        let full = &config.retrieval.full;
        let full_mode_limiter = Arc::new(full_mode::RateLimiter::new(
            full.max_calls_per_second,
            full.burst,
        ));
        let full_mode_answers = Arc::new(full_mode::AnswerCache::new(
            full.cache_entries,
            std::time::Duration::from_secs(full.cache_ttl_secs),
        ));
        Self {
            full_mode_limiter,
            full_mode_answers,
            config,
            runtime: RwLock::new(runtime),
            upstreams,
            metrics,
            slots,
        }
    }

    /// The runtime serving new requests.
    pub fn runtime(&self) -> Arc<PluginRuntime> {
        Arc::clone(&self.runtime.read().expect("runtime lock"))
    }

    /// Replaces the runtime for new requests.
    pub fn swap_runtime(&self, runtime: Arc<PluginRuntime>) {
        let info = runtime.kb().info();
        self.metrics.set_kb(&info.content_hash, info.schema_version);
        *self.runtime.write().expect("runtime lock") = runtime;
    }

    fn retrieval_params(&self, decision: &Decision) -> RetrievalParams {
        RetrievalParams::from_config(
            &self.config.retrieval,
            decision.mode,
            decision.top_k,
            decision.cwes.clone(),
        )
    }
}

/// Serves connections from `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to a drain timeout).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_header = state.config.server.max_header_bytes;
    builder.http1().max_buf_size(max_header.max(8192));
    builder.http2().max_header_list_size(max_header as u32);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service_state = Arc::clone(&state);
                let service = service_fn(move |request| handle(Arc::clone(&service_state), peer, request));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        connection_error(&state, peer, &*error);
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
}

/// Accounts for a connection that ended in an error. An HTTP/1 request that
/// hyper cannot parse (headers over `server.max_header_bytes` or too many of
/// them, a malformed request line or header) is answered by hyper itself
/// (431, 414 or 400) and never reaches [`handle`]; its parse error ends the
/// connection, so this is where such requests are counted and logged.
/// HTTP/2 gives no such hook: the h2 crate answers an oversized header list
/// with 431 and resets the stream without telling hyper.
fn connection_error(state: &AppState, peer: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(hyper_error) = current.downcast_ref::<hyper::Error>()
            && hyper_error.is_parse()
        {
            let reason = if hyper_error.is_parse_too_large() {
                "header_too_large"
            } else {
                "malformed_request"
            };
            state.metrics.rejected(reason);
            // Never the request itself: only what hyper says was wrong with it.
            tracing::info!(%peer, reason, "request refused by the HTTP layer: {hyper_error}");
            return;
        }
        source = current.source();
    }
    tracing::debug!(%peer, "connection ended: {error}");
}

/// The outcome of the augmentation phase, reported in response headers,
/// metrics and the log line.
#[derive(Debug, Default)]
struct AugmentOutcome {
    augmented: bool,
    cwes: Vec<String>,
    failure: Option<&'static str>,
    /// The policy rule that decided, if any.
    rule: Option<String>,
    /// Time from sending upstream to its response headers.
    upstream_time: Option<Duration>,
}

async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if method == http::Method::GET
        && let Some(response) = admin(&state, &path)
    {
        return Ok(response);
    }
    // The client's id if it sent a usable one, else a fresh one; it goes
    // upstream and back to the client, and into the log line.
    let request_id = request
        .headers()
        .get(HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(HEADER_REQUEST_ID, value);
    }

    // Backpressure: a bounded number of requests in flight (a streamed
    // response holds its slot until it ends); past it, refuse at once.
    let Ok(permit) = Arc::clone(&state.slots).try_acquire_owned() else {
        let api = Route::classify(&method, &path)
            .map_or_else(|| protocol::api_for_path(&path), Route::api);
        state.metrics.request("overloaded", 503);
        tracing::warn!(request_id, %peer, %method, path, "overloaded: request refused");
        let mut response = error_response(
            api,
            &Error::Overloaded {
                limit: state.config.server.max_concurrent_requests,
            },
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(response);
    };
    let in_flight = InFlight::new(Arc::clone(&state), permit);
    let route = Route::classify(&method, &path);
    let api = route.map_or_else(|| protocol::api_for_path(&path), Route::api);
    let result = match route {
        Some(route) => augmented_route(&state, route, request).await,
        None => passthrough(&state, api, request).await,
    };
    let (response, outcome) =
        result.unwrap_or_else(|error| (error_response(api, &error), AugmentOutcome::default()));
    let mut response = response.map(|body| {
        Held {
            inner: body,
            in_flight,
        }
        .boxed()
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HEADER_REQUEST_ID, value);
    }

    let route_name = route.map_or("passthrough", Route::name);
    let status = response.status().as_u16();
    state.metrics.request(route_name, status);
    let elapsed = started.elapsed();
    if let Some(upstream) = outcome.upstream_time {
        state
            .metrics
            .added_latency(route_name, elapsed.saturating_sub(upstream));
    }
    // Never the prompt, never headers: they carry user data and credentials.
    tracing::info!(
        request_id,
        %peer,
        %method,
        path,
        route = route_name,
        status,
        policy = outcome.rule.as_deref().unwrap_or(""),
        augmented = outcome.augmented,
        cwes = %outcome.cwes.join(","),
        failure = outcome.failure.unwrap_or(""),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}

/// A request's slot and its count in the in-flight gauge, released when the
/// response body is done (or dropped by a client that went away).
struct InFlight {
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn new(state: Arc<AppState>, permit: OwnedSemaphorePermit) -> Self {
        state.metrics.in_flight(1);
        Self {
            state,
            _permit: permit,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.metrics.in_flight(-1);
    }
}

/// A response body that keeps its request's [`InFlight`] alive, and counts
/// a stream that breaks after its status was sent.
struct Held {
    inner: ProxyBody,
    in_flight: InFlight,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            // Only upstream bodies can fail: the proxy's own are `Full`.
            let reason = if error.is::<IdleCut>() {
                "idle"
            } else {
                "upstream_error"
            };
            self.in_flight.state.metrics.stream_cut(reason);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A random 128-bit id in hex. Uniqueness is all it needs, not secrecy.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut high = state.build_hasher();
    high.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut low = state.build_hasher();
    low.write_u64(high.finish());
    format!("{:016x}{:016x}", high.finish(), low.finish())
}

/// The proxy's own endpoints: liveness, readiness and metrics.
fn admin(state: &AppState, path: &str) -> Option<Response<ProxyBody>> {
    let (content_type, body) = match path {
        "/healthz" => (
            "application/json",
            serde_json::json!({"status": "ok"}).to_string(),
        ),
        "/readyz" => {
            // The proxy listens only once the KB is verified and the plugin
            // instantiated, and a reload never leaves it without a runtime.
            let info = state.runtime().kb().info();
            let body = serde_json::json!({
                "status": "ready",
                "kb": {"content_hash": info.content_hash, "schema_version": info.schema_version, "cwes_in_scope": info.cwes_in_scope},
            });
            ("application/json", body.to_string())
        }
        "/metrics" => {
            let (queries, time) = state.runtime().kb().query_stats();
            let kb = format!(
                "# HELP rescue_kb_queries_total Plugin queries against the knowledge base being served (resets on reload).\n\
                 # TYPE rescue_kb_queries_total counter\nrescue_kb_queries_total {queries}\n\
                 # HELP rescue_kb_query_seconds_total Time spent in those queries.\n\
                 # TYPE rescue_kb_query_seconds_total counter\nrescue_kb_query_seconds_total {}\n",
                time.as_secs_f64()
            );
            ("text/plain; version=0.0.4", state.metrics.render() + &kb)
        }
        _ => return None,
    };
    let mut response = Response::new(full(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

/// Any request the proxy does not augment: streamed through untouched.
async fn passthrough(
    state: &AppState,
    api: UpstreamApi,
    request: Request<Incoming>,
) -> Result<(Response<ProxyBody>, AugmentOutcome), Error> {
    // Without reading the body the model is unknown: the first upstream of
    // the API without model patterns serves it, else the first of the API.
    let upstream = state
        .upstreams
        .select(api, None)
        .or_else(|| state.upstreams.iter().find(|u| u.api == api))
        .ok_or(Error::NoUpstream { api, model: None })?;
    let (response, upstream_time) = forward(upstream, request, false).await?;
    state.metrics.upstream_time(api_name(api), upstream_time);
    Ok((
        response,
        AugmentOutcome {
            upstream_time: Some(upstream_time),
            ..AugmentOutcome::default()
        },
    ))
}

/// Reads a body up to the configured limit (413 beyond it, whether the
/// client declared the length or streamed it).
async fn read_body(
    state: &AppState,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Bytes, Error> {
    let limit = state.config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Error::BodyTooLarge { limit })
        }
        Err(error) => Err(Error::BadRequest {
            message: format!("reading the request body: {error}"),
        }),
    }
}

/// An augmentable route: read, parse, retrieve, apply, forward.
async fn augmented_route(
    state: &AppState,
    route: Route,
    request: Request<Incoming>,
) -> Result<(Response<ProxyBody>, AugmentOutcome), Error> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(state, &parts.headers, body).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest {
            message: format!("request body is not valid JSON: {e}"),
        })?;
    let model = json.get("model").and_then(|m| m.as_str());
    let upstream = state
        .upstreams
        .select(route.api(), model)
        .ok_or_else(|| Error::NoUpstream {
            api: route.api(),
            model: model.map(str::to_string),
        })?;

    let decision = policy::decide(
        &state.config,
        &RequestContext {
            key_sha256: policy::api_key(&parts.headers).map(policy::key_sha256),
            team: parts
                .headers
                .get(state.config.server.team_header.as_str())
                .and_then(|v| v.to_str().ok()),
            route: route.name(),
            model,
        },
    );
    let mut outcome = AugmentOutcome {
        rule: decision.rule.clone(),
        ..AugmentOutcome::default()
    };
    let opt_out = parts
        .headers
        .get(HEADER_OPT_OUT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let honour_opt_out = opt_out && decision.allow_opt_out;

    let all_units = protocol::facets(route, &json);
    let mut units: Vec<Unit> = all_units
        .iter()
        .filter(|f| !honour_opt_out && decision.wants(f))
        .map(|facets| Unit {
            facets: facets.clone(),
            knowledge: None,
        })
        .collect();
    // Completions batches must line up one unit per prompt: if the policy
    // skipped some prompts, augment none rather than the wrong ones.
    if route == Route::Completions && units.len() != all_units.len() {
        units.clear();
    }
    let runtime = state.runtime();
    for unit in &mut units {
        let completer = (decision.mode == RetrievalMode::Full).then(|| {
            Arc::new(
                full_mode::UpstreamCompleter::new(
                    upstream,
                    model,
                    &parts.headers,
                    &state.config.retrieval.full,
                    Arc::clone(&state.full_mode_limiter),
                )
                .with_cache(Arc::clone(&state.full_mode_answers)),
            )
        });
        let plugin_started = Instant::now();
        let result = runtime
            .augment(
                unit.facets.clone(),
                state.retrieval_params(&decision),
                completer.clone().map(|c| c as Arc<dyn Completer>),
            )
            .await;
        state.metrics.plugin_time(plugin_started.elapsed());
        if let Some(call) = completer.as_ref().and_then(|c| c.outcome()) {
            state.metrics.full_mode_call(call.as_str());
        }
        match result.map(|retrieval| retrieval.augmentation) {
            Ok(Some(augmentation)) => {
                unit.knowledge = Some(augmentation.text);
                for cwe in augmentation.cwes {
                    if !outcome.cwes.contains(&cwe.id) {
                        outcome.cwes.push(cwe.id);
                    }
                }
            }
            Ok(None) => {}
            Err(Error::PluginRun { kind, message }) => {
                tracing::warn!(failure = kind.as_str(), "plugin failed: {message}");
                match decision.on_plugin_failure {
                    FailurePolicy::Open => {
                        state.metrics.plugin_failure(kind.as_str(), "open");
                        outcome.failure = Some(kind.as_str());
                        units.iter_mut().for_each(|u| u.knowledge = None);
                        outcome.cwes.clear();
                        break;
                    }
                    FailurePolicy::Closed => {
                        state.metrics.plugin_failure(kind.as_str(), "closed");
                        state.metrics.augmentation(route.name(), "failed_closed");
                        return Err(Error::FailClosed { kind });
                    }
                }
            }
            Err(other) => return Err(other),
        }
    }

    let mut forwarded = bytes;
    // The body parsed as JSON above, so it is UTF-8.
    let text = std::str::from_utf8(&forwarded).unwrap_or_default();
    match protocol::apply(route, text, &units, state.config.augment.placement) {
        Some(rewritten) => {
            forwarded = Bytes::from(rewritten);
            outcome.augmented = true;
        }
        None => outcome.cwes.clear(),
    }
    let label = if outcome.augmented {
        "augmented"
    } else if outcome.failure.is_some() {
        "failed_open"
    } else if units.is_empty() {
        "skipped"
    } else {
        "not_relevant"
    };
    state.metrics.augmentation(route.name(), label);
    for cwe in &outcome.cwes {
        state.metrics.cwe_injected(cwe);
    }

    let body_changed = outcome.augmented;
    let (mut response, upstream_time) = forward(
        upstream,
        Request::from_parts(parts, full(forwarded)),
        body_changed,
    )
    .await?;
    state
        .metrics
        .upstream_time(api_name(route.api()), upstream_time);
    outcome.upstream_time = Some(upstream_time);
    let headers = response.headers_mut();
    if opt_out {
        headers.insert(
            HEADER_OPT_OUT,
            HeaderValue::from_static(if honour_opt_out {
                "honoured"
            } else {
                "refused"
            }),
        );
    }
    headers.insert(
        HEADER_AUGMENTED,
        HeaderValue::from_static(if outcome.augmented { "true" } else { "false" }),
    );
    if !outcome.cwes.is_empty()
        && let Ok(value) = HeaderValue::from_str(&outcome.cwes.join(","))
    {
        headers.insert(HEADER_CWES, value);
    }
    if let Some(failure) = outcome.failure {
        headers.insert(HEADER_FAIL, HeaderValue::from_static(failure));
    }
    Ok((response, outcome))
}

fn api_name(api: UpstreamApi) -> &'static str {
    match api {
        UpstreamApi::Openai => "openai",
        UpstreamApi::Anthropic => "anthropic",
    }
}

/// Sends a request upstream and streams the response back, with the time the
/// upstream took to answer with headers. `body_changed` means the proxy
/// rewrote the body, so the client's length no longer holds.
async fn forward<B>(
    upstream: &Upstream,
    request: Request<B>,
    body_changed: bool,
) -> Result<(Response<ProxyBody>, Duration), Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = upstream.target(&path_and_query)?;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The client's Host names the proxy; the upstream gets its own from the URI.
    parts.headers.remove(header::HOST);
    if body_changed {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let body: ProxyBody = body.map_err(Into::into).boxed();
    let sent = Instant::now();
    let response = upstream.send(Request::from_parts(parts, body)).await?;
    let upstream_time = sent.elapsed();
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // X-Rescue-* headers are the proxy's word to the client; an upstream
    // must not be able to claim an augmentation that did not happen.
    let spoofed: Vec<_> = parts
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-rescue-"))
        .cloned()
        .collect();
    for name in spoofed {
        parts.headers.remove(name);
    }
    Ok((
        Response::from_parts(parts, body.map_err(Into::into).boxed()),
        upstream_time,
    ))
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An error response for a per-request failure, in the shape of the API the
/// client is speaking (OpenAI or Anthropic).
pub fn error_response(api: UpstreamApi, error: &Error) -> Response<ProxyBody> {
    let (status, code) = match error {
        Error::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_json"),
        Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        Error::NoUpstream { .. } => (StatusCode::NOT_FOUND, "no_upstream"),
        Error::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        Error::UpstreamUnavailable { .. } => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        Error::FailClosed { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "security_augmentation_failed",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    };
    let body = protocol::error_body(api, status.as_u16(), &error.to_string(), code);
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Error::FailClosed { kind } = error {
        response
            .headers_mut()
            .insert(HEADER_FAIL, HeaderValue::from_static(kind.as_str()));
        response
            .headers_mut()
            .insert(HEADER_AUGMENTED, HeaderValue::from_static("false"));
    }
    response
}
