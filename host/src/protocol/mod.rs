//! Protocol adapters: the only code that knows the JSON shapes of a given API.
//!
//! Each augmentable route (a [`Route`]) can pull the units to augment out of
//! a request body ([`facets`]), write the knowledge into the body in the
//! protocol's own way ([`apply`]), and shape error bodies the way that
//! protocol's clients expect ([`error_body`]). The conversation helpers here
//! are shared: OpenAI chat messages, Responses input items and Anthropic
//! messages are all lists of `{role, content}` whose content is a string or a
//! list of typed parts.

pub mod anthropic;
pub mod openai;
pub mod raw;

use http::Method;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::{Placement, UpstreamApi};
use crate::facets;
use crate::runtime::RequestFacets;
use raw::RawObject;

/// The routes the proxy augments; every other request is passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Responses,
    Messages,
    CountTokens,
}

impl Route {
    /// The augmentable route for a request, if it is one.
    pub fn classify(method: &Method, path: &str) -> Option<Route> {
        if method != Method::POST {
            return None;
        }
        let path = path
            .strip_prefix("/v1")
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path);
        Some(match path.trim_end_matches('/') {
            "/chat/completions" => Route::ChatCompletions,
            "/completions" => Route::Completions,
            "/responses" => Route::Responses,
            "/messages" => Route::Messages,
            "/messages/count_tokens" => Route::CountTokens,
            _ => return None,
        })
    }

    /// The API whose upstream serves this route.
    pub fn api(self) -> UpstreamApi {
        match self {
            Route::Messages | Route::CountTokens => UpstreamApi::Anthropic,
            _ => UpstreamApi::Openai,
        }
    }

    /// Stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Responses => "responses",
            Route::Messages => "messages",
            Route::CountTokens => "count_tokens",
        }
    }
}

/// Every route's [`Route::name`], for configuration checks.
pub const ROUTE_NAMES: &[&str] = &[
    "chat_completions",
    "completions",
    "responses",
    "messages",
    "count_tokens",
];

/// The API a pass-through path belongs to: Anthropic's routes live under
/// `/v1/messages`; everything else is OpenAI-style.
pub fn api_for_path(path: &str) -> UpstreamApi {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    if path == "/messages" || path.starts_with("/messages/") {
        UpstreamApi::Anthropic
    } else {
        UpstreamApi::Openai
    }
}

/// One piece of a request that retrieval runs for: usually the whole
/// conversation; for legacy completions, each prompt string.
#[derive(Debug, Clone)]
pub struct Unit {
    pub facets: RequestFacets,
    /// The knowledge block to insert, once retrieval has run.
    pub knowledge: Option<String>,
}

/// Most prompts of one legacy completions request that are augmented; a
/// larger batch passes through unaugmented rather than costing N plugin runs.
pub const MAX_PROMPTS: usize = 16;

/// The units of a request body. Empty when there is nothing to augment (no
/// user turn with text, token-id prompts, an unexpected shape).
pub fn facets(route: Route, body: &Value) -> Vec<RequestFacets> {
    match route {
        Route::ChatCompletions => openai::chat_facets(body).into_iter().collect(),
        Route::Completions => openai::completion_facets(body),
        Route::Responses => openai::responses_facets(body).into_iter().collect(),
        Route::Messages | Route::CountTokens => {
            anthropic::messages_facets(body).into_iter().collect()
        }
    }
}

/// Writes the units' knowledge into the body; `None` leaves the request as it
/// came (no knowledge, or no place for it in this body).
pub fn apply(route: Route, body: &str, units: &[Unit], placement: Placement) -> Option<String> {
    if units.iter().all(|u| u.knowledge.is_none()) {
        return None;
    }
    match route {
        Route::ChatCompletions => {
            openai::apply_chat(body, units[0].knowledge.as_deref()?, placement)
        }
        Route::Completions => openai::apply_completions(body, units),
        Route::Responses => {
            openai::apply_responses(body, units[0].knowledge.as_deref()?, placement)
        }
        Route::Messages | Route::CountTokens => {
            anthropic::apply_messages(body, units[0].knowledge.as_deref()?, placement)
        }
    }
}

