//! The OpenAI Chat Completions shape: facets from `messages`, the knowledge
//! block applied as a system message or a prefix of the last user turn, and
//! OpenAI-style error bodies.
//!
//! Facets are read from a parsed `serde_json::Value`; the body is rewritten with
//! `protocol::raw`, so every field the proxy does not touch (known or not)
//! keeps its order and its exact text.

use serde_json::{Value, json};

use super::raw::{self, RawObject};
use crate::config::Placement;
use crate::facets;
use crate::runtime::RequestFacets;

/// The text of a message's `content`: a string, or the `text` parts of an
/// array of content parts (images and audio are skipped).
pub fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text" || t == "input_text")
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// Facets of a chat request: the last user turn is the task; earlier user
/// and assistant turns are searched for code. `None` when the body has no
/// `messages` array or no user turn with text (nothing to augment).
pub fn chat_facets(body: &Value) -> Option<RequestFacets> {
    let messages = body.get("messages")?.as_array()?;
    let last_user = messages.iter().rposition(|m| role(m) == Some("user"))?;
    let task = content_text(messages[last_user].get("content")?)?;
    let earlier: Vec<String> = messages[..last_user]
        .iter()
        .filter(|m| matches!(role(m), Some("user" | "assistant")))
        .filter_map(|m| m.get("content").and_then(content_text))
        .collect();
    let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
    Some(facets::extract(&task, &earlier))
}

#[derive(serde::Deserialize)]
struct RoleOnly {
    role: Option<String>,
}

fn raw_role(message: &serde_json::value::RawValue) -> Option<String> {
    serde_json::from_str::<RoleOnly>(message.get())
        .ok()
        .and_then(|m| m.role)
}

/// Inserts the knowledge block into a chat request body and returns the new
/// body, or `None` (leave the request alone) when it has no place for it.
/// Only `messages` is rebuilt, and within it only the message that changes;
/// every other byte of every other value is the client's.
pub fn apply_chat(body: &str, knowledge: &str, placement: Placement) -> Option<String> {
    let mut top = RawObject::parse(body)?;
    let mut messages = raw::array_elements(top.get("messages")?)?;
    match placement {
        Placement::System => {
            // After the client's own leading instructions, before the dialogue:
            // the client's system prompt keeps its first position.
            let at = messages
                .iter()
                .position(|m| !matches!(raw_role(m).as_deref(), Some("system" | "developer")))
                .unwrap_or(messages.len());
            messages.insert(
                at,
                raw::to_raw(&json!({"role": "system", "content": knowledge})),
            );
        }
        Placement::UserPrefix => {
            let last_user = messages
                .iter()
                .rposition(|m| raw_role(m).as_deref() == Some("user"))?;
            let mut message = RawObject::parse(messages[last_user].get())?;
            let content = message.get("content")?;
            let new_content = match serde_json::from_str::<Value>(content.get()).ok()? {
                Value::String(text) => raw::to_raw(&format!("{knowledge}\n{text}")),
                Value::Array(_) => {
                    let mut parts = raw::array_elements(content)?;
                    parts.insert(0, raw::to_raw(&json!({"type": "text", "text": knowledge})));
                    raw::raw_array(&parts)
                }
                _ => return None,
            };
            message.set("content", new_content);
            messages[last_user] = message.to_raw();
        }
    }
    top.set("messages", raw::raw_array(&messages));
    Some(top.to_json())
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> &'static str {
        r#"{"model":"m", "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1e5,"a":2}}"#
    }

    #[test]
    fn system_placement_keeps_everything_else() {
        let text = apply_chat(body(), "KNOWLEDGE", Placement::System).unwrap();
        assert_eq!(
            text,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"system","content":"KNOWLEDGE"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1e5,"a":2}}"#
        );
    }

    #[test]
    fn user_prefix_placement_handles_strings_and_parts() {
        let b: Value =
            serde_json::from_str(&apply_chat(body(), "K", Placement::UserPrefix).unwrap()).unwrap();
        assert_eq!(
            b["messages"][1]["content"],
            "K\nWrite a Python function that runs a shell command"
        );
        let parts = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let parts: Value =
            serde_json::from_str(&apply_chat(parts, "K", Placement::UserPrefix).unwrap()).unwrap();
        assert_eq!(parts["messages"][0]["content"][0]["text"], "K");
        assert_eq!(parts["messages"][0]["content"][1]["text"], "hi");
        let no_user = r#"{"messages":[{"role":"assistant","content":"x"}]}"#;
        assert!(apply_chat(no_user, "K", Placement::UserPrefix).is_none());
        assert!(apply_chat(r#"{"prompt":"x"}"#, "K", Placement::System).is_none());
    }

    #[test]
    fn facets_come_from_the_last_user_turn() {
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"```python\nos.system(x)\n```"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"make it safe"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .unwrap();
        let f = chat_facets(&b).unwrap();
        assert_eq!(f.task, "make it safe");
        assert_eq!(f.code_blocks.len(), 1);
        assert_eq!(f.language.as_deref(), Some("python"));
        assert!(chat_facets(&serde_json::json!({"messages": []})).is_none());
        assert!(chat_facets(&serde_json::json!({"prompt": "x"})).is_none());
    }
}
