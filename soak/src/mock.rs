//! The mock upstream on 127.0.0.1: OpenAI and Anthropic shapes, and the
//! faults the soak needs, chosen per request by the `x-soak-mode` header.
//!
//! It counts every request id it receives, so a proxy that sent a request
//! upstream twice (a retry of a non-idempotent POST) shows up as a
//! duplicate, and it counts streams the proxy cancelled.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::mix::{BLOCKS_HEADER, ECHO_HEADER, MODE_HEADER};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type MockBody = BoxBody<Bytes, BoxError>;

/// Opening tag of the proxy's knowledge block (plugin/src/compose.rs).
pub const OPEN_TAG: &str = "<security_knowledge source=\"rescue-proxy\">";

/// SSE chunks in a normal streamed answer, before `[DONE]`.
pub const STREAM_CHUNKS: usize = 8;
/// Chunks of the long stream a disconnecting client leaves (never all sent).
const LONG_STREAM_CHUNKS: usize = 500;
const LONG_STREAM_GAP: Duration = Duration::from_millis(20);

/// What the mock has seen.
#[derive(Default)]
pub struct MockStats {
    /// Request id (`x-request-id`) -> times received.
    pub seen: Mutex<HashMap<String, u32>>,
    /// Long streams dropped before their end (the proxy cancelled them).
    pub cancelled_streams: AtomicU64,
    /// Requests received without an `x-request-id`.
    pub anonymous: AtomicU64,
}

impl MockStats {
    /// Ids received more than once.
    pub fn duplicates(&self) -> Vec<(String, u32)> {
        let seen = self.seen.lock().expect("stats lock");
        let mut dups: Vec<(String, u32)> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        dups.sort();
        dups
    }

    pub fn times_seen(&self, id: &str) -> u32 {
        self.seen
            .lock()
            .expect("stats lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

/// A running mock; it serves until the runtime it was started on stops.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
}

impl MockUpstream {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Result<MockUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("127.0.0.1:0"))?;
        let addr = listener.local_addr().map_err(Error::io("mock listener"))?;
        let stats = Arc::new(MockStats::default());
        let shared = Arc::clone(&stats);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let stats = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let stats = Arc::clone(&stats);
                        async move { Ok::<_, Infallible>(answer(request, &stats).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockUpstream { addr, stats })
    }

    /// Base URL as the proxy's `--upstream` takes it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Knowledge blocks in every string of a JSON document.
pub fn blocks_in(body: &[u8]) -> usize {
    fn walk(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::String(s) => s.matches(OPEN_TAG).count(),
            serde_json::Value::Array(items) => items.iter().map(walk).sum(),
            serde_json::Value::Object(map) => map.values().map(walk).sum(),
            _ => 0,
        }
    }
    serde_json::from_slice(body).map_or(0, |v| walk(&v))
}

async fn answer(request: Request<Incoming>, stats: &Arc<MockStats>) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = header("x-request-id");
    let mode = header(MODE_HEADER);
    if id.is_empty() {
        stats.anonymous.fetch_add(1, Ordering::Relaxed);
    } else {
        *stats
            .seen
            .lock()
            .expect("stats lock")
            .entry(id.clone())
            .or_default() += 1;
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let blocks = blocks_in(&body);
    let builder = Response::builder()
        .header(ECHO_HEADER, id.as_str())
        .header(BLOCKS_HEADER, blocks.to_string());

    let quoted = serde_json::to_string(&id).expect("a string serialises");
    let response = if parts.method == Method::GET {
        builder
            .header("content-type", "application/json")
            .body(full(format!(
                r#"{{"object":"list","data":[{{"id":"gpt-soak","object":"model"}}],"soak_id":{quoted}}}"#
            )))
    } else {
        match mode.as_str() {
            "error500" => builder
                .status(500)
                .header("content-type", "application/json")
                .body(full(format!(
                    r#"{{"error":{{"message":"mock failure","type":"server_error","param":null,"code":null}},"soak_id":{quoted}}}"#
                ))),
            "stream" => sse(builder, &id, STREAM_CHUNKS, Duration::from_millis(1), End::Done, None),
            "reset" => sse(builder, &id, 2, Duration::from_millis(1), End::Reset, None),
            "long-stream" => sse(
                builder,
                &id,
                LONG_STREAM_CHUNKS,
                LONG_STREAM_GAP,
                End::Done,
                Some(Arc::clone(stats)),
            ),
            "anthropic" => builder.header("content-type", "application/json").body(full(format!(
                r#"{{"id":{quoted},"type":"message","role":"assistant","content":[{{"type":"text","text":"ok"}}],"stop_reason":"end_turn"}}"#
            ))),
            _ => builder.header("content-type", "application/json").body(full(format!(
                r#"{{"id":{quoted},"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}]}}"#
            ))),
        }
    };
    response.expect("static response parts")
}

fn full(text: String) -> MockBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    /// Fail the body: hyper then aborts the connection mid-message.
    Reset,
}

/// A response body fed by a task through a channel, so chunks can be spaced
/// in time and the task notices (a failed send) when the proxy drops it.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

fn sse(
    builder: http::response::Builder,
    id: &str,
    chunks: usize,
    gap: Duration,
    end: End,
    cancelled: Option<Arc<MockStats>>,
) -> Result<Response<MockBody>, http::Error> {
    let chunk = Bytes::from(format!(
        "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok \"}}}}]}}\n\n",
        serde_json::to_string(id).expect("a string serialises")
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                if let Some(stats) = &cancelled {
                    stats.cancelled_streams.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        let last = match end {
            End::Done => Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))),
            End::Reset => Err(BoxError::from("soak: upstream reset mid-stream")),
        };
        let _ = tx.send(last).await;
    });
    builder
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(ChannelBody(rx).boxed())
}
