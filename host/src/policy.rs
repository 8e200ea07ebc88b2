//! Policy: what the proxy does for one request.
//!
//! Two parts. [`decide`] applies the configured rules (first match wins) to
//! who is calling (a hash of the API key, a team header), the route and the
//! model, giving a [`Decision`]: augment always / detect / never, fail-open or
//! fail-closed, top k, the CWEs and languages in scope, whether the client may
//! opt out. [`looks_like_code_generation`] is the `detect` gate: a cheap check
//! in front of retrieval that keeps chit-chat, translation and summaries away
//! from the plugin (retrieval's own threshold decides whether a coding task is
//! security-relevant).

use sha2::{Digest, Sha256};

use crate::config::{AugmentPolicy, Config, FailurePolicy, PolicyRule, RetrievalMode, glob_match};
use crate::runtime::RequestFacets;

/// Who is calling and what they ask for: the inputs of the rules.
#[derive(Debug, Default)]
pub struct RequestContext<'a> {
    /// Hex SHA-256 of the client's API key; the key itself is never kept.
    pub key_sha256: Option<String>,
    pub team: Option<&'a str>,
    pub route: &'a str,
    pub model: Option<&'a str>,
}

/// The effective settings for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The matching rule's name, or None for the `[augment]` defaults.
    pub rule: Option<String>,
    pub augment: AugmentPolicy,
    pub on_plugin_failure: FailurePolicy,
    pub mode: RetrievalMode,
    pub top_k: u32,
    /// CWE numbers that may be injected; empty = all.
    pub cwes: Vec<u32>,
    /// Languages whose tasks are augmented; empty = any.
    pub languages: Vec<String>,
    pub allow_opt_out: bool,
}

/// Hex SHA-256 of an API key, as policy rules name keys.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

/// The client's API key from `Authorization: Bearer …` or `x-api-key`.
pub fn api_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        return Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value),
        );
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}

/// "CWE-89" (or "89") as a number.
pub fn parse_cwe(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("CWE-")
        .or_else(|| t.strip_prefix("cwe-"))
        .unwrap_or(t);
    digits.parse().ok()
}

fn matches(rule: &PolicyRule, ctx: &RequestContext<'_>) -> bool {
    let key_ok = rule.key_sha256.is_empty()
        || ctx
            .key_sha256
            .as_ref()
            .is_some_and(|k| rule.key_sha256.iter().any(|r| r.eq_ignore_ascii_case(k)));
    let team_ok =
        rule.teams.is_empty() || ctx.team.is_some_and(|t| rule.teams.iter().any(|r| r == t));
    let route_ok = rule.routes.is_empty() || rule.routes.iter().any(|r| r == ctx.route);
    let model_ok = rule.models.is_empty()
        || ctx
            .model
            .is_some_and(|m| rule.models.iter().any(|p| glob_match(p, m)));
    key_ok && team_ok && route_ok && model_ok
}

/// Applies the first matching rule over the `[augment]` and `[retrieval]` defaults.
pub fn decide(config: &Config, ctx: &RequestContext<'_>) -> Decision {
    let defaults = &config.augment;
    let mut decision = Decision {
        rule: None,
        augment: defaults.policy,
        on_plugin_failure: defaults.on_plugin_failure,
        mode: config.retrieval.mode,
        top_k: config.retrieval.top_k,
        cwes: Vec::new(),
        languages: Vec::new(),
        allow_opt_out: defaults.allow_opt_out,
    };
    if let Some((index, rule)) = config
        .policies
        .iter()
        .enumerate()
        .find(|(_, r)| matches(r, ctx))
    {
        decision.rule = Some(if rule.name.is_empty() {
            format!("policies[{index}]")
        } else {
            rule.name.clone()
        });
        decision.augment = rule.augment.unwrap_or(decision.augment);
        decision.on_plugin_failure = rule.on_plugin_failure.unwrap_or(decision.on_plugin_failure);
        decision.mode = rule.mode.unwrap_or(decision.mode);
        decision.top_k = rule.top_k.unwrap_or(decision.top_k);
        decision.cwes = rule.cwes.iter().filter_map(|c| parse_cwe(c)).collect();
        decision.languages = rule
            .languages
            .iter()
            .map(|l| l.to_ascii_lowercase())
            .collect();
        decision.allow_opt_out = rule.allow_opt_out.unwrap_or(decision.allow_opt_out);
    }
    decision
}

impl Decision {
    /// Whether retrieval runs for these facets under this decision.
    pub fn wants(&self, facets: &RequestFacets) -> bool {
        let language_ok = self.languages.is_empty()
            || facets
                .language
                .as_deref()
                .is_some_and(|l| self.languages.iter().any(|x| x == l));
        language_ok && should_augment(self.augment, facets)
    }
}

