//! A mock OpenAI-compatible upstream on 127.0.0.1, on its own thread and
//! runtime so that its CPU time can be measured apart from the load generator.
//!
//! It answers `GET …/models` with a model list, `POST …/chat/completions` with
//! a chat completion after a fixed delay, or, when the body asks for
//! `"stream":true`, with a fixed number of SSE chunks separated by a fixed gap.
//! It does as little work as an HTTP server can, so it is never the bottleneck:
//! the harness measures it directly (the "direct" rows) and reports its CPU.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How the mock answers.
#[derive(Debug, Clone, Copy)]
pub struct MockConfig {
    /// Time from the end of the request to the response headers (the model's
    /// "thinking" time). Zero answers at once, which keeps timer jitter out of
    /// the added-latency numbers.
    pub delay: Duration,
    /// SSE `data:` chunks in a streamed answer (before `[DONE]`).
    pub stream_chunks: usize,
    /// Gap between streamed chunks; the first chunk goes out with the headers.
    pub stream_gap: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            stream_chunks: 8,
            stream_gap: Duration::from_millis(1),
        }
    }
}

type MockBody = BoxBody<Bytes, Infallible>;

pub const CHAT_COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"def build_query(conn, name):\n    return conn.execute(\"SELECT * FROM users WHERE name = ?\", (name,))\n"},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":30,"total_tokens":54}}"#;

pub const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"bench"},{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"bench"}]}"#;

const STREAM_CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n";
const STREAM_DONE: &str = "data: [DONE]\n\n";

/// A running mock upstream. Dropping it stops it.
pub struct MockUpstream {
    pub addr: SocketAddr,
    /// Linux thread id of the mock's thread, for its CPU time.
    pub tid: i32,
    served: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts the mock on 127.0.0.1 (a free port) on a thread of its own.
    pub fn start(config: MockConfig) -> Result<MockUpstream> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("127.0.0.1:0"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(Error::io("mock listener"))?;
        let addr = std_listener
            .local_addr()
            .map_err(Error::io("mock listener"))?;
        let served = Arc::new(AtomicU64::new(0));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let counter = Arc::clone(&served);
        let thread = std::thread::Builder::new()
            .name("bench-mock".into())
            .spawn(move || {
                let _ = tid_tx.send(crate::procfs::current_tid());
                // One thread: the mock's cost is then one number, and it
                // cannot take more than one core from the proxy.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the mock runtime");
                runtime.block_on(serve(std_listener, config, counter, shutdown_rx));
            })
            .map_err(Error::io("mock thread"))?;
        let tid = tid_rx
            .recv()
            .map_err(|_| Error::Http("the mock thread did not start".into()))?;
        Ok(MockUpstream {
            addr,
            tid,
            served,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// Base URL as an OpenAI SDK (or the proxy's `--upstream`) is given it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Responses produced so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    std_listener: std::net::TcpListener,
    config: MockConfig,
    served: Arc<AtomicU64>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(std_listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let served = Arc::clone(&served);
                        async move { Ok::<_, Infallible>(answer(request, config, &served).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut shutdown => return,
        }
    }
}

fn full(text: &'static str) -> MockBody {
    Full::new(Bytes::from_static(text.as_bytes())).boxed()
}

async fn answer(
    request: Request<Incoming>,
    config: MockConfig,
    served: &AtomicU64,
) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let response = if parts.method == Method::GET && path.ends_with("/models") {
        json_response(full(MODELS))
    } else if parts.method == Method::POST && path.ends_with("/chat/completions") {
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if !config.delay.is_zero() {
            tokio::time::sleep(config.delay).await;
        }
        if wants_stream(&body) {
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(sse_body(config))
                .expect("static response parts")
        } else {
            json_response(full(CHAT_COMPLETION))
        }
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full(r#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#))
            .expect("static response parts")
    };
    served.fetch_add(1, Ordering::Relaxed);
    response
}

fn json_response(body: MockBody) -> Response<MockBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("static response parts")
}

/// Does a chat body ask for a stream? A byte search is enough for the bodies
/// the harness sends, and keeps JSON parsing out of the mock's cost.
pub fn wants_stream(body: &[u8]) -> bool {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    contains(b"\"stream\":true") || contains(b"\"stream\": true")
}

fn sse_body(config: MockConfig) -> MockBody {
    // State: chunks already sent. The last item is `[DONE]`.
    let frames = futures_util::stream::unfold(0usize, move |sent| async move {
        if sent > config.stream_chunks {
            return None;
        }
        if sent > 0 && !config.stream_gap.is_zero() {
            tokio::time::sleep(config.stream_gap).await;
        }
        let text = if sent == config.stream_chunks {
            STREAM_DONE
        } else {
            STREAM_CHUNK
        };
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(text.as_bytes()))),
            sent + 1,
        ))
    });
    StreamBody::new(frames).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flag_is_found_with_or_without_space() {
        assert!(wants_stream(
            br#"{"model":"m","stream":true,"messages":[]}"#
        ));
        assert!(wants_stream(br#"{"stream": true}"#));
        assert!(!wants_stream(br#"{"stream":false}"#));
        assert!(!wants_stream(b"{}"));
    }
}
