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

/// What the mock model answers to every request: a "yes" verdict, causes naming SQL
/// injection, and a draft that concatenates the name into a query.
fn insight_answer() -> serde_json::Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content":
            "RISK: yes\nCAUSES: the name is concatenated into an SQL query string, so a crafted name changes the query (SQL injection, CWE-89); the database cursor must bind it as a parameter.\n```python\ndef find(cursor, name):\n    cursor.execute(\"SELECT * FROM customers WHERE name = '\" + name + \"'\")\n    return cursor.fetchone()\n```"
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
        // The cache is off: the third request repeats the second's task.
        "[retrieval.full]\nmax_calls_per_second = 0.001\nburst = 1\ncache_entries = 0\n\n\
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
async fn an_agent_loop_asks_the_model_once_per_task_and_key() {
    let upstream = MockUpstream::json(insight_answer()).await;
    let proxy = Proxy::start(&upstream.base_url(), "[retrieval]\nmode = \"full\"\n");
    // Two steps of an agent loop: the last user turn (the task) repeats.
    let step = |tool_result: &str| {
        json!({"model": "gpt-test", "messages": [
            {"role": "user", "content": VAGUE_TASK},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "read_file", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": tool_result}
        ]})
        .to_string()
    };
    for result in ["first", "second"] {
        let answer = call(proxy.addr, post("/v1/chat/completions", step(result))).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    }
    let asked = |received: &[rescue_tests::Recorded]| {
        received
            .iter()
            .filter(|r| r.json()["max_tokens"] == 700)
            .count()
    };
    assert_eq!(upstream.received().len(), 3, "one model call, two forwards");
    assert_eq!(
        metric(&proxy, "rescue_full_mode_calls_total{outcome=\"cached\"}").await,
        1
    );

    // Another key asks again: no tenant is served another's answer.
    let mut request = post("/v1/chat/completions", step("third"));
    request
        .headers_mut()
        .insert("authorization", "Bearer sk-test-OTHER".parse().unwrap());
    let answer = call(proxy.addr, request).await;
    assert_eq!(answer.header("x-rescue-augmented"), Some("true"));
    assert_eq!(asked(&upstream.received()), 2);
    assert_eq!(
        metric(&proxy, "rescue_full_mode_calls_total{outcome=\"ok\"}").await,
        2
    );
}

/// Polls `metric` until it reaches `want` (or a generous deadline passes).
async fn metric_reaches(proxy: &Proxy, line_prefix: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let value = metric(proxy, line_prefix).await;
        if value >= want || std::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mode_runs_waiting_on_the_upstream_never_hold_up_other_requests() {
    // The model never answers: the one full-mode slot stays taken by the
    // first request for the whole test.
    let upstream = MockUpstream::start(rescue_tests::Reply::Hang).await;
    let proxy = Proxy::start(
        &upstream.base_url(),
        "[plugin]\nmax_instances = 1\n\n\
         [retrieval.full]\nmax_in_flight = 1\ntimeout_ms = 60000\n\n\
         [server]\nteam_header = \"x-team\"\n\n\
         [[policies]]\nname = \"payments\"\nteams = [\"payments\"]\nmode = \"full\"\n",
    );
    let send = |team: &'static str| {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let mut request = post("/v1/chat/completions", chat(VAGUE_TASK));
            request
                .headers_mut()
                .insert("x-team", team.parse().unwrap());
            call(addr, request).await
        })
    };
    let received = |n: usize| {
        let upstream = &upstream;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while upstream.received().len() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            upstream.received().len()
        }
    };

    let _first = send("payments");
    assert_eq!(received(1).await, 1, "the first request's model call");
    // Every full-mode slot is waiting: the next full-mode request is
    // retrieved in fast mode and forwarded, not queued behind it.
    let _second = send("payments");
    assert_eq!(
        metric_reaches(&proxy, "rescue_full_mode_calls_total{outcome=\"busy\"}", 1).await,
        1
    );
    assert_eq!(received(2).await, 2, "forwarded in fast mode");
    // A fast-mode request gets the plugin's only ordinary slot.
    let _third = send("research");
    assert_eq!(received(3).await, 3);
    let failures = call(proxy.addr, get("/metrics")).await;
    let text = String::from_utf8_lossy(&failures.body);
    assert!(
        !text.contains("rescue_plugin_failures_total{"),
        "no plugin run timed out waiting for a slot:\n{text}"
    );
    let asked: Vec<bool> = upstream
        .received()
        .iter()
        .map(|r| r.json()["max_tokens"] == 700)
        .collect();
    assert_eq!(asked, [true, false, false], "one model call, two forwards");
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

/// `rescue eval` with `args`, on one task file in `dir`, after the
/// configuration `config` (written to rescue.toml).
fn eval(dir: &std::path::Path, config: &str, args: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("rescue.toml"), config).unwrap();
    let mut all = vec!["eval", "-c", "rescue.toml", "tasks.jsonl"];
    all.extend_from_slice(args);
    rescue_tests::run_rescue(&all, dir)
}

