//! The client side: where requests go, which headers cross, and how long the
//! proxy waits. Response bodies are handed back unread, so streams flow
//! through frame by frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{UpstreamApi, UpstreamConfig};
use crate::error::{Error, Result};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One upstream API, reached through a pooled HTTP/1.1 + HTTP/2 client.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub api: UpstreamApi,
    config: UpstreamConfig,
    client: Client<Connector, ProxyBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's path without a trailing slash, e.g. "/v1" or "/openai/v1".
    prefix: String,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self> {
        let bad = |message: &str| Error::UpstreamUrl {
            url: config.base_url.clone(),
            message: message.to_string(),
        };
        let uri: Uri = config
            .base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("needs a scheme (http:// or https://)"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("needs a host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout()));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| bad(&format!("TLS set-up: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Self {
            name: if config.name.is_empty() {
                config.base_url.clone()
            } else {
                config.name.clone()
            },
            api: config.api,
            config: config.clone(),
            client,
            scheme,
            authority,
            prefix,
            response_timeout: config.response_timeout(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// Maps a client path onto the upstream: the proxy serves the API under
    /// `/v1`, the base URL already ends in the upstream's version prefix, so
    /// `/v1/chat/completions` becomes `{base}/chat/completions`. Paths outside
    /// `/v1` are appended to the base URL whole.
    pub fn target(&self, path_and_query: &str) -> Result<Uri> {
        let rest = match path_and_query.strip_prefix("/v1") {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => rest,
            _ => path_and_query,
        };
        let rest = if rest.is_empty() || rest.starts_with('?') {
            format!("/{rest}")
        } else {
            rest.to_string()
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{rest}", self.prefix))
            .build()
            .map_err(|e| Error::UpstreamUrl {
                url: path_and_query.to_string(),
                message: e.to_string(),
            })
    }

    /// Sends a request and waits for the response headers (not the body).
    /// The body that comes back is cut if the upstream goes silent for longer
    /// than the idle timeout.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(Error::UpstreamTimeout {
                after_ms: self.response_timeout.as_millis() as u64,
            }),
            Ok(Err(error)) => Err(Error::UpstreamUnavailable {
                message: describe(&error),
            }),
            Ok(Ok(response)) => {
                let idle = Duration::from_millis(self.config.idle_timeout_ms);
                Ok(response
                    .map(|body| IdleTimeout::new(body.map_err(Into::into).boxed(), idle).boxed()))
            }
        }
    }
}

/// The error a response body ends with when [`IdleTimeout`] cuts it; the
/// server tells it apart from the upstream's own errors to count it.
#[derive(Debug)]
pub struct IdleCut {
    pub idle: Duration,
}

impl std::fmt::Display for IdleCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "upstream sent nothing for {} ms; stream cut",
            self.idle.as_millis()
        )
    }
}

impl std::error::Error for IdleCut {}

/// A response body that fails (with [`IdleCut`]) if no frame arrives within
/// `idle` of the last: a stalled upstream must not hold a client (and a
/// connection slot) forever.
pub struct IdleTimeout {
    inner: ProxyBody,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// An upstream error held back for one poll (see `poll_frame`).
    held_error: Option<BoxError>,
}

