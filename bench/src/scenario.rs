//! The traffic the harness measures, each sent once directly to the mock and
//! once through the proxy: ordinary chat (passed through), the model list
//! (passed through, no body), security-relevant coding tasks (augmented in
//! fast mode: one that injects one CWE, a broad one that injects four), and
//! both chat kinds streamed.

use serde_json::json;

use crate::inproc::{BROAD_TASK, SQL_TASK};
use crate::load::RequestSpec;

/// One kind of request.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub spec: RequestSpec,
    /// Through the proxy, must every response say `x-rescue-augmented: true`?
    pub augmented: bool,
    /// Is the answer an SSE stream (so time to first byte matters)?
    pub streaming: bool,
}

pub const CHAT_PATH: &str = "/v1/chat/completions";
pub const PASSTHROUGH_TASK: &str = "What is the capital of France?";

fn chat(task: &str, stream: bool) -> serde_json::Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": task}
        ],
        "temperature": 0.2
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "passthrough-chat",
            what: "non-code chat (detect policy keeps it away from the plugin)",
            spec: RequestSpec::post_json(CHAT_PATH, &chat(PASSTHROUGH_TASK, false)),
            augmented: false,
            streaming: false,
        },
        Scenario {
            name: "passthrough-models",
            what: "GET /v1/models (forwarded, body streamed)",
            spec: RequestSpec::get("/v1/models"),
            augmented: false,
            streaming: false,
        },
        Scenario {
            name: "augmented-chat",
            what: "SQL coding task: plugin run + knowledge injected",
            spec: RequestSpec::post_json(CHAT_PATH, &chat(SQL_TASK, false)),
            augmented: true,
            streaming: false,
        },
        Scenario {
            name: "augmented-broad",
            what: "broad C task: four CWEs injected, the examples of four ranked",
            spec: RequestSpec::post_json(CHAT_PATH, &chat(BROAD_TASK, false)),
            augmented: true,
            streaming: false,
        },
        Scenario {
            name: "passthrough-stream",
            what: "non-code chat, SSE answer",
            spec: RequestSpec::post_json(CHAT_PATH, &chat(PASSTHROUGH_TASK, true)),
            augmented: false,
            streaming: true,
        },
        Scenario {
            name: "augmented-stream",
            what: "SQL coding task, SSE answer",
            spec: RequestSpec::post_json(CHAT_PATH, &chat(SQL_TASK, true)),
            augmented: true,
            streaming: true,
        },
    ]
}