/// The vague task in words that name no language.
const VAGUE_TASK_ANY_LANGUAGE: &str =
    "Write a function that returns the customer row for the name the caller passes in";

/// The task file: the vague task (gold CWE-89) in Python, and in words that
/// name no language.
fn write_tasks(dir: &std::path::Path) {
    let tasks = [
        json!({"id": "vague", "lang": "python", "cwe": ["CWE-89"], "prompt": VAGUE_TASK}),
        json!({"id": "vague-any", "cwe": ["CWE-89"], "prompt": VAGUE_TASK_ANY_LANGUAGE}),
    ];
    let lines: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    std::fs::write(dir.join("tasks.jsonl"), lines.join("\n")).unwrap();
}

/// The `| tasks | n | ...` row's columns.
fn tasks_row(table: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with("| tasks |"))
        .unwrap_or_else(|| panic!("{table}"))
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_measures_full_mode_against_the_given_upstream() {
    let upstream = MockUpstream::json(insight_answer()).await;
    let dir = tempfile::tempdir().unwrap();
    write_tasks(dir.path());
    let path = dir.path().to_path_buf();
    let fast = tokio::task::spawn_blocking({
        let path = path.clone();
        move || eval(&path, "", &[])
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&fast.stdout).into_owned();
    // Columns: "", set, n, R@1 ... aug (index 11).
    assert_eq!(tasks_row(&table)[11], "0.000", "{table}");
    assert!(!table.contains("full-mode calls"), "{table}");
    assert!(
        upstream.received().is_empty(),
        "fast eval calls no upstream"
    );

    // A rate limit far below the task count: eval waits for it instead of
    // measuring some tasks in fast mode.
    let base_url = upstream.base_url();
    let full = tokio::task::spawn_blocking(move || {
        eval(
            &path,
            "[retrieval.full]\nmax_calls_per_second = 20.0\nburst = 1\n",
            &[
                "--mode",
                "full",
                "--upstream",
                &base_url,
                "--model",
                "gpt-test",
                "--jobs",
                "2",
            ],
        )
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&full.stdout).into_owned();
    let row = tasks_row(&table);
    assert_eq!(
        (row[3].as_str(), row[11].as_str()),
        ("1.000", "1.000"),
        "{table}"
    );
    assert!(table.contains("full-mode calls: 2 ok"), "{table}");
    let questions: Vec<String> = upstream
        .received()
        .iter()
        .map(|r| {
            r.json()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(questions.len(), 2);
    // The question names the language when the task has one.
    assert_eq!(
        questions
            .iter()
            .filter(|q| q.contains("Language: python\n\nTask:\n"))
            .count(),
        1,
        "{questions:?}"
    );
    assert!(
        questions
            .iter()
            .any(|q| q.ends_with(&format!("else.\n\nTask:\n{VAGUE_TASK_ANY_LANGUAGE}"))),
        "{questions:?}"
    );
}

/// scripts/recorded-upstream.py, the way EVAL.md measures full mode: record
/// the questions, answer them, replay the answers through `rescue eval`.
#[test]
fn recorded_answers_replay_through_eval() {
    let dir = tempfile::tempdir().unwrap();
    write_tasks(dir.path());
    let script = rescue_tests::repo_root().join("scripts/recorded-upstream.py");
    let serve = |action: &str, file: &str| {
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .args([action, file])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the recorded upstream");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        (child, format!("http://{addr}/v1"))
    };
    let full = |base_url: &str| {
        let output = eval(
            dir.path(),
            "",
            &["--mode", "full", "--upstream", base_url, "--model", "m"],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let (mut recorder, base_url) = serve("record", "questions.jsonl");
    full(&base_url);
    recorder.kill().unwrap();
    recorder.wait().unwrap();
    let questions = std::fs::read_to_string(dir.path().join("questions.jsonl")).unwrap();
    let answer = insight_answer()["choices"][0]["message"]["content"].clone();
    let answers: Vec<String> = questions
        .lines()
        .map(|l| {
            let q: serde_json::Value = serde_json::from_str(l).unwrap();
            json!({"sha256": q["sha256"], "answer": answer}).to_string()
        })
        .collect();
    assert_eq!(answers.len(), 2, "{questions}");

    // One answer only: the other task's call fails and is counted.
    std::fs::write(dir.path().join("answers.jsonl"), &answers[0]).unwrap();
    let (mut replayer, base_url) = serve("replay", "answers.jsonl");
    let table = full(&base_url);
    replayer.kill().unwrap();
    replayer.wait().unwrap();
    assert!(table.contains("full-mode calls: 1 failed, 1 ok"), "{table}");

    std::fs::write(dir.path().join("answers.jsonl"), answers.join("\n")).unwrap();
    let (mut replayer, base_url) = serve("replay", "answers.jsonl");
    let table = full(&base_url);
    replayer.kill().unwrap();
    replayer.wait().unwrap();
    assert!(table.contains("full-mode calls: 2 ok"), "{table}");
    let row = tasks_row(&table);
    assert_eq!(
        (row[3].as_str(), row[11].as_str()),
        ("1.000", "1.000"),
        "{table}"
    );
}
