//! The closed-loop load generator: `concurrency` workers, each on its own
//! keep-alive HTTP/1.1 connection, each sending its next request as soon as
//! the previous response has been read to the end. Bounded both in time and in
//! request count.
//!
//! Closed loop means offered load adapts to the server: latencies are those of
//! a server at its own pace, not of one falling behind a fixed arrival rate
//! (which is why the throughput column is the figure to compare for capacity).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request every worker sends, over and over.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    pub body: Bytes,
}

impl RequestSpec {
    pub fn get(path: &str) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            path: path.to_string(),
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: &str, body: &serde_json::Value) -> RequestSpec {
        RequestSpec {
            method: Method::POST,
            path: path.to_string(),
            body: Bytes::from(body.to_string()),
        }
    }
}

/// When a run stops: whichever bound comes first.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    pub max_requests: u64,
}

/// What one run measured. Latencies are in nanoseconds, one per successful
/// request, in no particular order.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Requests that completed with a 2xx status and a fully read body.
    pub ok: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Responses that carried `x-rescue-augmented: true`.
    pub augmented: u64,
    /// From the first request sent to the last response read.
    pub elapsed: Duration,
    /// Request sent to last body byte read.
    pub latencies_ns: Vec<u64>,
    /// Request sent to first body byte read.
    pub first_byte_ns: Vec<u64>,
}

impl RunResult {
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: RunResult) {
        self.ok += other.ok;
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
        self.augmented += other.augmented;
        self.latencies_ns.extend(other.latencies_ns);
        self.first_byte_ns.extend(other.first_byte_ns);
    }
}

/// Runs `concurrency` closed-loop workers against `addr` until `bounds` is
/// reached. Must be called inside a tokio runtime.
pub async fn run(
    addr: SocketAddr,
    spec: Arc<RequestSpec>,
    concurrency: usize,
    bounds: Bounds,
) -> RunResult {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bounds.duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let spec = Arc::clone(&spec);
            let issued = Arc::clone(&issued);
            tokio::spawn(worker(addr, spec, issued, bounds.max_requests, deadline))
        })
        .collect();
    let mut total = RunResult::default();
    for worker in workers {
        match worker.await {
            Ok(result) => total.merge(result),
            Err(e) => {
                total.errors += 1;
                total.last_error = Some(format!("worker panicked: {e}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn worker(
    addr: SocketAddr,
    spec: Arc<RequestSpec>,
    issued: Arc<AtomicU64>,
    max_requests: u64,
    deadline: Instant,
) -> RunResult {
    let mut result = RunResult::default();
    let host = addr.to_string();
    let mut sender: Option<Sender> = None;
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    fail(&mut result, e);
                    // A refused connection fails at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        match one_request(s, &host, &spec).await {
            Ok((latency, first_byte, augmented)) => {
                result.ok += 1;
                result.augmented += u64::from(augmented);
                result.latencies_ns.push(latency);
                result.first_byte_ns.push(first_byte);
            }
            Err(e) => {
                fail(&mut result, e);
                sender = None;
            }
        }
    }
    result
}

fn fail(result: &mut RunResult, error: String) {
    result.errors += 1;
    result.last_error = Some(error);
}

/// Sends one request and reads the whole response. Returns (latency to last
/// byte, latency to first body byte, whether the proxy augmented it).
async fn one_request(
    sender: &mut Sender,
    host: &str,
    spec: &RequestSpec,
) -> Result<(u64, u64, bool), String> {
    let mut builder = Request::builder()
        .method(spec.method.clone())
        .uri(spec.path.as_str())
        .header("host", host)
        .header("authorization", "Bearer sk-bench-not-a-real-key");
    if !spec.body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(spec.body.clone()))
        .map_err(|e| format!("building the request: {e}"))?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let status = response.status();
    let augmented = response
        .headers()
        .get("x-rescue-augmented")
        .is_some_and(|v| v.as_bytes() == b"true");
    let mut body = response.into_body();
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if first_byte.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first_byte = Some(sent.elapsed());
        }
    }
    let latency = sent.elapsed();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let nanos = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    Ok((
        nanos(latency),
        nanos(first_byte.unwrap_or(latency)),
        augmented,
    ))
}
