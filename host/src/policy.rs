//! Deciding whether a request is a code-generation task (the `detect` policy).
//!
//! This is a cheap gate in front of retrieval, not the relevance decision:
//! retrieval's own threshold decides whether a coding task is
//! security-relevant. The gate only keeps chit-chat, translation, summaries
//! and other non-coding traffic away from the plugin.

use crate::config::AugmentPolicy;
use crate::runtime::RequestFacets;

const CODING_VERBS: &[&str] = &[
    "write",
    "implement",
    "create",
    "generate",
    "build",
    "code",
    "fix",
    "refactor",
    "complete",
    "develop",
    "program",
    "add",
    "modify",
    "update",
    "rewrite",
    "port",
    "translate",
    "make",
];

const CODING_NOUNS: &[&str] = &[
    "function",
    "method",
    "class",
    "script",
    "program",
    "code",
    "snippet",
    "api",
    "endpoint",
    "handler",
    "query",
    "sql",
    "module",
    "library",
    "server",
    "service",
    "app",
    "application",
    "cli",
    "parser",
    "regex",
    "web",
    "route",
    "database",
    "implementation",
    "algorithm",
    "struct",
    "routine",
    "page",
    "form",
    "upload",
    "login",
    "http",
    "request",
    "socket",
    "file",
    "command",
    "shell",
];

/// True when the policy says to run retrieval for these facets.
pub fn should_augment(policy: AugmentPolicy, facets: &RequestFacets) -> bool {
    match policy {
        AugmentPolicy::Always => true,
        AugmentPolicy::Never => false,
        AugmentPolicy::Detect => looks_like_code_generation(facets),
    }
}

/// Code in the conversation, a named programming language, or a coding verb
/// together with a coding noun.
pub fn looks_like_code_generation(facets: &RequestFacets) -> bool {
    if !facets.code_blocks.is_empty() {
        return true;
    }
    let words: Vec<String> = facets
        .task
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    let verb = has(CODING_VERBS);
    verb && (facets.language.is_some() || has(CODING_NOUNS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facets::extract;

    #[test]
    fn coding_requests_are_detected() {
        for task in [
            "Write a Python function that builds an SQL query from a user-supplied name",
            "Generate C code for the following: copy a string into a buffer",
            "implement a login handler",
            "```python\nprint(1)\n```",
        ] {
            assert!(looks_like_code_generation(&extract(task, &[])), "{task}");
        }
    }

    #[test]
    fn other_requests_are_not() {
        for task in [
            "What is the capital of France?",
            "Write a poem about autumn",
            "Summarise this article for me",
        ] {
            assert!(!looks_like_code_generation(&extract(task, &[])), "{task}");
        }
    }
}
