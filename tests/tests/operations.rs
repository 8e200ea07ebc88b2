//! What platform teams run the proxy with: policy rules per team and key,
//! client opt-out, request ids, metrics, health, and hot reload of the
//! knowledge base.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rescue_tests::{MockUpstream, Proxy, call, get, post, repo_root};
use serde_json::json;

const SQL_TASK: &str = "Write a Python function that builds an SQL query from a user-supplied name";

fn completion() -> serde_json::Value {
    json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
}

fn chat(task: &str) -> String {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": task}]}).to_string()
}

fn with_headers(
    path: &str,
    body: String,
    headers: &[(&'static str, &str)],
) -> Request<Full<Bytes>> {
    let mut request = post(path, body);
    for &(name, value) in headers {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    request
}

const POLICIES: &str = r#"
[augment]
on_plugin_failure = "open"

[plugin]
fuel = 2000   # every plugin run fails: the failure policy decides what happens

[[policies]]
name = "payments"
teams = ["payments"]
on_plugin_failure = "closed"

[[policies]]
name = "ci-bot"
key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]   # sha256("test")
augment = "never"
"#;

#[tokio::test]
async fn policy_rules_pick_the_failure_policy_per_team_and_key() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), POLICIES);

    let default = call(proxy.addr, post("/v1/chat/completions", chat(SQL_TASK))).await;
    assert_eq!(default.status, 200);
    assert_eq!(
        default.header("x-rescue-fail"),
        Some("plugin-fuel-exhausted"),
        "default: fail-open"
    );

    let payments = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat(SQL_TASK),
            &[("x-rescue-team", "payments")],
        ),
    )
    .await;
    assert_eq!(payments.status, 503, "the payments team is fail-closed");

    let bot = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat(SQL_TASK),
            &[
                ("x-rescue-team", "payments"),
                ("authorization", "Bearer test"),
            ],
        ),
    )
    .await;
    assert_eq!(
        bot.status, 503,
        "first match wins: the team rule comes before the key rule"
    );

    let bot = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat(SQL_TASK),
            &[("authorization", "Bearer test")],
        ),
    )
    .await;
    assert_eq!(bot.status, 200);
    assert_eq!(bot.header("x-rescue-augmented"), Some("false"));
    assert_eq!(
        bot.header("x-rescue-fail"),
        None,
        "augment = never: the plugin is not even called"
    );
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test]
async fn opt_out_is_honoured_only_where_allowed() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[augment]\nallow_opt_out = false\n[[policies]]\nteams = [\"research\"]\nallow_opt_out = true\n",
    );

    let refused = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat(SQL_TASK),
            &[("x-rescue-opt-out", "true")],
        ),
    )
    .await;
    assert_eq!(refused.header("x-rescue-opt-out"), Some("refused"));
    assert_eq!(refused.header("x-rescue-augmented"), Some("true"));

    let honoured = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat(SQL_TASK),
            &[("x-rescue-opt-out", "1"), ("x-rescue-team", "research")],
        ),
    )
    .await;
    assert_eq!(honoured.header("x-rescue-opt-out"), Some("honoured"));
    assert_eq!(honoured.header("x-rescue-augmented"), Some("false"));
    assert_eq!(upstream.received()[1].body, Bytes::from(chat(SQL_TASK)));
}

