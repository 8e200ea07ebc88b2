//! Routing across upstreams and APIs: model patterns, base URLs with a path
//! prefix, Anthropic's routes and error shape, and cancellation of a stream
//! whose client went away.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rescue_tests::{MockUpstream, Proxy, call, get, post, send};
use serde_json::json;

fn chat(model: &str, task: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": task}]}).to_string()
}

#[tokio::test]
async fn requests_go_to_the_upstream_whose_models_match() {
    let local = MockUpstream::json(json!({"from": "local"})).await;
    let cloud = MockUpstream::json(json!({"from": "cloud"})).await;
    let proxy = Proxy::start_configured(&format!(
        "[[upstreams]]\nname = \"local\"\napi = \"openai\"\nbase_url = \"{}\"\nmodels = [\"qwen*\"]\n\
         [[upstreams]]\nname = \"cloud\"\napi = \"openai\"\nbase_url = \"{}\"\n",
        local.base_url(),
        cloud.base_url()
    ));

    let a = call(
        proxy.addr,
        post("/v1/chat/completions", chat("qwen2.5-coder", "hello")),
    )
    .await;
    let b = call(
        proxy.addr,
        post("/v1/chat/completions", chat("gpt-4o", "hello")),
    )
    .await;
    let models = call(proxy.addr, get("/v1/models")).await;

    assert_eq!(a.json()["from"], "local");
    assert_eq!(b.json()["from"], "cloud");
    assert_eq!(
        models.json()["from"],
        "cloud",
        "model-less requests go to an upstream without patterns"
    );
    assert_eq!(local.received().len(), 1);
    assert_eq!(cloud.received().len(), 2);
}

#[tokio::test]
async fn a_model_no_upstream_serves_is_a_404_in_the_client_protocol() {
    let local = MockUpstream::json(json!({})).await;
    let proxy = Proxy::start_configured(&format!(
        "[[upstreams]]\napi = \"openai\"\nbase_url = \"{}\"\nmodels = [\"qwen*\"]\n",
        local.base_url()
    ));
    let answer = call(
        proxy.addr,
        post("/v1/chat/completions", chat("gpt-4o", "hi")),
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"]["code"], "no_upstream");
    let answer = call(proxy.addr, post("/v1/messages", chat("claude", "hi"))).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["type"], "error");
    assert!(local.received().is_empty());
}

#[tokio::test]
async fn base_urls_with_a_path_prefix_work() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let base = format!("http://{}/gateway/openai/v1", mock.addr);
    let proxy = Proxy::start(&base, "");
    call(
        proxy.addr,
        post("/v1/chat/completions?x=1", chat("m", "hello")),
    )
    .await;
    call(proxy.addr, get("/v1/models")).await;
    let paths: Vec<String> = mock
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        [
            "/gateway/openai/v1/chat/completions?x=1",
            "/gateway/openai/v1/models"
        ]
    );
}

#[tokio::test]
async fn anthropic_messages_are_augmented_and_keep_their_headers() {
    let mock = MockUpstream::json(json!({"type": "message", "content": []})).await;
    let proxy = Proxy::start(&mock.base_url(), "");
    let body = json!({
        "model": "claude-test", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Write a Python function that builds an SQL query from a user-supplied name"}]
    });
    let request = Request::post("/v1/messages")
        .header("x-api-key", "sk-ant-SECRET")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();

    let answer = call(proxy.addr, request).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    let seen = mock.single();
    assert_eq!(seen.path_and_query, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-SECRET");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    let sent = seen.json();
    assert!(
        sent["system"]
            .as_str()
            .unwrap()
            .starts_with("<security_knowledge")
    );
    assert_eq!(sent["messages"], body["messages"]);
}

#[tokio::test]
async fn anthropic_routes_get_anthropic_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(
        &format!("http://127.0.0.1:{port}/v1"),
        "[server]\nmax_body_bytes = 4096\n",
    );

    let bad = call(proxy.addr, post("/v1/messages", "{\"messages\": ")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["type"], "error");
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");

    let big = call(
        proxy.addr,
        post("/v1/messages/count_tokens", "x".repeat(5000)),
    )
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"]["type"], "request_too_large");

    let down = call(proxy.addr, post("/v1/messages", chat("claude", "hello"))).await;
    assert_eq!(down.status, 502);
    assert_eq!(down.json()["error"]["type"], "api_error");
    assert!(
        down.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream")
    );

    let openai_down = call(proxy.addr, post("/v1/chat/completions", chat("m", "hello"))).await;
    assert_eq!(openai_down.json()["error"]["code"], "upstream_unavailable");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let (mock, chunks) = MockUpstream::streaming().await;
    let proxy = Proxy::start(&mock.base_url(), "");
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello"}]});

    let response = send(proxy.addr, post("/v1/chat/completions", body.to_string())).await;
    let mut stream = response.into_body();
    chunks
        .send(Bytes::from_static(b"data: {}\n\n"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(stream);

    // The proxy drops its upstream request, so the mock's stream receiver goes away.
    tokio::time::timeout(Duration::from_secs(10), chunks.closed())
        .await
        .expect("the upstream stream must be cancelled after the client left");
}

#[tokio::test]
async fn a_long_stream_does_not_grow_the_proxy() {
    let (mock, chunks) = MockUpstream::streaming().await;
    let proxy = Proxy::start(&mock.base_url(), "");
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello"}]});
    let response = send(proxy.addr, post("/v1/chat/completions", body.to_string())).await;
    let mut stream = response.into_body();

    let chunk = Bytes::from(format!("data: {}\n\n", "x".repeat(64 * 1024 - 8)));
    let total_chunks = 1024; // 64 MiB
    let writer = tokio::spawn(async move {
        for _ in 0..total_chunks {
            if chunks.send(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    let mut received = 0usize;
    let mut rss_after_warmup = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), stream.frame())
        .await
        .unwrap()
    {
        received += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
        if rss_after_warmup == 0 && received > 4 << 20 {
            rss_after_warmup = proxy.rss_kib();
        }
    }
    writer.await.unwrap();
    assert_eq!(received, total_chunks * 64 * 1024);
    let grown = proxy.rss_kib().saturating_sub(rss_after_warmup);
    assert!(
        grown < 16 * 1024,
        "proxy RSS grew by {grown} KiB over a 64 MiB stream"
    );
}