/// The verbs that ask for code to be written, also inside a question ("can
/// you write..."); "translate" is not one: it is mostly asked of prose
/// ("translate this function to Go" still names a noun and a language).
#[rustfmt::skip]
const ASKING_FOR_CODE: &[&str] = &[
    "write", "implement", "create", "generate", "build", "code", "fix", "refactor", "complete",
    "develop", "program", "add", "modify", "update", "rewrite", "port", "make",
];

/// Verbs of what the code asked for does. With [`ASKING_FOR_CODE`] they are
/// the verb signal: broad on purpose, since the gate wants two signals of
/// four (with a noun, a named language or an API), and the retrieval
/// thresholds and the ordinary-task gate, not these lists, decide whether a
/// coding task gets knowledge.
#[rustfmt::skip]
const CODE_ACTION_VERBS: &[&str] = &[
    "parse", "read", "load", "save", "store", "send", "fetch", "download", "upload", "encrypt",
    "decrypt", "hash", "validate", "convert", "compute", "calculate", "override", "extend",
    "configure", "deploy", "serialize", "deserialize", "export", "import", "connect", "render",
    "handle", "call", "invoke", "return", "returns", "accept", "accepts", "take", "takes",
    "receive", "receives", "extract", "unpack", "sign", "verify", "authenticate", "log", "cache",
];

/// Words that open a question asking for an explanation ("how" is not one:
/// "how do I read a CSV in Go?" wants code).
const QUESTION_OPENERS: &[&str] = &[
    "what", "whats", "why", "which", "who", "when", "where", "is", "are", "does", "do", "should",
    "explain", "describe",
];

/// Nouns of the things code is made of (not "model", "job", "template" or
/// "table": prose uses them as often).
#[rustfmt::skip]
const CODING_NOUNS: &[&str] = &[
    "function", "method", "class", "script", "program", "code", "snippet", "api", "endpoint",
    "handler", "query", "sql", "module", "library", "server", "service", "app", "application",
    "cli", "parser", "regex", "web", "route", "database", "implementation", "algorithm", "struct",
    "routine", "page", "form", "upload", "login", "http", "request", "socket", "file", "command",
    "shell", "controller", "middleware", "callback", "component", "webhook",
    "cron", "worker", "microservice", "backend", "plugin", "extension", "filter",
    "decorator", "helper", "utility", "daemon", "lambda", "json", "xml", "yaml", "csv", "url",
    "cookie", "session", "token", "jwt", "header", "headers", "buffer", "array", "string",
    "pointer", "thread", "schema", "config", "dockerfile", "redis", "queue", "websocket",
    "graphql", "grpc", "orm", "mutation", "resolver", "directory", "folder", "path", "archive",
];

/// True when the policy says to run retrieval for these facets.
pub fn should_augment(policy: AugmentPolicy, facets: &RequestFacets) -> bool {
    match policy {
        AugmentPolicy::Always => true,
        AugmentPolicy::Never => false,
        AugmentPolicy::Detect => looks_like_code_generation(facets),
    }
}

/// Code in the conversation, or two of four signals: a coding verb, a
/// coding noun, a named programming language, an API named as code names it;
/// or three different coding nouns ("middleware for our API ... bearer
/// token"). Developers often leave the verb out ("Flask endpoint in Python
/// that resizes an uploaded image"): requiring it let through about half of
/// the held-out security requests (EVAL.md). Questions asking for an
/// explanation are not code generation unless they also ask for code.
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
    // "What's a buffer overflow?", "Is Python slower than Go?": a request
    // for an explanation, unless it also asks for code to be written.
    let question = words
        .first()
        .is_some_and(|w| QUESTION_OPENERS.contains(&w.as_str()));
    if question && !has(ASKING_FOR_CODE) {
        return false;
    }
    let mut nouns: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| CODING_NOUNS.contains(w))
        .collect();
    nouns.sort_unstable();
    nouns.dedup();
    let signals = [
        has(ASKING_FOR_CODE) || has(CODE_ACTION_VERBS),
        !nouns.is_empty(),
        facets.language.is_some(),
        names_an_api(&facets.task),
    ];
    signals.iter().filter(|s| **s).count() >= 2 || nouns.len() >= 3
}

/// Whether the text names a function or type the way code does: a call
/// (`sprintf(`, `Cipher.getInstance(`), a path (`std::regex`) or a
/// snake_case identifier (`preg_match`). Prose rarely writes any of these.
fn names_an_api(text: &str) -> bool {
    text.split_whitespace().any(|token| {
        let token = token.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '(');
        let identifier = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        };
        let call = token
            .strip_suffix('(')
            .or_else(|| token.split_once('(').map(|(name, _)| name))
            .is_some_and(|name| name.len() > 1 && identifier(name));
        let path = token.contains("::");
        let snake = token.contains('_')
            && token
                .split('_')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase()));
        call || path || snake
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facets::extract;
    use std::path::Path;

    const RULES: &str = r#"
