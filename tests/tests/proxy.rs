//! End-to-end behaviour of the proxy on the OpenAI chat route and pass-through:
//! the real binary, the shipped kb.sqlite, a mock upstream on loopback.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rescue_tests::{MockUpstream, Proxy, Reply, call, get, post, send};
use serde_json::json;

const SQL_TASK: &str = "Write a Python function that builds an SQL query from a user-supplied name";

fn completion() -> serde_json::Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
}

fn chat_body(task: &str) -> String {
    // Odd spacing, key order, an unknown field and exact numbers: all must survive.
    format!(
        "{{ \"model\":\"gpt-test\",  \"temperature\": 0.10, \"messages\":[{{\"role\":\"system\",\"content\":\"You are terse.\"}},{{\"role\":\"user\",\"content\":{}}}], \"x_vendor\": {{\"z\": 1, \"a\": [1.0e2]}} }}",
        serde_json::to_string(task).unwrap()
    )
}

#[tokio::test]
async fn non_code_request_reaches_upstream_byte_for_byte() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");
    let body = chat_body("What is the capital of France?");

    let answer = call(
        proxy.addr,
        post("/v1/chat/completions?trace=1", body.clone()),
    )
    .await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), completion());
    assert_eq!(answer.header("x-rescue-augmented"), Some("false"));
    assert_eq!(answer.header("x-upstream-marker"), Some("mock"));
    let seen = upstream.single();
    assert_eq!(
        seen.body,
        Bytes::from(body),
        "body must be forwarded unchanged"
    );
    assert_eq!(seen.path_and_query, "/v1/chat/completions?trace=1");
    assert_eq!(
        seen.headers["authorization"],
        "Bearer sk-test-SECRET-0123456789"
    );
    assert_eq!(seen.headers["host"], upstream.addr.to_string().as_str());
}

#[tokio::test]
async fn sql_task_is_augmented_with_cwe_89_guidance() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");

    let answer = call(
        proxy.addr,
        post("/v1/chat/completions", chat_body(SQL_TASK)),
    )
    .await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    let cwes = answer.header("x-rescue-cwes").expect("CWE header");
    assert!(cwes.split(',').any(|c| c == "CWE-89"), "CWEs were {cwes}");

    let sent = upstream.single().json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "one knowledge message added: {sent}");
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(messages[1]["role"], "system");
    let knowledge = messages[1]["content"].as_str().unwrap();
    assert!(knowledge.starts_with("<security_knowledge"), "{knowledge}");
    assert!(knowledge.contains("CWE-89"), "{knowledge}");
    assert!(knowledge.contains("# General Security Guidelines"));
    assert_eq!(messages[2], json!({"role": "user", "content": SQL_TASK}));
    // Everything else is as the client sent it: its order, and each value's
    // exact text (spacing, number spelling).
    let text = String::from_utf8(upstream.single().body.to_vec()).unwrap();
    assert!(
        text.starts_with("{\"model\":\"gpt-test\",\"temperature\":0.10,\"messages\":"),
        "{text}"
    );
    assert!(
        text.ends_with(",\"x_vendor\":{\"z\": 1, \"a\": [1.0e2]}}"),
        "{text}"
    );
}

#[tokio::test]
async fn user_prefix_placement_prepends_to_the_last_user_turn() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[augment]\nplacement = \"user-prefix\"\n",
    );

    let answer = call(
        proxy.addr,
        post("/v1/chat/completions", chat_body(SQL_TASK)),
    )
    .await;

    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    let sent = upstream.single().json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.starts_with("<security_knowledge"));
    assert!(user.ends_with(SQL_TASK));
}

#[tokio::test]
async fn policy_never_passes_code_requests_through() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[augment]\npolicy = \"never\"\n");
    let body = chat_body(SQL_TASK);

    let answer = call(proxy.addr, post("/v1/chat/completions", body.clone())).await;

    assert_eq!(answer.header("x-rescue-augmented"), Some("false"));
    assert_eq!(upstream.single().body, Bytes::from(body));
}

#[tokio::test]
async fn streamed_response_arrives_chunk_by_chunk() {
    let (upstream, chunks) = MockUpstream::streaming().await;
    let proxy = Proxy::start(&upstream.base_url(), "");
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": SQL_TASK}]});

    let response = send(proxy.addr, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-rescue-augmented"], "true");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"def\"}}]}\n\n";
    chunks.send(Bytes::from(first)).await.unwrap();
    // The mock has not sent the rest: if the proxy buffered, this would time out.
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk must arrive before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from(first));

    let last = "data: [DONE]\n\n";
    chunks.send(Bytes::from(last)).await.unwrap();
    drop(chunks);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::from(last));
}

