//! The listener and the request pipeline.
//!
//! One request goes through named phases: route -> read body (bounded) ->
//! parse -> policy -> facets -> plugin -> apply -> forward -> stream back.
//! Only chat completions are augmented; every other request is forwarded as
//! it came (method, path, query, headers minus hop-by-hop, body streamed).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{Config, FailurePolicy};
use crate::error::Error;
use crate::policy;
use crate::protocol::openai;
use crate::runtime::{PluginRuntime, RetrievalParams};
use crate::upstream::{ProxyBody, Upstream, strip_hop_by_hop};

pub const HEADER_AUGMENTED: &str = "x-rescue-augmented";
pub const HEADER_CWES: &str = "x-rescue-cwes";
pub const HEADER_FAIL: &str = "x-rescue-fail";

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub config: Config,
    pub runtime: Arc<PluginRuntime>,
    pub upstream: Upstream,
}

impl AppState {
    fn retrieval_params(&self) -> RetrievalParams {
        let a = &self.config.augment;
        RetrievalParams {
            top_k: a.top_k,
            min_score: a.min_score,
            max_chars: a.max_chars,
        }
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
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let state = Arc::clone(&state);
                let service = service_fn(move |request| handle(Arc::clone(&state), peer, request));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, "connection ended: {error}");
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

/// The outcome of the augmentation phase, reported in response headers.
#[derive(Debug, Default)]
struct AugmentOutcome {
    augmented: bool,
    cwes: Vec<String>,
    failure: Option<&'static str>,
}

async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let is_chat = method == Method::POST
        && matches!(path.as_str(), "/v1/chat/completions" | "/chat/completions");
    let (response, outcome) = if is_chat {
        match chat_completions(&state, request).await {
            Ok(pair) => pair,
            Err(error) => (error_response(&error), AugmentOutcome::default()),
        }
    } else {
        match forward(&state, request, None).await {
            Ok(response) => (response, AugmentOutcome::default()),
            Err(error) => (error_response(&error), AugmentOutcome::default()),
        }
    };
    // Never the prompt, never headers: they carry user data and credentials.
    tracing::info!(
        %peer,
        %method,
        path,
        status = response.status().as_u16(),
        augmented = outcome.augmented,
        cwes = %outcome.cwes.join(","),
        failure = outcome.failure.unwrap_or(""),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}

/// POST /v1/chat/completions: the augmented route.
async fn chat_completions(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<(Response<ProxyBody>, AugmentOutcome), Error> {
    let (parts, body) = request.into_parts();
    let limit = state.config.server.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::BodyTooLarge { limit });
        }
        Err(error) => {
            return Err(Error::BadRequest {
                message: format!("reading the request body: {error}"),
            });
        }
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest {
            message: format!("request body is not valid JSON: {e}"),
        })?;

    let mut outcome = AugmentOutcome::default();
    let facets = openai::chat_facets(&json)
        .filter(|f| policy::should_augment(state.config.augment.policy, f));
    let mut forwarded = bytes;
    if let Some(facets) = facets {
        match state
            .runtime
            .augment(facets, state.retrieval_params())
            .await
        {
            Ok(Some(augmentation)) => {
                // The body parsed as JSON above, so it is UTF-8.
                let text = std::str::from_utf8(&forwarded).unwrap_or_default();
                if let Some(rewritten) =
                    openai::apply_chat(text, &augmentation.text, state.config.augment.placement)
                {
                    forwarded = Bytes::from(rewritten);
                    outcome.augmented = true;
                    outcome.cwes = augmentation.cwes.into_iter().map(|c| c.id).collect();
                }
            }
            Ok(None) => {}
            Err(Error::PluginRun { kind, message }) => {
                tracing::warn!(failure = kind.as_str(), "plugin failed: {message}");
                match state.config.augment.on_plugin_failure {
                    FailurePolicy::Open => outcome.failure = Some(kind.as_str()),
                    FailurePolicy::Closed => return Err(Error::FailClosed { kind }),
                }
            }
            Err(other) => return Err(other),
        }
    }

    let request = Request::from_parts(parts, full(forwarded));
    let mut response = forward(state, request, Some(outcome.augmented)).await?;
    let headers = response.headers_mut();
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

/// Sends a request upstream and streams the response back. `body_changed`
/// is `Some(true)` when the proxy rewrote the body (so its length changed);
/// `None` means the body is the client's stream, untouched.
async fn forward<B>(
    state: &AppState,
    request: Request<B>,
    body_changed: Option<bool>,
) -> Result<Response<ProxyBody>, Error>
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
    parts.uri = state.upstream.target(&path_and_query)?;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The client's Host names the proxy; the upstream gets its own from the URI.
    parts.headers.remove(header::HOST);
    if body_changed == Some(true) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let body: ProxyBody = body.map_err(Into::into).boxed();
    let response = state
        .upstream
        .send(Request::from_parts(parts, body))
        .await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An OpenAI-shaped error response for a per-request failure.
pub fn error_response(error: &Error) -> Response<ProxyBody> {
    let (status, kind, code) = match error {
        Error::BadRequest { .. } => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
        ),
        Error::BodyTooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
        ),
        Error::UpstreamTimeout { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            "upstream_timeout",
        ),
        Error::UpstreamUnavailable { .. } => (
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_unavailable",
        ),
        Error::FailClosed { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "security_augmentation_failed",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
        ),
    };
    let body = openai::error_body(&error.to_string(), kind, code);
    let mut response = Response::new(full(Bytes::from(body.to_string())));
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