[augment]
policy = "detect"

[[policies]]
name = "payments"
teams = ["payments"]
augment = "always"
on_plugin_failure = "closed"
cwes = ["CWE-89", "CWE-79"]
allow_opt_out = false

[[policies]]
name = "ci-bot"
key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
augment = "never"

[[policies]]
name = "local-models"
models = ["qwen*"]
routes = ["completions"]
top_k = 2
languages = ["python"]
allow_opt_out = true
"#;

    fn config() -> Config {
        Config::from_toml(RULES, Path::new("rules.toml")).unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let c = config();
        let payments = decide(
            &c,
            &RequestContext {
                team: Some("payments"),
                route: "chat_completions",
                ..Default::default()
            },
        );
        assert_eq!(payments.rule.as_deref(), Some("payments"));
        assert_eq!(payments.augment, AugmentPolicy::Always);
        assert_eq!(payments.on_plugin_failure, FailurePolicy::Closed);
        assert_eq!(payments.cwes, [89, 79]);
        assert!(!payments.allow_opt_out);

        let bot = decide(
            &c,
            &RequestContext {
                key_sha256: Some(key_sha256("test")),
                route: "chat_completions",
                ..Default::default()
            },
        );
        assert_eq!(bot.rule.as_deref(), Some("ci-bot"));
        assert_eq!(bot.augment, AugmentPolicy::Never);

        // Both the team and the key match: the earlier rule decides.
        let both = decide(
            &c,
            &RequestContext {
                key_sha256: Some(key_sha256("test")),
                team: Some("payments"),
                route: "responses",
                model: None,
            },
        );
        assert_eq!(both.rule.as_deref(), Some("payments"));

        let local = decide(
            &c,
            &RequestContext {
                route: "completions",
                model: Some("qwen2.5-coder"),
                ..Default::default()
            },
        );
        assert_eq!(
            (local.rule.as_deref(), local.top_k, local.allow_opt_out),
            (Some("local-models"), 2, true)
        );
        let not_local = decide(
            &c,
            &RequestContext {
                route: "chat_completions",
                model: Some("qwen2.5-coder"),
                ..Default::default()
            },
        );
        assert_eq!(not_local.rule, None, "route must match too");
        assert_eq!(not_local.top_k, c.retrieval.top_k);
    }

    #[test]
    fn language_scope_limits_augmentation() {
        let c = config();
        let local = decide(
            &c,
            &RequestContext {
                route: "completions",
                model: Some("qwen"),
                ..Default::default()
            },
        );
        assert!(local.wants(&extract(
            "Write a Python function that runs a shell command",
            &[]
        )));
        assert!(!local.wants(&extract(
            "Write C code that copies a string into a buffer",
            &[]
        )));
    }

    #[test]
    fn keys_come_from_either_header() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer sk-abc".parse().unwrap());
        assert_eq!(api_key(&h), Some("sk-abc"));
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", "sk-ant".parse().unwrap());
        assert_eq!(api_key(&h), Some("sk-ant"));
        assert_eq!(
            key_sha256("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn bad_rules_are_config_errors() {
        for bad in [
            "[[policies]]\ncwes = [\"SQLi\"]\n",
            "[[policies]]\nroutes = [\"chat\"]\n",
            "[[policies]]\nkey_sha256 = [\"sk-raw-key\"]\n",
            "[[policies]]\nfoo = 1\n",
        ] {
            assert!(
                Config::from_toml(bad, Path::new("x.toml")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn coding_requests_are_detected() {
        for task in [
            "Write a Python function that builds an SQL query from a user-supplied name",
            "Generate C code for the following: copy a string into a buffer",
            "implement a login handler",
            "```python\nprint(1)\n```",
            "Flask endpoint in Python that resizes the image the user uploads",
            "A Go handler that returns the order whose id is in the URL",
            "Spring Boot endpoint GET /api/exports/{name} that returns the CSV",
            "Laravel: override the User model's password mutator",
            "What would a Flask route that deletes the user's file look like? Write it",
            "def delete_user_file(user_id: int, filename: str) -> bool: \"\"\"Remove it.\"\"\"",
            "Format a MAC address into the caller's buffer with sprintf(buf, ...)",
            "check the file name ends with jpg or png using preg_match",
            "Use std::regex to check the MAC address the user typed",
            "Middleware for our internal API: require a bearer token otherwise",
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
            "What is a database?",
            "Is Python older than Java?",
            "What's a buffer overflow and why are C programs more prone to them?",
            "Explain what a race condition is in Java threads",
            "Should I store session tokens in a cookie or in local storage?",
            "Translate into Spanish: the server room will be closed on Friday",
            "Summarise this ticket: the customer says the login page hangs",
            "Write a LinkedIn post about our new model (launch is Friday)",
        ] {
            assert!(!looks_like_code_generation(&extract(task, &[])), "{task}");
        }
    }
}