#[tokio::test]
async fn other_paths_pass_through_verbatim() {
    let upstream = MockUpstream::start(Reply::Full {
        status: 200,
        content_type: "application/json",
        body: Bytes::from_static(b"{\"object\":\"list\",\"data\":[{\"id\":\"m1\"}]}"),
    })
    .await;
    let proxy = Proxy::start(&upstream.base_url(), "");

    let request = Request::get("/v1/models?limit=2")
        .header("authorization", "Bearer k")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = call(proxy.addr, request).await;

    assert_eq!(answer.status, 200);
    assert_eq!(
        &answer.body[..],
        b"{\"object\":\"list\",\"data\":[{\"id\":\"m1\"}]}"
    );
    assert!(answer.header("x-rescue-augmented").is_none());
    let seen = upstream.single();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path_and_query, "/v1/models?limit=2");
    assert_eq!(seen.headers["x-custom"], "kept");
    assert!(
        seen.headers.get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop"
    );

    // A POST elsewhere keeps its body byte for byte too.
    let embeddings = "{\"input\": \"write a SQL query\",  \"model\":\"e\"}";
    call(proxy.addr, post("/v1/embeddings", embeddings)).await;
    assert_eq!(upstream.received()[1].body, Bytes::from(embeddings));
}

#[tokio::test]
async fn upstream_status_and_error_bodies_pass_through() {
    let upstream = MockUpstream::start(Reply::Full {
        status: 429,
        content_type: "application/json",
        body: Bytes::from_static(b"{\"error\":{\"message\":\"slow down\"}}"),
    })
    .await;
    let proxy = Proxy::start(&upstream.base_url(), "");
    let answer = call(
        proxy.addr,
        post("/v1/chat/completions", chat_body("hello there")),
    )
    .await;
    assert_eq!(answer.status, 429);
    assert_eq!(&answer.body[..], b"{\"error\":{\"message\":\"slow down\"}}");
}

fn assert_openai_error(answer: &rescue_tests::Answer, status: u16, code: &str) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

#[tokio::test]
async fn bad_json_is_a_400_and_the_proxy_keeps_serving() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");

    let answer = call(proxy.addr, post("/v1/chat/completions", "{\"messages\": [")).await;
    assert_openai_error(&answer, 400, "invalid_json");
    assert!(upstream.received().is_empty());

    let answer = call(proxy.addr, post("/v1/chat/completions", chat_body("hi"))).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn oversized_body_is_a_413() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[server]\nmax_body_bytes = 2048\n");

    let big = chat_body(&"x".repeat(4096));
    let answer = call(proxy.addr, post("/v1/chat/completions", big.clone())).await;
    assert_openai_error(&answer, 413, "body_too_large");

    // Without a Content-Length (chunked), the limit still holds.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        for chunk in big.as_bytes().chunks(1000) {
            let _ = tx
                .send(Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
                .await;
        }
    });
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let response = sender
        .send_request(
            Request::post("/v1/chat/completions")
                .header("host", "x")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn upstream_down_is_a_502() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{port}/v1"), "");
    let answer = call(proxy.addr, post("/v1/chat/completions", chat_body("hello"))).await;
    assert_openai_error(&answer, 502, "upstream_unavailable");
    let answer = call(proxy.addr, get("/v1/models")).await;
    assert_openai_error(&answer, 502, "upstream_unavailable");
}

#[tokio::test]
async fn upstream_silence_is_a_504() {
    let upstream = MockUpstream::start(Reply::Hang).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[[upstreams]]\napi = \"openai\"\nbase_url = \"http://replaced-by-flag/v1\"\nresponse_timeout_ms = 300\n",
    );
    let answer = call(proxy.addr, post("/v1/chat/completions", chat_body("hello"))).await;
    assert_openai_error(&answer, 504, "upstream_timeout");
}

#[tokio::test]
async fn fuel_exhaustion_fails_open_by_default() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[plugin]\nfuel = 2000\n");
    let body = chat_body(SQL_TASK);

    let answer = call(proxy.addr, post("/v1/chat/completions", body.clone())).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("false"));
    assert_eq!(
        answer.header("x-rescue-fail"),
        Some("plugin-fuel-exhausted")
    );
    assert_eq!(
        upstream.single().body,
        Bytes::from(body),
        "fail-open forwards the original request"
    );
    assert!(
        proxy.wait_for_log("plugin-fuel-exhausted"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn fuel_exhaustion_fails_closed_when_configured() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[plugin]\nfuel = 2000\n[augment]\non_plugin_failure = \"closed\"\n",
    );

    let answer = call(
        proxy.addr,
        post("/v1/chat/completions", chat_body(SQL_TASK)),
    )
    .await;

    assert_openai_error(&answer, 503, "security_augmentation_failed");
    assert_eq!(
        answer.header("x-rescue-fail"),
        Some("plugin-fuel-exhausted")
    );
    assert!(
        upstream.received().is_empty(),
        "fail-closed must not reach the upstream"
    );
    // Requests the policy does not send to the plugin are unaffected.
    let answer = call(
        proxy.addr,
        post(
            "/v1/chat/completions",
            chat_body("What is the capital of France?"),
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn api_keys_never_reach_the_logs() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");
    call(
        proxy.addr,
        post("/v1/chat/completions", chat_body(SQL_TASK)),
    )
    .await;
    call(proxy.addr, post("/v1/chat/completions", "not json")).await;
    // The last request's log line (bad JSON, 400) is written after its response.
    assert!(proxy.wait_for_log("status=400"), "{}", proxy.logs());
    let logs = proxy.logs();
    assert!(
        logs.contains("request"),
        "expected request log lines:\n{logs}"
    );
    assert!(
        !logs.contains("SECRET"),
        "API key leaked into logs:\n{logs}"
    );
    assert!(
        !logs.contains("user-supplied"),
        "prompt text leaked into logs:\n{logs}"
    );
}
