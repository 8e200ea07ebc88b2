//! Limits and upstream faults: every one has a defined outcome and the proxy
//! keeps serving afterwards.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rescue_tests::{MockUpstream, Proxy, call, get, post, send};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chat(stream: bool) -> String {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
}

/// A raw TCP "upstream" that answers every connection with `reply` and closes.
async fn raw_upstream(reply: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

/// The value of one series of the proxy's `/metrics` (0 when absent), e.g.
/// `rescue_upstream_stream_cuts_total{reason="idle"}`.
async fn metric(proxy: &Proxy, series: &str) -> u64 {
    let scrape = call(proxy.addr, get("/metrics")).await;
    String::from_utf8_lossy(&scrape.body)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().unwrap())
}

/// Waits (a little) for a series to reach `expected`: a connection's end is
/// accounted for by its own task, just after the client got its answer.
async fn wait_for_metric(proxy: &Proxy, series: &str, expected: u64) {
    let mut value = 0;
    for _ in 0..100 {
        value = metric(proxy, series).await;
        if value == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} is {value}, expected {expected}");
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_get_503_with_retry_after() {
    let (mock, chunks) = MockUpstream::streaming().await;
    let proxy = Proxy::start(&mock.base_url(), "[server]\nmax_concurrent_requests = 1\n");

    // A streaming response holds the only slot until it ends.
    let response = send(proxy.addr, post("/v1/chat/completions", chat(true))).await;
    assert_eq!(response.status(), 200);
    let refused = call(proxy.addr, post("/v1/chat/completions", chat(false))).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["error"]["code"], "overloaded");
    let anthropic = call(proxy.addr, post("/v1/messages", chat(false))).await;
    assert_eq!(anthropic.json()["error"]["type"], "overloaded_error");
    // Health checks are not requests to the API: they still answer.
    let health = call(proxy.addr, get("/healthz")).await;
    assert_eq!(health.status, 200);

    chunks
        .send(Bytes::from_static(b"data: [DONE]\n\n"))
        .await
        .unwrap();
    drop(chunks);
    response.into_body().collect().await.unwrap();
    mock.set_reply(rescue_tests::Reply::Full {
        status: 200,
        content_type: "application/json",
        body: Bytes::from_static(b"{}"),
    });
    let mut status = 0;
    for _ in 0..50 {
        status = call(proxy.addr, post("/v1/chat/completions", chat(false)))
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the slot is released when the stream ends");
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let mock = MockUpstream::json(json!({})).await;
    let proxy = Proxy::start(&mock.base_url(), "[server]\nmax_header_bytes = 8192\n");
    let big = "x".repeat(16 * 1024);
    let request = Request::get("/v1/models")
        .header("x-big", big)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 431);
    assert!(mock.received().is_empty());
    // hyper answers before the proxy's handler runs: counted apart, and logged.
    wait_for_metric(
        &proxy,
        "rescue_requests_rejected_total{reason=\"header_too_large\"}",
        1,
    )
    .await;
    assert!(proxy.wait_for_log("request refused by the HTTP layer"));
    assert_eq!(call(proxy.addr, get("/v1/models")).await.status, 200);
}

#[tokio::test]
async fn a_malformed_request_is_a_400_from_hyper_and_counted() {
    let mock = MockUpstream::json(json!({})).await;
    let proxy = Proxy::start(&mock.base_url(), "");
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(mock.received().is_empty());
    wait_for_metric(
        &proxy,
        "rescue_requests_rejected_total{reason=\"malformed_request\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_stalled_stream_is_cut_after_the_idle_timeout() {
    let (mock, chunks) = MockUpstream::streaming().await;
    let proxy = Proxy::start(
        &mock.base_url(),
        "[[upstreams]]\napi = \"openai\"\nbase_url = \"http://replaced/v1\"\nidle_timeout_ms = 300\n",
    );
    let response = send(proxy.addr, post("/v1/chat/completions", chat(true))).await;
    let mut body = response.into_body();
    chunks
        .send(Bytes::from_static(b"data: {}\n\n"))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    // The upstream now says nothing (the sender stays open): the proxy cuts it.
    let next = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("cut well before 10 s");
    assert!(
        matches!(next, Some(Err(_))),
        "the client must see an error, not a clean end: {next:?}"
    );
    wait_for_metric(
        &proxy,
        "rescue_upstream_stream_cuts_total{reason=\"idle\"}",
        1,
    )
    .await;
    assert_eq!(
        metric(
            &proxy,
            "rescue_upstream_stream_cuts_total{reason=\"upstream_error\"}"
        )
        .await,
        0
    );
    drop(chunks);
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_reaches_the_client_as_an_error() {
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n",
    )
    .await;
    let proxy = Proxy::start(&upstream, "");
    let response = send(proxy.addr, post("/v1/chat/completions", chat(true))).await;
    assert_eq!(response.status(), 200);
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap();
    assert!(
        collected.is_err(),
        "a truncated upstream stream must not look complete"
    );
    wait_for_metric(
        &proxy,
        "rescue_upstream_stream_cuts_total{reason=\"upstream_error\"}",
        1,
    )
    .await;
    // And the proxy keeps serving.
    let again = call(proxy.addr, post("/v1/chat/completions", "{")).await;
    assert_eq!(again.status, 400);
}

#[tokio::test]
async fn a_malformed_upstream_response_is_a_502() {
    let upstream = raw_upstream(b"this is not HTTP\r\n\r\n").await;
    let proxy = Proxy::start(&upstream, "");
    let answer = call(proxy.addr, post("/v1/chat/completions", chat(false))).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"]["code"], "upstream_unavailable");
}

#[tokio::test]
async fn upstream_5xx_and_malformed_json_pass_through_as_sent() {
    let mock = MockUpstream::start(rescue_tests::Reply::Full {
        status: 500,
        content_type: "application/json",
        body: Bytes::from_static(b"{\"error\": {\"message\": \"boom\"}"),
    })
    .await;
    let proxy = Proxy::start(&mock.base_url(), "");
    let answer = call(proxy.addr, post("/v1/chat/completions", chat(false))).await;
    assert_eq!(answer.status, 500);
    assert_eq!(&answer.body[..], b"{\"error\": {\"message\": \"boom\"}");
}