impl IdleTimeout {
    pub fn new(inner: ProxyBody, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            held_error: None,
        }
    }
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(error) = this.held_error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            // hyper's server writes frames into a buffer and flushes it when
            // the body has nothing ready; an error ends the connection at
            // once, dropping what is buffered. An upstream that sends its
            // head, a few chunks and then breaks would reach the client as
            // nothing at all. Report "not ready" once, so the head and the
            // chunks go out, then the error.
            Poll::Ready(Some(Err(error))) => {
                this.held_error = Some(error);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::warn!(
                        idle_ms = this.idle.as_millis() as u64,
                        "upstream stream went silent; cut"
                    );
                    Poll::Ready(Some(Err(IdleCut { idle: this.idle }.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The configured upstreams, and the choice between them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    list: Vec<Upstream>,
}

impl Upstreams {
    pub fn new(configs: &[UpstreamConfig]) -> Result<Self> {
        Ok(Self {
            list: configs.iter().map(Upstream::new).collect::<Result<_>>()?,
        })
    }

    /// The first upstream speaking `api` whose model patterns accept `model`.
    pub fn select(&self, api: UpstreamApi, model: Option<&str>) -> Option<&Upstream> {
        self.list
            .iter()
            .find(|u| u.api == api && u.config.serves_model(model))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter()
    }
}

/// The innermost cause is the useful part ("connection refused").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any the
/// `Connection` header names: they describe one connection, not the message.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that yields scripted frames.
    struct Scripted(std::collections::VecDeque<std::result::Result<Bytes, BoxError>>);

    impl hyper::body::Body for Scripted {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(hyper::body::Frame::data)))
        }
    }

    #[tokio::test]
    async fn an_upstream_error_comes_after_a_pending_so_buffered_frames_flush() {
        let inner = Scripted(
            [
                Ok(Bytes::from_static(b"data: 1\n\n")),
                Err("upstream reset".into()),
            ]
            .into(),
        );
        let mut body = IdleTimeout::new(inner.boxed(), Duration::from_secs(60));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || hyper::body::Body::poll_frame(Pin::new(&mut body), &mut cx);
        assert!(matches!(poll(), Poll::Ready(Some(Ok(_)))));
        assert!(poll().is_pending(), "the error waits one poll");
        assert!(matches!(poll(), Poll::Ready(Some(Err(e))) if e.to_string() == "upstream reset"));
    }

    fn upstream(base: &str) -> Upstream {
        Upstream::new(&UpstreamConfig::new("t", UpstreamApi::Openai, base)).unwrap()
    }

    #[test]
    fn maps_paths_onto_the_base_url() {
        let u = upstream("http://127.0.0.1:9000/v1");
        assert_eq!(
            u.target("/v1/chat/completions").unwrap(),
            "http://127.0.0.1:9000/v1/chat/completions"
        );
        assert_eq!(
            u.target("/v1/models?limit=2").unwrap(),
            "http://127.0.0.1:9000/v1/models?limit=2"
        );
        assert_eq!(
            u.target("/health").unwrap(),
            "http://127.0.0.1:9000/v1/health"
        );
        assert_eq!(
            u.target("/v10/x").unwrap(),
            "http://127.0.0.1:9000/v1/v10/x"
        );
        let prefixed = upstream("https://gw.example.com/openai/v1/");
        assert_eq!(
            prefixed.target("/v1/chat/completions").unwrap(),
            "https://gw.example.com/openai/v1/chat/completions"
        );
        let bare = upstream("http://localhost:1");
        assert_eq!(
            bare.target("/v1/models").unwrap(),
            "http://localhost:1/models"
        );
    }

    #[test]
    fn rejects_unusable_base_urls() {
        for bad in [
            "localhost:8080",
            "ftp://x/v1",
            "http://x/v1?a=b",
            "not a url",
        ] {
            assert!(
                Upstream::new(&UpstreamConfig::new("t", UpstreamApi::Openai, bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn selection_by_api_and_model() {
        let mut local = UpstreamConfig::new("local", UpstreamApi::Openai, "http://127.0.0.1:1/v1");
        local.models = vec!["qwen*".into()];
        let all = Upstreams::new(&[
            local,
            UpstreamConfig::new("cloud", UpstreamApi::Openai, "https://api.example.com/v1"),
            UpstreamConfig::new(
                "claude",
                UpstreamApi::Anthropic,
                "https://anthropic.example.com/v1",
            ),
        ])
        .unwrap();
        assert_eq!(
            all.select(UpstreamApi::Openai, Some("qwen2")).unwrap().name,
            "local"
        );
        assert_eq!(
            all.select(UpstreamApi::Openai, Some("gpt-4o"))
                .unwrap()
                .name,
            "cloud"
        );
        assert_eq!(all.select(UpstreamApi::Openai, None).unwrap().name, "cloud");
        assert_eq!(
            all.select(UpstreamApi::Anthropic, Some("claude-x"))
                .unwrap()
                .name,
            "claude"
        );
        let only_local = Upstreams::new(&[UpstreamConfig {
            models: vec!["qwen*".into()],
            ..UpstreamConfig::new("local", UpstreamApi::Openai, "http://127.0.0.1:1/v1")
        }])
        .unwrap();
        assert!(
            only_local
                .select(UpstreamApi::Openai, Some("gpt-4o"))
                .is_none()
        );
        assert!(only_local.select(UpstreamApi::Anthropic, None).is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("authorization", "Bearer k".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }
}
