//! The soak's mock upstream on loopback, driven directly: each mode answers
//! as the soak's checks assume, ids are counted, cancelled streams noticed.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rescue_soak::mix::{BLOCKS_HEADER, ECHO_HEADER, MODE_HEADER};
use rescue_soak::mock::{MockUpstream, OPEN_TAG, STREAM_CHUNKS};

async fn send(
    mock: &MockUpstream,
    id: &str,
    mode: &str,
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(mock.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::post("/v1/chat/completions")
        .header("host", "mock")
        .header("x-request-id", id)
        .header(MODE_HEADER, mode)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn modes_answer_as_the_checks_expect() {
    let mock = MockUpstream::start().await.unwrap();
    let knowledge = serde_json::json!({"messages": [{"role": "system", "content": format!("{OPEN_TAG}\nk\n</security_knowledge>")}]});

    let ok = send(&mock, "a", "json", &knowledge.to_string()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()[ECHO_HEADER], "a");
    assert_eq!(ok.headers()[BLOCKS_HEADER], "1");
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"a\""));

    let failed = send(&mock, "b", "error500", "{}").await;
    assert_eq!(failed.status(), 500);
    assert_eq!(failed.headers()[BLOCKS_HEADER], "0");

    let stream = send(&mock, "c", "stream", "{}").await;
    let text = stream.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(text.matches("data: {").count(), STREAM_CHUNKS);
    assert!(text.ends_with("data: [DONE]\n\n"));

    let reset = send(&mock, "d", "reset", "{}").await;
    assert_eq!(reset.status(), 200);
    assert!(
        reset.into_body().collect().await.is_err(),
        "a reset stream must fail at the client"
    );

    let long = send(&mock, "e", "long-stream", "{}").await;
    let mut body = long.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while mock
        .stats
        .cancelled_streams
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped stream was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    send(&mock, "a", "json", "{}").await;
    assert_eq!(mock.stats.duplicates(), vec![("a".to_string(), 2)]);
    assert_eq!(mock.stats.times_seen("b"), 1);
}