/// An error body in the shape of `api`'s own errors.
pub fn error_body(api: UpstreamApi, status: u16, message: &str, code: &str) -> String {
    match api {
        UpstreamApi::Openai => {
            openai::error_body(message, openai::error_type(status), code).to_string()
        }
        UpstreamApi::Anthropic => anthropic::error_body(status, message).to_string(),
    }
}

/// The text of a message's content: a string, or the text parts of a list
/// of parts (`text` in chat and Anthropic, `input_text`/`output_text` in
/// Responses); images, audio, tool calls and results are skipped.
pub fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| matches!(t, "text" | "input_text" | "output_text"))
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// A message's role: the last `role` member, as serde_json (and most JSON
/// parsers, upstreams' included) keeps the last of duplicate keys. Placement
/// reads raw messages with the same rule ([`raw_role`]), so facets and
/// placement agree on which message is the last user turn.
fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// Facets of a conversation: the last user message is the task; earlier user
/// and assistant messages are searched for code. Items that are not messages
/// (tool calls, reasoning) are skipped.
pub fn conversation_facets(messages: &[Value]) -> Option<RequestFacets> {
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

/// The role of a raw message by [`role`]'s rule: the last `role` member
/// counts, and it is a role only if it is a string. Skips every other member
/// without building it.
struct LastRole(Option<String>);

impl<'de> serde::Deserialize<'de> for LastRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RoleVisitor;
        impl<'de> serde::de::Visitor<'de> for RoleVisitor {
            type Value = LastRole;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LastRole, A::Error> {
                let mut role = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "role" {
                        role = match map.next_value::<Value>()? {
                            Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(LastRole(role))
            }
        }
        deserializer.deserialize_map(RoleVisitor)
    }
}

fn raw_role(message: &RawValue) -> Option<String> {
    serde_json::from_str::<LastRole>(message.get())
        .ok()
        .and_then(|m| m.0)
}

/// Index of the last message whose role is `user`.
pub fn last_user_index(messages: &[Box<RawValue>]) -> Option<usize> {
    messages
        .iter()
        .rposition(|m| raw_role(m).as_deref() == Some("user"))
}

/// Inserts `message` right before the last user message. That keeps the
/// client's own instructions first and, unlike a slot near the top, leaves
/// the conversation prefix byte-identical from turn to turn, so upstream
/// prompt caches keep hitting.
pub fn insert_before_last_user(
    messages: &mut Vec<Box<RawValue>>,
    message: Box<RawValue>,
) -> Option<()> {
    let at = last_user_index(messages)?;
    messages.insert(at, message);
    Some(())
}

/// Prepends the knowledge to the last user message: to a string content, or
/// as a first part of type `part_type` to a list of parts.
pub fn prefix_last_user(
    messages: &mut [Box<RawValue>],
    knowledge: &str,
    part_type: &str,
) -> Option<()> {
    let at = last_user_index(messages)?;
    let mut message = RawObject::parse(messages[at].get())?;
    let content = message.get("content")?;
    let new_content = match serde_json::from_str::<Value>(content.get()).ok()? {
        Value::String(text) => raw::to_raw(&format!("{knowledge}\n{text}")),
        Value::Array(_) => {
            let mut parts = raw::array_elements(content)?;
            parts.insert(
                0,
                raw::to_raw(&serde_json::json!({"type": part_type, "text": knowledge})),
            );
            raw::raw_array(&parts)
        }
        _ => return None,
    };
    message.set("content", new_content);
    messages[at] = message.to_raw();
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(
            Route::classify(&Method::POST, "/v1/chat/completions"),
            Some(Route::ChatCompletions)
        );
        assert_eq!(
            Route::classify(&Method::POST, "/chat/completions"),
            Some(Route::ChatCompletions)
        );
        assert_eq!(
            Route::classify(&Method::POST, "/v1/completions"),
            Some(Route::Completions)
        );
        assert_eq!(
            Route::classify(&Method::POST, "/v1/responses"),
            Some(Route::Responses)
        );
        assert_eq!(
            Route::classify(&Method::POST, "/v1/messages"),
            Some(Route::Messages)
        );
        assert_eq!(
            Route::classify(&Method::POST, "/v1/messages/count_tokens"),
            Some(Route::CountTokens)
        );
        assert_eq!(Route::classify(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(
            Route::classify(&Method::POST, "/v1/responses/abc/cancel"),
            None
        );
        assert_eq!(Route::classify(&Method::POST, "/v1/embeddings"), None);
        assert_eq!(api_for_path("/v1/messages/batches"), UpstreamApi::Anthropic);
        assert_eq!(api_for_path("/v1/messagesx"), UpstreamApi::Openai);
        assert_eq!(api_for_path("/v1/models"), UpstreamApi::Openai);
    }

    /// The last user turn as facets see it (parsed with serde_json) and as
    /// placement sees it (raw messages).
    fn last_user_both_ways(messages: &str) -> (Option<usize>, Option<usize>) {
        let parsed: Vec<Value> = serde_json::from_str(messages).unwrap();
        let raw: Vec<Box<RawValue>> = serde_json::from_str(messages).unwrap();
        (
            parsed.iter().rposition(|m| role(m) == Some("user")),
            last_user_index(&raw),
        )
    }

    #[test]
    fn facets_and_placement_agree_on_the_last_user_turn() {
        for (messages, expected) in [
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]"#,
                Some(0),
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","role":"user"}]"#,
                Some(1),
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"user","role":"assistant"}]"#,
                Some(0),
            ),
            (
                r#"[{"role":"user"},{"role":"user","content":"b","role":"tool"}]"#,
                Some(0),
            ),
            (r#"[{"role":"user"},{"role":5,"role":"user"}]"#, Some(1)),
            (r#"[{"role":"user"},{"role":"user","role":null}]"#, Some(0)),
            (
                r#"[{"role":"user"},{"r\u006fle":"assistant","role":"user"}]"#,
                Some(1),
            ),
            (
                r#"[{"role":"user"},{"role":"user","r\u006fle":"assistant"}]"#,
                Some(0),
            ),
            (
                r#"[{"role":"assistant","role":"assistant"},"user",["user"],7]"#,
                None,
            ),
            (r#"[{"content":{"role":"user"}}]"#, None),
        ] {
            assert_eq!(
                last_user_both_ways(messages),
                (expected, expected),
                "{messages}"
            );
        }
    }

    /// Fuzz finding F5 (target `request_shaped`, RELIABILITY.md): with duplicate
    /// `role` keys, facets took the second message as the last user turn
    /// (serde_json keeps the last key) but placement the first (a
    /// `#[derive(Deserialize)]` struct refuses a duplicate field), so the
    /// block went before an earlier user turn.
    #[test]
    fn f5_duplicate_role_keys_are_read_alike_by_facets_and_placement() {
        let body = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","role":"user","content":"Write SQL"}]}"#;
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(facets(Route::ChatCompletions, &parsed)[0].task, "Write SQL");
        let units = [Unit {
            facets: facets(Route::ChatCompletions, &parsed).remove(0),
            knowledge: Some("K".into()),
        }];
        let out = apply(Route::ChatCompletions, body, &units, Placement::System).unwrap();
        assert_eq!(
            out,
            r#"{"messages":[{"role":"user","content":"a"},{"role":"system","content":"K"},{"role":"assistant","role":"user","content":"Write SQL"}]}"#
        );
        let out = apply(Route::ChatCompletions, body, &units, Placement::UserPrefix).unwrap();
        assert_eq!(
            out,
            r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","role":"user","content":"K\nWrite SQL"}]}"#
        );
    }

    #[test]
    fn conversation_skips_non_message_items() {
        let items: Vec<Value> = serde_json::from_str(
            r#"[{"role":"user","content":"```python\nos.system(c)\n```"},{"type":"function_call","name":"f"},{"role":"user","content":[{"type":"input_text","text":"make it safe"}]}]"#,
        )
        .unwrap();
        let f = conversation_facets(&items).unwrap();
        assert_eq!(f.task, "make it safe");
        assert_eq!(f.code_blocks.len(), 1);
        assert!(conversation_facets(&[]).is_none());
    }
}
