//! Anthropic's Messages API shape (`/v1/messages`, `/v1/messages/count_tokens`):
//! facets from `messages`, the knowledge in `system` or before the last user
//! turn's text, and Anthropic-style error bodies.
//!
//! `count_tokens` gets exactly the augmentation `messages` would, so the
//! client's token budget counts what the upstream will really see.

use serde_json::{Value, json};

use super::raw::{self, RawObject};
use super::{conversation_facets, prefix_last_user};
use crate::config::Placement;
use crate::runtime::RequestFacets;

/// Facets of a Messages request.
pub fn messages_facets(body: &Value) -> Option<RequestFacets> {
    conversation_facets(body.get("messages")?.as_array()?)
}

/// Inserts the knowledge. `system` placement appends it to the top-level
/// `system` (Anthropic has no system role in `messages`) as its own last
/// text block (a string `system` becomes the equivalent block list), after
/// the client's blocks, so a `cache_control`
/// breakpoint on the client's own blocks still covers the same prefix.
/// `user-prefix` puts a text block first in the last user turn.
pub fn apply_messages(body: &str, knowledge: &str, placement: Placement) -> Option<String> {
    let mut top = RawObject::parse(body)?;
    let mut messages = raw::array_elements(top.get("messages")?)?;
    match placement {
        Placement::System => {
            super::last_user_index(&messages)?;
            let system = match top.get("system") {
                None => raw::to_raw(&knowledge),
                Some(existing) => match serde_json::from_str::<Value>(existing.get()).ok()? {
                    Value::String(s) if s.is_empty() => raw::to_raw(&knowledge),
                    // Its own text block, never glued onto the client's
                    // string: text ending in an unclosed forged tag would
                    // otherwise wrap the proxy's block. A string system
                    // carries no cache_control, so blocks cost no cache hit.
                    Value::String(s) => raw::to_raw(
                        &json!([{"type": "text", "text": s}, {"type": "text", "text": knowledge}]),
                    ),
                    Value::Array(_) => {
                        let mut blocks = raw::array_elements(existing)?;
                        blocks.push(raw::to_raw(&json!({"type": "text", "text": knowledge})));
                        raw::raw_array(&blocks)
                    }
                    _ => return None,
                },
            };
            top.set("system", system);
        }
        Placement::UserPrefix => {
            prefix_last_user(&mut messages, knowledge, "text")?;
            top.set("messages", raw::raw_array(&messages));
        }
    }
    Some(top.to_json())
}

/// Anthropic's error `type` for a status code.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An Anthropic-style error body: `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"model":"claude","max_tokens":64,"messages":[{"role":"user","content":"Write a C function that copies a string"}]}"#;

    #[test]
    fn system_is_added_or_extended() {
        let out: Value =
            serde_json::from_str(&apply_messages(BODY, "K", Placement::System).unwrap()).unwrap();
        assert_eq!(out["system"], "K");
        assert_eq!(
            out["messages"][0]["content"],
            "Write a C function that copies a string"
        );

        let with_string = BODY.replace(
            "\"max_tokens\":64,",
            "\"max_tokens\":64,\"system\":\"Be terse.\",",
        );
        let out: Value =
            serde_json::from_str(&apply_messages(&with_string, "K", Placement::System).unwrap())
                .unwrap();
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "Be terse."}, {"type": "text", "text": "K"}])
        );

        let with_blocks = BODY.replace(
            "\"max_tokens\":64,",
            "\"system\":[{\"type\":\"text\",\"text\":\"S\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"max_tokens\":64,",
        );
        let text = apply_messages(&with_blocks, "K", Placement::System).unwrap();
        assert!(text.starts_with(
            r#"{"model":"claude","system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}},{"type":"text","text":"K"}],"max_tokens":64,"#
        ));
    }

    #[test]
    fn user_prefix_adds_a_first_text_block() {
        let blocks = r#"{"messages":[{"role":"user","content":[{"type":"image","source":{}},{"type":"text","text":"t"}]}]}"#;
        let out: Value =
            serde_json::from_str(&apply_messages(blocks, "K", Placement::UserPrefix).unwrap())
                .unwrap();
        assert_eq!(
            out["messages"][0]["content"][0],
            json!({"type": "text", "text": "K"})
        );
        assert_eq!(out["messages"][0]["content"][1]["type"], "image");
    }

    #[test]
    fn facets_and_errors() {
        let f = messages_facets(&serde_json::from_str(BODY).unwrap()).unwrap();
        assert_eq!(f.language.as_deref(), Some("c"));
        assert_eq!(
            error_body(413, "too big")["error"]["type"],
            "request_too_large"
        );
        assert_eq!(error_body(400, "x")["type"], "error");
        let only_assistant = r#"{"messages":[{"role":"assistant","content":"x"}]}"#;
        assert!(apply_messages(only_assistant, "K", Placement::System).is_none());
    }
}
