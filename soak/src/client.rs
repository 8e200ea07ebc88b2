//! One soak client: a closed loop on its own keep-alive HTTP/1.1
//! connection, sending requests of the mix until the deadline, each tagged
//! with a unique id, and judging each answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::mix::{
    BLOCKS_HEADER, ECHO_HEADER, Expect, Kind, MODE_HEADER, PLAIN_TASK, Rng, SQL_TASK,
};
use crate::mock::STREAM_CHUNKS;

/// A request with no answer within this time is lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The answer a correct proxy gives.
    AsExpected,
    /// Answered correctly but unaugmented because the plugin failed and the
    /// policy is fail-open (`x-rescue-fail` says why): defined, reported.
    FailedOpen(String),
    /// The proxy refused it for load (429 or 503 of its own): defined, reported.
    Shed(u16),
    /// Answered, but not as expected.
    Unexpected(String),
    /// No answer: connection error or timeout before the response head.
    Lost(String),
    /// The answer carried another request's id.
    Misrouted(String),
}

/// Counts for one kind of request.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: u64,
    pub as_expected: u64,
    pub failed_open: u64,
    pub shed: u64,
    pub unexpected: u64,
    pub lost: u64,
    pub misrouted: u64,
    /// Outcome detail -> count (expected events too, e.g. the body error a
    /// reset stream must produce).
    pub events: BTreeMap<String, u64>,
}

impl Tally {
    pub fn answered(&self) -> u64 {
        self.sent - self.lost
    }

    pub fn record(&mut self, verdict: &Verdict) {
        self.sent += 1;
        let event = match verdict {
            Verdict::AsExpected => {
                self.as_expected += 1;
                return;
            }
            Verdict::FailedOpen(why) => {
                self.failed_open += 1;
                format!("failed open: {why}")
            }
            Verdict::Shed(status) => {
                self.shed += 1;
                format!("shed: {status}")
            }
            Verdict::Unexpected(what) => {
                self.unexpected += 1;
                format!("UNEXPECTED: {what}")
            }
            Verdict::Lost(why) => {
                self.lost += 1;
                format!("LOST: {why}")
            }
            Verdict::Misrouted(what) => {
                self.misrouted += 1;
                format!("MISROUTED: {what}")
            }
        };
        *self.events.entry(event).or_default() += 1;
    }

    pub fn event(&mut self, name: &str) {
        *self.events.entry(name.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.as_expected += other.as_expected;
        self.failed_open += other.failed_open;
        self.shed += other.shed;
        self.unexpected += other.unexpected;
        self.lost += other.lost;
        self.misrouted += other.misrouted;
        for (k, v) in &other.events {
            *self.events.entry(k.clone()).or_default() += v;
        }
    }
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub by_kind: BTreeMap<Kind, Tally>,
    /// Ids of requests a correct proxy never forwards (bad JSON, oversize),
    /// checked against what the mock saw.
    pub local_only: Vec<String>,
    /// Ids of lost requests, checked against what the mock saw.
    pub lost_ids: Vec<String>,
}

/// Settings shared by all clients.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub proxy: SocketAddr,
    pub seed: u64,
    /// Size of the oversize body (above the proxy's `max_body_bytes`).
    pub oversize_bytes: usize,
}

