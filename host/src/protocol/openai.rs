//! The OpenAI Chat Completions shape: facets from `messages`, the knowledge
//! block applied as a system message or a prefix of the last user turn, and
//! OpenAI-style error bodies.
//!
//! Bodies are handled as `serde_json::Value` with `preserve_order` and
//! `arbitrary_precision`, so every field the proxy does not touch (known or
//! not) keeps its key order and its exact number text.

use serde_json::{Map, Value, json};

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

/// Inserts the knowledge block into a chat request. Returns false (and leaves
/// the body alone) when the body has no place for it.
pub fn apply_chat(body: &mut Value, knowledge: &str, placement: Placement) -> bool {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return false;
    };
    match placement {
        Placement::System => {
            // After the client's own leading instructions, before the dialogue:
            // the client's system prompt keeps its first position.
            let at = messages
                .iter()
                .position(|m| !matches!(role(m), Some("system" | "developer")))
                .unwrap_or(messages.len());
            let mut message = Map::new();
            message.insert("role".into(), Value::String("system".into()));
            message.insert("content".into(), Value::String(knowledge.to_string()));
            messages.insert(at, Value::Object(message));
            true
        }
        Placement::UserPrefix => {
            let Some(last_user) = messages.iter_mut().rev().find(|m| role(m) == Some("user"))
            else {
                return false;
            };
            match last_user.get_mut("content") {
                Some(Value::String(s)) => {
                    *s = format!("{knowledge}\n{s}");
                    true
                }
                Some(Value::Array(parts)) => {
                    parts.insert(0, json!({"type": "text", "text": knowledge}));
                    true
                }
                _ => false,
            }
        }
    }
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1,"a":2}}"#,
        )
        .unwrap()
    }

    #[test]
    fn system_placement_keeps_everything_else() {
        let mut b = body();
        assert!(apply_chat(&mut b, "KNOWLEDGE", Placement::System));
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(
            text,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"system","content":"KNOWLEDGE"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn user_prefix_placement_handles_strings_and_parts() {
        let mut b = body();
        assert!(apply_chat(&mut b, "K", Placement::UserPrefix));
        assert_eq!(
            b["messages"][1]["content"],
            "K\nWrite a Python function that runs a shell command"
        );
        let mut parts: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        )
        .unwrap();
        assert!(apply_chat(&mut parts, "K", Placement::UserPrefix));
        assert_eq!(parts["messages"][0]["content"][0]["text"], "K");
        assert_eq!(parts["messages"][0]["content"][1]["text"], "hi");
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