#[tokio::test]
async fn cwe_scope_limits_what_is_injected() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[[policies]]\ncwes = [\"CWE-79\"]\n");
    let answer = call(proxy.addr, post("/v1/chat/completions", chat(SQL_TASK))).await;
    let cwes = answer.header("x-rescue-cwes").unwrap_or("");
    assert!(!cwes.contains("CWE-89"), "CWE-89 is out of scope: {cwes}");
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_travel_upstream() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");

    let mine = call(
        proxy.addr,
        with_headers(
            "/v1/chat/completions",
            chat("hi"),
            &[("x-request-id", "req-123")],
        ),
    )
    .await;
    assert_eq!(mine.header("x-request-id"), Some("req-123"));
    let made = call(proxy.addr, post("/v1/chat/completions", chat("hi"))).await;
    let id = made
        .header("x-request-id")
        .expect("an id is assigned")
        .to_string();
    assert_eq!(id.len(), 32);
    let seen = upstream.received();
    assert_eq!(seen[0].headers["x-request-id"], "req-123");
    assert_eq!(seen[1].headers["x-request-id"], id.as_str());
    assert!(
        proxy.wait_for_log(&id),
        "the log line carries the request id"
    );
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let upstream = MockUpstream::json(completion()).await;
    let proxy = Proxy::start(&upstream.base_url(), "");
    call(proxy.addr, post("/v1/chat/completions", chat(SQL_TASK))).await;
    call(
        proxy.addr,
        post(
            "/v1/chat/completions",
            chat("What is the capital of France?"),
        ),
    )
    .await;
    call(proxy.addr, get("/v1/models")).await;

    let health = call(proxy.addr, get("/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = call(proxy.addr, get("/readyz")).await;
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(
        ready.json()["kb"]["content_hash"].as_str().unwrap().len(),
        64
    );

    let metrics = call(proxy.addr, get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for expected in [
        "rescue_requests_total{route=\"chat_completions\",status=\"200\"} 2",
        "rescue_requests_total{route=\"passthrough\",status=\"200\"} 1",
        "rescue_augmentation_total{route=\"chat_completions\",outcome=\"augmented\"} 1",
        "rescue_augmentation_total{route=\"chat_completions\",outcome=\"skipped\"} 1",
        "rescue_cwe_injected_total{cwe=\"CWE-89\"} 1",
        "rescue_plugin_duration_seconds_count 1",
        "rescue_added_latency_seconds_count{route=\"chat_completions\"} 2",
        "rescue_upstream_duration_seconds_count{api=\"openai\"} 3",
        "rescue_kb_info{content_hash=",
        "# TYPE rescue_kb_query_seconds_total counter",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let kb_queries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rescue_kb_queries_total "))
        .and_then(|v| v.parse().ok())
        .expect("rescue_kb_queries_total");
    assert!(kb_queries > 0, "the augmented request queried the KB");
    assert!(
        upstream
            .received()
            .iter()
            .all(|r| !r.path_and_query.contains("metrics"))
    );
}

/// A copy of the shipped KB with CWE-89's guideline replaced, re-stamped
/// with its content hash (valid) or not (tampered).
fn variant_kb(dir: &Path, name: &str, marker: &str, restamp: bool) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::copy(repo_root().join("kb.sqlite"), &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE cwe SET guideline = ?1 WHERE id = 89",
        [format!("- {marker}: bind parameters.")],
    )
    .unwrap();
    if restamp {
        let hash = rescue_host::kb::content_hash(&conn).unwrap();
        conn.execute(
            "UPDATE kb_meta SET value = ?1 WHERE key = 'content_hash'",
            [hash],
        )
        .unwrap();
    }
    path
}

async fn injected_text(proxy: &Proxy, upstream: &MockUpstream) -> String {
    call(proxy.addr, post("/v1/chat/completions", chat(SQL_TASK))).await;
    let last = upstream.received().pop().unwrap();
    last.json()["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Starts a proxy on a private copy of the shipped KB, returning the copy's path.
fn proxy_on_a_copy(dir: &Path, upstream: &MockUpstream, toml: &str) -> (Proxy, std::path::PathBuf) {
    let live = dir.join("kb.sqlite");
    std::fs::copy(repo_root().join("kb.sqlite"), &live).unwrap();
    (
        Proxy::try_start(&upstream.base_url(), toml, &live).unwrap(),
        live,
    )
}

/// Waits (up to 20 s, polling) until requests carry knowledge containing `marker`.
async fn wait_until_injected(proxy: &Proxy, upstream: &MockUpstream, marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !injected_text(proxy, upstream).await.contains(marker) {
        assert!(Instant::now() < deadline, "{what}:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hot_reload_swaps_a_good_kb_and_rejects_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::json(completion()).await;
    let (proxy, live) = proxy_on_a_copy(dir.path(), &upstream, "[server]\nreload_poll_ms = 100\n");
    assert!(!injected_text(&proxy, &upstream).await.contains("MARKER-V2"));

    // A new valid KB, moved into place: picked up by the file watcher.
    std::fs::rename(
        variant_kb(dir.path(), "v2.sqlite", "MARKER-V2", true),
        &live,
    )
    .unwrap();
    wait_until_injected(
        &proxy,
        &upstream,
        "MARKER-V2",
        "the new KB was not picked up",
    )
    .await;

    // A tampered KB is refused and the previous one keeps serving.
    std::fs::rename(
        variant_kb(dir.path(), "evil.sqlite", "MARKER-EVIL", false),
        &live,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = call(proxy.addr, get("/metrics")).await;
        if String::from_utf8_lossy(&metrics.body)
            .contains("rescue_reloads_total{result=\"rejected\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tampered KB was not rejected:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = injected_text(&proxy, &upstream).await;
    assert!(
        text.contains("MARKER-V2") && !text.contains("MARKER-EVIL"),
        "{text}"
    );
    assert!(proxy.logs().contains("content hash mismatch"));
}

#[tokio::test]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::json(completion()).await;
    // No polling: only the signal can trigger the reload.
    let (proxy, live) = proxy_on_a_copy(dir.path(), &upstream, "[server]\nreload_poll_ms = 0\n");
    std::fs::rename(
        variant_kb(dir.path(), "v3.sqlite", "MARKER-V3", true),
        &live,
    )
    .unwrap();
    assert!(!injected_text(&proxy, &upstream).await.contains("MARKER-V3"));

    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until_injected(&proxy, &upstream, "MARKER-V3", "SIGHUP did not reload").await;
}

#[tokio::test]
async fn a_killed_proxy_leaves_nothing_in_its_temp_dir() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::json(completion()).await;
    let (mut proxy, live) =
        proxy_on_a_copy(dir.path(), &upstream, "[server]\nreload_poll_ms = 100\n");
    // Serve from the first KB, then from a reloaded one.
    assert!(!injected_text(&proxy, &upstream).await.is_empty());
    std::fs::rename(
        variant_kb(dir.path(), "v4.sqlite", "MARKER-V4", true),
        &live,
    )
    .unwrap();
    wait_until_injected(
        &proxy,
        &upstream,
        "MARKER-V4",
        "the new KB was not picked up",
    )
    .await;

    // SIGKILL, as an orchestrator does after its grace period, or the OOM killer.
    proxy.kill();
    let left: Vec<_> = std::fs::read_dir(proxy.temp_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