/// Runs one client until `deadline`.
pub async fn run(settings: Arc<ClientSettings>, client: usize, deadline: Instant) -> ClientReport {
    let mut rng = Rng::new(settings.seed ^ (client as u64).wrapping_mul(0x1000_0001));
    let mut report = ClientReport::default();
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let id = format!("soak-{client:03}-{seq:08}");
        let kind = Kind::pick(rng.next_u32());
        let tally = report.by_kind.entry(kind).or_default();
        if !kind.reaches_upstream() {
            report.local_only.push(id.clone());
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(settings.proxy).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    tally.record(&Verdict::Lost(format!("connect: {e}")));
                    report.lost_ids.push(id);
                    // A refused connection fails at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = build(kind, &id, &settings);
        let verdict =
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, request, kind, &id, tally))
                .await
            {
                Ok(verdict) => verdict,
                Err(_) => Verdict::Lost("no answer within 30 s".into()),
            };
        // After a fault or a hang-up the connection is not reusable.
        if verdict != Verdict::AsExpected
            || matches!(
                kind,
                Kind::UpstreamReset | Kind::ClientDisconnect | Kind::Oversize
            )
        {
            sender = None;
        }
        if matches!(verdict, Verdict::Lost(_)) {
            report.lost_ids.push(id);
        }
        tally.record(&verdict);
    }
    report
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The request for `kind`, tagged with `id` (header and body).
pub fn build(kind: Kind, id: &str, settings: &ClientSettings) -> Request<Full<Bytes>> {
    let chat = |task: &str, stream: bool| {
        json!({"model": "gpt-soak", "stream": stream, "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": format!("{task} (request {id})")}
        ]})
        .to_string()
    };
    let (method, path, mode, body) = match kind {
        Kind::AugmentedChat => (
            "POST",
            "/v1/chat/completions",
            "json",
            chat(SQL_TASK, false),
        ),
        Kind::PlainChat => (
            "POST",
            "/v1/chat/completions",
            "json",
            chat(PLAIN_TASK, false),
        ),
        Kind::Stream => (
            "POST",
            "/v1/chat/completions",
            "stream",
            chat(SQL_TASK, true),
        ),
        Kind::Anthropic => (
            "POST",
            "/v1/messages",
            "anthropic",
            json!({"model": "claude-soak", "max_tokens": 64, "system": "Be brief.", "messages": [
                {"role": "user", "content": format!("{SQL_TASK} (request {id})")}
            ]})
            .to_string(),
        ),
        Kind::Passthrough => ("GET", "/v1/models", "json", String::new()),
        Kind::BadJson => (
            "POST",
            "/v1/chat/completions",
            "json",
            format!("{{\"messages\": [\"{id}\""),
        ),
        Kind::Oversize => {
            let filler = "x".repeat(settings.oversize_bytes);
            ("POST", "/v1/chat/completions", "json", chat(&filler, false))
        }
        Kind::Upstream5xx => (
            "POST",
            "/v1/chat/completions",
            "error500",
            chat(SQL_TASK, false),
        ),
        Kind::UpstreamReset => (
            "POST",
            "/v1/chat/completions",
            "reset",
            chat(SQL_TASK, true),
        ),
        Kind::ClientDisconnect => (
            "POST",
            "/v1/chat/completions",
            "long-stream",
            chat(PLAIN_TASK, true),
        ),
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", settings.proxy.to_string())
        .header("x-request-id", id)
        .header(MODE_HEADER, mode);
    builder = if kind == Kind::Anthropic {
        builder
            .header("x-api-key", "sk-ant-soak-not-a-real-key")
            .header("anthropic-version", "2023-06-01")
    } else {
        builder.header("authorization", "Bearer sk-soak-not-a-real-key")
    };
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("static request parts")
}

fn header<'a>(response: &'a Response<Incoming>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sends one request and judges the answer.
async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    kind: Kind,
    id: &str,
    tally: &mut Tally,
) -> Verdict {
    if let Err(e) = sender.ready().await {
        return Verdict::Lost(format!("connection not ready: {e}"));
    }
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => return Verdict::Lost(format!("before the response head: {e}")),
    };
    let status = response.status().as_u16();
    if header(&response, "x-request-id") != Some(id) {
        return Verdict::Misrouted(format!(
            "x-request-id {:?} on the answer to {id}",
            header(&response, "x-request-id")
        ));
    }
    let from_upstream = header(&response, ECHO_HEADER).is_some();
    if from_upstream && header(&response, ECHO_HEADER) != Some(id) {
        return Verdict::Misrouted(format!(
            "upstream answer for {:?} delivered to {id}",
            header(&response, ECHO_HEADER)
        ));
    }
    if !from_upstream && matches!(status, 429 | 503) {
        let _ = response.into_body().collect().await;
        return Verdict::Shed(status);
    }
    let failure = header(&response, "x-rescue-fail").map(str::to_string);
    let augmented = header(&response, "x-rescue-augmented") == Some("true");
    let blocks = header(&response, BLOCKS_HEADER).map(str::to_string);

    match kind.expect() {
        Expect::Status(want) if status != want => {
            let _ = response.into_body().collect().await;
            Verdict::Unexpected(format!("status {status}, expected {want}"))
        }
        Expect::Status(_) => {
            let body = match response.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return Verdict::Unexpected(format!("body error: {e}")),
            };
            judge_body(kind, id, &body, augmented, blocks.as_deref(), failure)
        }
        Expect::ResetAfterHeaders if status != 200 => {
            Verdict::Unexpected(format!("status {status} for a stream the upstream resets"))
        }
        Expect::ResetAfterHeaders => match response.into_body().collect().await {
            Ok(_) => Verdict::Unexpected(
                "reset stream ended cleanly: truncation hidden from the client".into(),
            ),
            Err(_) => {
                tally.event("expected: body error after upstream reset");
                Verdict::AsExpected
            }
        },
        Expect::FirstChunkThenLeave if status != 200 => {
            Verdict::Unexpected(format!("status {status} for a long stream"))
        }
        Expect::FirstChunkThenLeave => {
            let mut body = response.into_body();
            loop {
                match body.frame().await {
                    Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => {
                        tally.event("expected: client left after the first chunk");
                        return Verdict::AsExpected;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Verdict::Unexpected(format!("long stream failed: {e}")),
                    None => return Verdict::Unexpected("long stream ended at once".into()),
                }
            }
        }
    }
}

