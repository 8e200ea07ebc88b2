//! OpenAI shapes: Chat Completions (`messages`), legacy Completions
//! (`prompt`), and the Responses API (`input`, `instructions`), plus
//! OpenAI-style error bodies.
//!
//! Facets are read from a parsed `serde_json::Value`; bodies are rewritten
//! with `protocol::raw`, so every field the proxy does not touch (known or
//! not) keeps its order and its exact text.

use serde_json::{Value, json};

use super::raw::{self, RawObject};
use super::{Unit, conversation_facets, insert_before_last_user, prefix_last_user};
use crate::config::Placement;
use crate::facets;
use crate::runtime::RequestFacets;

/// Facets of a chat request. `None` when the body has no `messages` array or
/// no user turn with text.
pub fn chat_facets(body: &Value) -> Option<RequestFacets> {
    conversation_facets(body.get("messages")?.as_array()?)
}

/// Inserts the knowledge into a chat request: as a system message right
/// before the last user turn, or as a prefix of that turn.
pub fn apply_chat(body: &str, knowledge: &str, placement: Placement) -> Option<String> {
    let mut top = RawObject::parse(body)?;
    let mut messages = raw::array_elements(top.get("messages")?)?;
    match placement {
        Placement::System => insert_before_last_user(
            &mut messages,
            raw::to_raw(&json!({"role": "system", "content": knowledge})),
        )?,
        Placement::UserPrefix => prefix_last_user(&mut messages, knowledge, "text")?,
    }
    top.set("messages", raw::raw_array(&messages));
    Some(top.to_json())
}

/// The prompt strings of a legacy completions request (a string or a list of
/// strings; token-id prompts are not text and are not augmented).
fn prompt_strings(body: &Value) -> Option<Vec<&str>> {
    match body.get("prompt")? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() && items.len() <= super::MAX_PROMPTS => {
            items.iter().map(Value::as_str).collect()
        }
        _ => None,
    }
}

/// One unit per prompt string.
pub fn completion_facets(body: &Value) -> Vec<RequestFacets> {
    prompt_strings(body)
        .unwrap_or_default()
        .into_iter()
        .map(|prompt| facets::extract(prompt, &[]))
        .collect()
}

