//! Full mode end to end: before retrieving, the proxy asks the request's own
//! upstream (with the client's credentials, which the plugin never sees) for
//! the task's vulnerability causes and a draft, and retrieves with those too.
//! The upstream call is bounded: rate-limited, timed out, and any failure
//! leaves the request in fast mode rather than failing it.

use rescue_tests::{MockUpstream, Proxy, call, get, post};
use serde_json::json;

/// A task whose own words do not say what could go wrong; the model's
/// answer (below) does.
const VAGUE_TASK: &str =
    "Write a Python function that returns the customer row for the name the caller passes in";

/// What the mock model answers to every request: causes naming SQL
/// injection, and a draft that concatenates the name into a query.
fn insight_answer() -> serde_json::Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content":
            "CAUSES: the name is concatenated into an SQL query string, so a crafted name changes the query (SQL injection, CWE-89); the database cursor must bind it as a parameter.\n```python\ndef find(cursor, name):\n    cursor.execute(\"SELECT * FROM customers WHERE name = '\" + name + \"'\")\n    return cursor.fetchone()\n```"
        }}]
    })
}

fn chat(task: &str) -> String {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": task}]}).to_string()
}

async fn metric(proxy: &Proxy, line_prefix: &str) -> u64 {
    let metrics = call(proxy.addr, get("/metrics")).await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn full_mode_asks_the_upstream_first_and_retrieves_with_its_answer() {
    let upstream = MockUpstream::json(insight_answer()).await;
    let fast = Proxy::start(&upstream.base_url(), "");
    let full = Proxy::start(&upstream.base_url(), "[retrieval]\nmode = \"full\"\n");

    // Fast mode: one upstream request, and the vague task is not augmented.
    let answer = call(fast.addr, post("/v1/chat/completions", chat(VAGUE_TASK))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("false"));
    assert_eq!(upstream.received().len(), 1);

    // Full mode: the insight call, then the request, now augmented.
    let answer = call(full.addr, post("/v1/chat/completions", chat(VAGUE_TASK))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    assert!(
        answer
            .header("x-rescue-cwes")
            .is_some_and(|c| c.split(',').any(|c| c == "CWE-89")),
        "{:?}",
        answer.header("x-rescue-cwes")
    );
    let received = upstream.received();
    assert_eq!(received.len(), 3);
    let insight = &received[1];
    assert_eq!(insight.method, "POST");
    assert_eq!(insight.path_and_query, "/v1/chat/completions");
    // The client's credentials go to its own upstream, and nothing else of
    // the proxy's making does.
    assert_eq!(
        insight.headers["authorization"],
        "Bearer sk-test-SECRET-0123456789"
    );
    assert!(
        insight
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-rescue"))
    );
    let asked = insight.json();
    assert_eq!(asked["model"], "gpt-test");
    let prompt = asked["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("CAUSES:") && prompt.ends_with(VAGUE_TASK),
        "{prompt}"
    );
    let forwarded = received[2].json();
    let text = forwarded.to_string();
    assert!(text.contains("security_knowledge") && text.contains("CWE-89"));
    assert_eq!(
        metric(&full, "rescue_full_mode_calls_total{outcome=\"ok\"}").await,
        1
    );
}

#[tokio::test]
async fn full_mode_is_per_policy_rule_and_rate_limited() {
    let upstream = MockUpstream::json(insight_answer()).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[retrieval.full]\nmax_calls_per_second = 0.001\nburst = 1\n\n\
         [server]\nteam_header = \"x-team\"\n\n\
         [[policies]]\nname = \"payments\"\nteams = [\"payments\"]\nmode = \"full\"\n",
    );
    let with_team = |team: &str| {
        let mut request = post("/v1/chat/completions", chat(VAGUE_TASK));
        request
            .headers_mut()
            .insert("x-team", team.parse().unwrap());
        request
    };

    // Another team: fast mode, no extra call.
    let answer = call(proxy.addr, with_team("research")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.received().len(), 1);

    // The rule's team: full mode, one extra call.
    let answer = call(proxy.addr, with_team("payments")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    assert_eq!(upstream.received().len(), 3);

    // The bucket (burst 1, a call per 1,000 s) is spent: the next request is
    // served in fast mode, without the extra call, and not failed.
    let answer = call(proxy.addr, with_team("payments")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-rescue-fail"), None);
    assert_eq!(upstream.received().len(), 4);
    assert_eq!(
        metric(
            &proxy,
            "rescue_full_mode_calls_total{outcome=\"rate_limited\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_unreadable_insight_leaves_the_request_in_fast_mode() {
    // An Anthropic request whose upstream answers in OpenAI's shape: the
    // insight call cannot be read, and the request still goes through.
    let upstream = MockUpstream::json(insight_answer()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[retrieval]\nmode = \"full\"\n");
    let body = json!({
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Write a Python function that builds an SQL query from a user-supplied name"}]
    });
    let mut request = post("/v1/messages", body.to_string());
    request
        .headers_mut()
        .insert("x-api-key", "sk-ant-test".parse().unwrap());
    let answer = call(proxy.addr, request).await;
    assert_eq!(answer.status, 200);
    // Fast mode alone augments this task.
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].path_and_query, "/v1/messages");
    assert_eq!(received[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(received[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(received[0].json()["max_tokens"], 700);
    assert_eq!(
        metric(&proxy, "rescue_full_mode_calls_total{outcome=\"failed\"}").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_retrieve_runs_full_mode_through_the_same_plugin_path() {
    let upstream = MockUpstream::json(insight_answer()).await;
    let base_url = upstream.base_url();
    let run = move |mode: &'static str| {
        let base_url = base_url.clone();
        move || {
            std::process::Command::new(rescue_tests::rescue_bin())
                .args(["retrieve", "--mode", mode, "--model", "gpt-test"])
                .args(["--upstream", &base_url])
                .arg("--kb")
                .arg(rescue_tests::repo_root().join("kb.sqlite"))
                .arg(VAGUE_TASK)
                .env("OPENAI_API_KEY", "sk-test-retrieve")
                .env_remove("RESCUE_CONFIG")
                .output()
                .unwrap()
        }
    };
    let fast = tokio::task::spawn_blocking(run("fast")).await.unwrap();
    assert!(fast.status.success(), "{fast:?}");
    let fast: serde_json::Value = serde_json::from_slice(&fast.stdout).unwrap();
    assert_eq!(fast["augmented"], false);
    assert!(
        upstream.received().is_empty(),
        "fast mode calls no upstream"
    );

    let full = tokio::task::spawn_blocking(run("full")).await.unwrap();
    assert!(full.status.success(), "{full:?}");
    let full: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(full["augmented"], true, "{full}");
    let cwes: Vec<&str> = full["cwes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(cwes.contains(&"CWE-89"), "{cwes:?}");
    // Per-facet scores and ranks are reported for every CWE.
    assert!(full["cwes"][0]["lexical"].is_object() || full["cwes"][0]["semantic"].is_object());
    assert!(
        full["text"]
            .as_str()
            .unwrap()
            .contains("security_knowledge")
    );
    let received = upstream.single();
    assert_eq!(received.headers["authorization"], "Bearer sk-test-retrieve");
    assert_eq!(received.json()["model"], "gpt-test");
}