/// Checks a complete answer with the expected status.
fn judge_body(
    kind: Kind,
    id: &str,
    body: &[u8],
    augmented: bool,
    blocks: Option<&str>,
    failure: Option<String>,
) -> Verdict {
    let text = String::from_utf8_lossy(body);
    if kind.reaches_upstream() && !text.contains(id) {
        return Verdict::Misrouted(format!("body of the answer to {id} lacks its id"));
    }
    if kind == Kind::Stream {
        let chunks = text.matches("data: {").count();
        if chunks != STREAM_CHUNKS || !text.ends_with("data: [DONE]\n\n") {
            return Verdict::Unexpected(format!("stream of {chunks} chunks without [DONE]"));
        }
    }
    let wants_knowledge = matches!(
        kind,
        Kind::AugmentedChat | Kind::Stream | Kind::Anthropic | Kind::Upstream5xx
    );
    if let Some(why) = failure {
        // Fail-open: forwarded unaugmented, and the header says why.
        return if augmented || blocks != Some("0") {
            Verdict::Unexpected(format!("x-rescue-fail {why} on an augmented request"))
        } else {
            Verdict::FailedOpen(why)
        };
    }
    match (
        kind.reaches_upstream() && kind != Kind::Passthrough,
        wants_knowledge,
    ) {
        (true, true) if !augmented || blocks != Some("1") => Verdict::Unexpected(format!(
            "augmented={augmented}, upstream saw {blocks:?} knowledge blocks (want 1)"
        )),
        (true, false) if augmented || blocks != Some("0") => Verdict::Unexpected(format!(
            "augmented={augmented}, upstream saw {blocks:?} knowledge blocks (want 0)"
        )),
        _ => Verdict::AsExpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_each_verdict_once() {
        let mut t = Tally::default();
        t.record(&Verdict::AsExpected);
        t.record(&Verdict::Lost("timeout".into()));
        t.record(&Verdict::Shed(429));
        t.record(&Verdict::FailedOpen("plugin-timeout".into()));
        assert_eq!(
            (t.sent, t.answered(), t.lost, t.shed, t.failed_open),
            (4, 3, 1, 1, 1)
        );
        assert_eq!(t.events["LOST: timeout"], 1);
        let mut total = Tally::default();
        total.merge(&t);
        total.merge(&t);
        assert_eq!(total.sent, 8);
        assert_eq!(total.events["shed: 429"], 2);
    }

    #[test]
    fn bodies_are_judged_by_kind() {
        let ok = r#"{"id":"soak-1","x":1}"#;
        assert_eq!(
            judge_body(
                Kind::AugmentedChat,
                "soak-1",
                ok.as_bytes(),
                true,
                Some("1"),
                None
            ),
            Verdict::AsExpected
        );
        assert!(matches!(
            judge_body(
                Kind::AugmentedChat,
                "soak-1",
                ok.as_bytes(),
                true,
                Some("2"),
                None
            ),
            Verdict::Unexpected(_)
        ));
        assert!(matches!(
            judge_body(
                Kind::AugmentedChat,
                "soak-2",
                ok.as_bytes(),
                true,
                Some("1"),
                None
            ),
            Verdict::Misrouted(_)
        ));
        assert_eq!(
            judge_body(
                Kind::PlainChat,
                "soak-1",
                ok.as_bytes(),
                false,
                Some("0"),
                None
            ),
            Verdict::AsExpected
        );
        assert_eq!(
            judge_body(
                Kind::AugmentedChat,
                "soak-1",
                ok.as_bytes(),
                false,
                Some("0"),
                Some("plugin-timeout".into())
            ),
            Verdict::FailedOpen("plugin-timeout".into())
        );
        assert_eq!(
            judge_body(Kind::BadJson, "soak-1", b"{}", false, None, None),
            Verdict::AsExpected
        );
    }
}