/// The knowledge as line comments of the prompt's language: a completion
/// prompt is usually a code prefix, and prose before it would break the code
/// the model continues. `#` for Python and unknown languages (the RESCUE
/// completion format), `//` for the C family, Go, Java and JavaScript.
///
/// Every line break of the knowledge starts a new comment line, not only
/// `\n`: a lone `\r` ends a `#` comment for Python's tokenizer, U+2028 and
/// U+2029 end `//` comments in JavaScript, and editors break lines at the
/// others `is_line_break` names. The comment itself contains no line break but
/// the `\n` that ends each line, so no knowledge text can fall outside it.
pub fn as_comment(knowledge: &str, language: Option<&str>) -> String {
    let marker = match language {
        Some(
            "c" | "cpp" | "javascript" | "go" | "java" | "rust" | "typescript" | "csharp" | "php",
        ) => "//",
        _ => "#",
    };
    let mut out = String::with_capacity(knowledge.len() + 64);
    for line in comment_lines(knowledge) {
        out.push_str(marker);
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Characters that end a line for some language, tokenizer or editor: `\n`,
/// vertical tab, form feed, `\r`, the information separators U+001C to
/// U+001E (Python's `str.splitlines`), NEL (U+0085), and the Unicode line
/// and paragraph separators (U+2028, U+2029; JavaScript's line terminators).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{1C}'
            ..='\u{1E}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// The lines of `text`, split at every `is_line_break` (`\r\n` is one
/// break), without the empty line after a final break: like `str::lines`,
/// for every line terminator.
fn comment_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(is_line_break) {
            Some(at) => {
                let line = &rest[..at];
                let after = if rest[at..].starts_with("\r\n") {
                    at + 2
                } else {
                    at + rest[at..].chars().next().map_or(1, char::len_utf8)
                };
                rest = &rest[after..];
                Some(line)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}

/// Prepends each prompt's knowledge, as comments, to that prompt.
pub fn apply_completions(body: &str, units: &[Unit]) -> Option<String> {
    let mut top = RawObject::parse(body)?;
    let prompt = top.get("prompt")?;
    let mut prompts: Vec<String> = match serde_json::from_str::<Value>(prompt.get()).ok()? {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    if prompts.len() != units.len() {
        return None;
    }
    for (prompt, unit) in prompts.iter_mut().zip(units) {
        if let Some(knowledge) = &unit.knowledge {
            *prompt = format!(
                "{}{prompt}",
                as_comment(knowledge, unit.facets.language.as_deref())
            );
        }
    }
    let new_prompt = if prompt.get().trim_start().starts_with('"') {
        raw::to_raw(&prompts[0])
    } else {
        raw::to_raw(&prompts)
    };
    top.set("prompt", new_prompt);
    Some(top.to_json())
}

/// Facets of a Responses API request: `input` as a string (the task) or as a
/// list of items, whose messages form the conversation.
pub fn responses_facets(body: &Value) -> Option<RequestFacets> {
    match body.get("input")? {
        Value::String(task) => Some(facets::extract(task, &[])),
        Value::Array(items) => conversation_facets(items),
        _ => None,
    }
}

/// Inserts the knowledge into a Responses API request: as a `developer`
/// message before the last user message (a string `input` becomes the
/// equivalent item list), or as a prefix of that message. `instructions` is
/// the client's and is left alone.
pub fn apply_responses(body: &str, knowledge: &str, placement: Placement) -> Option<String> {
    let mut top = RawObject::parse(body)?;
    let input = top.get("input")?;
    let mut items = match serde_json::from_str::<Value>(input.get()).ok()? {
        Value::String(task) => vec![raw::to_raw(&json!({"role": "user", "content": task}))],
        Value::Array(_) => raw::array_elements(input)?,
        _ => return None,
    };
    match placement {
        Placement::System => insert_before_last_user(
            &mut items,
            raw::to_raw(&json!({"type": "message", "role": "developer", "content": knowledge})),
        )?,
        Placement::UserPrefix => prefix_last_user(&mut items, knowledge, "input_text")?,
    }
    top.set("input", raw::raw_array(&items));
    Some(top.to_json())
}

/// OpenAI's error `type` for a status code.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        503 => "service_unavailable",
        502 | 504 => "upstream_error",
        _ => "server_error",
    }
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> &'static str {
        r#"{"model":"m", "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"earlier"},{"role":"assistant","content":"ok"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1e5,"a":2}}"#
    }

    #[test]
    fn system_placement_goes_before_the_last_user_turn() {
        let text = apply_chat(chat(), "KNOWLEDGE", Placement::System).unwrap();
        assert_eq!(
            text,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"earlier"},{"role":"assistant","content":"ok"},{"role":"system","content":"KNOWLEDGE"},{"role":"user","content":"Write a Python function that runs a shell command"}],"temperature":0.10,"x_unknown":{"b":1e5,"a":2}}"#
        );
    }

    #[test]
    fn user_prefix_placement_handles_strings_and_parts() {
        let b: Value =
            serde_json::from_str(&apply_chat(chat(), "K", Placement::UserPrefix).unwrap()).unwrap();
        assert_eq!(
            b["messages"][3]["content"],
            "K\nWrite a Python function that runs a shell command"
        );
        let parts = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let parts: Value =
            serde_json::from_str(&apply_chat(parts, "K", Placement::UserPrefix).unwrap()).unwrap();
        assert_eq!(
            parts["messages"][0]["content"][0],
            json!({"type": "text", "text": "K"})
        );
        assert_eq!(parts["messages"][0]["content"][1]["text"], "hi");
        let no_user = r#"{"messages":[{"role":"assistant","content":"x"}]}"#;
        assert!(apply_chat(no_user, "K", Placement::UserPrefix).is_none());
        assert!(apply_chat(no_user, "K", Placement::System).is_none());
        assert!(apply_chat(r#"{"prompt":"x"}"#, "K", Placement::System).is_none());
    }

    #[test]
    fn chat_facets_come_from_the_last_user_turn() {
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"```python\nos.system(x)\n```"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"make it safe"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .unwrap();
        let f = chat_facets(&b).unwrap();
        assert_eq!(f.task, "make it safe");
        assert_eq!(f.code_blocks.len(), 1);
        assert_eq!(f.language.as_deref(), Some("python"));
        assert!(chat_facets(&json!({"messages": []})).is_none());
        assert!(chat_facets(&json!({"prompt": "x"})).is_none());
    }

    fn unit(language: Option<&str>, knowledge: Option<&str>) -> Unit {
        Unit {
            facets: RequestFacets {
                task: String::new(),
                code_blocks: vec![],
                language: language.map(str::to_string),
            },
            knowledge: knowledge.map(str::to_string),
        }
    }

    #[test]
    fn completions_get_knowledge_as_comments() {
        let body = r#"{"model":"m","prompt":"def f(name):\n","max_tokens":5}"#;
        let out: Value = serde_json::from_str(
            &apply_completions(body, &[unit(Some("python"), Some("<k>\n\nrule"))]).unwrap(),
        )
        .unwrap();
        assert_eq!(out["prompt"], "# <k>\n#\n# rule\ndef f(name):\n");
        assert_eq!(out["max_tokens"], 5);

        let batch = r#"{"prompt":["int main() {","plain"]}"#;
        let out: Value = serde_json::from_str(
            &apply_completions(batch, &[unit(Some("c"), Some("K")), unit(None, None)]).unwrap(),
        )
        .unwrap();
        assert_eq!(out["prompt"], json!(["// K\nint main() {", "plain"]));
        assert!(completion_facets(&json!({"prompt": [1, 2, 3]})).is_empty());
        assert_eq!(completion_facets(&json!({"prompt": ["a", "b"]})).len(), 2);
    }

    /// Every line of `comment`, split at any character some language or
    /// editor ends a line at, is a comment line.
    fn assert_all_commented(comment: &str, marker: &str) {
        for line in comment.split(is_line_break) {
            assert!(
                line.is_empty() || line.starts_with(marker),
                "{line:?} is outside the {marker} comment in {comment:?}"
            );
        }
    }

    #[test]
    fn every_line_break_starts_a_new_comment_line() {
        let breaks = [
            "\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{1C}", "\u{1D}", "\u{1E}", "\u{85}",
            "\u{2028}", "\u{2029}",
        ];
        for brk in breaks {
            for (language, marker) in [
                (Some("python"), "#"),
                (Some("javascript"), "//"),
                (None, "#"),
            ] {
                let knowledge = format!("- rule{brk}import os; os.system('id'){brk}");
                let comment = as_comment(&knowledge, language);
                assert_eq!(
                    comment,
                    format!("{marker} - rule\n{marker} import os; os.system('id')\n"),
                    "break {brk:?}"
                );
                assert_all_commented(&comment, marker);
            }
        }
        // Breaks in a row are empty comment lines; `\r\n` counts once, `\n\r` twice.
        assert_eq!(as_comment("a\r\n\r\nb", None), "# a\n#\n# b\n");
        assert_eq!(as_comment("a\n\rb", None), "# a\n#\n# b\n");
        assert_eq!(
            as_comment("a\u{2028}\u{2029}b\r", Some("go")),
            "// a\n//\n// b\n"
        );
        assert_eq!(as_comment("\r", None), "#\n");
        assert_eq!(as_comment("", None), "");
    }

    /// Fuzz finding F4 (target `as_comment`, RELIABILITY.md): lines were split
    /// at `\n` only, so a lone `\r`, which ends a `#` comment for Python's
    /// tokenizer, turned the rest of the knowledge line into code.
    #[test]
    fn f4_lone_carriage_return_does_not_escape_the_comment() {
        let comment = as_comment("- rule\rimport os; os.system('id')", Some("python"));
        assert_eq!(comment, "# - rule\n# import os; os.system('id')\n");
        assert_all_commented(&comment, "#");
        assert_all_commented(
            &as_comment("- rule\u{2028}fetch('//x')\u{2029}y", Some("javascript")),
            "//",
        );
    }

    #[test]
    fn responses_string_and_item_inputs() {
        let body = r#"{"model":"m","instructions":"be safe","input":"Write a Flask route"}"#;
        let out: Value =
            serde_json::from_str(&apply_responses(body, "K", Placement::System).unwrap()).unwrap();
        assert_eq!(out["instructions"], "be safe");
        assert_eq!(
            out["input"],
            json!([{"type": "message", "role": "developer", "content": "K"}, {"role": "user", "content": "Write a Flask route"}])
        );
        let items = r#"{"input":[{"type":"function_call_output","call_id":"c","output":"x"},{"type":"message","role":"user","content":[{"type":"input_text","text":"go"}]}]}"#;
        let out: Value =
            serde_json::from_str(&apply_responses(items, "K", Placement::UserPrefix).unwrap())
                .unwrap();
        assert_eq!(
            out["input"][1]["content"][0],
            json!({"type": "input_text", "text": "K"})
        );
        assert_eq!(out["input"][0]["type"], "function_call_output");
        let f = responses_facets(&serde_json::from_str(items).unwrap()).unwrap();
        assert_eq!(f.task, "go");
    }
}
