//! API sets: the functions and methods a piece of code calls, as RESCUE
//! matches them lexically against a request's code. Extraction is the same
//! tree-sitter query the plugin's `code.extract-calls` capability runs, so
//! the names in the knowledge base look like the names of a request; Ruby,
//! which has no grammar here, gets a small lexical scan instead.

use std::collections::BTreeSet;

use crate::capabilities::code::extract_calls;

/// Names of the calls in `code`, deduplicated, in order of first appearance.
pub fn calls(language: &str, code: &str) -> Vec<String> {
    match extract_calls(language, code) {
        Ok(names) => names,
        Err(_) if language == "ruby" => ruby_calls(code),
        Err(_) => Vec::new(),
    }
}

/// Calls the fix removed and added: names called in one version of the
/// function and not in the other (a call whose arguments changed, like a
/// parameterised `execute`, is in neither).
pub fn api_changes(language: &str, before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let old = calls(language, before);
    let new = calls(language, after);
    let old_set: BTreeSet<&String> = old.iter().collect();
    let new_set: BTreeSet<&String> = new.iter().collect();
    let removed = old
        .iter()
        .filter(|c| !new_set.contains(c))
        .cloned()
        .collect();
    let added = new
        .iter()
        .filter(|c| !old_set.contains(c))
        .cloned()
        .collect();
    (removed, added)
}

const RUBY_KEYWORDS: &[&str] = &[
    "def", "end", "if", "elsif", "else", "unless", "while", "until", "do", "return", "and", "or",
    "not", "then", "begin", "rescue", "ensure", "case", "when", "yield", "class", "module", "self",
    "nil", "true", "false", "in", "for", "super", "lambda", "proc",
];

/// Ruby calls, lexically: `Receiver.method`, `A::B.method` (as `A.B.method`)
/// and `name(`; strings and comments skipped. Calls without parentheses or
/// receiver (`system cmd`) are not told apart from variables and are missed.
pub fn ruby_calls(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    let mut after_def = false;
    let is_start = |c: char| c.is_alphabetic() || c == '_';
    let is_part = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        let prev_is_word =
            i > 0 && (is_part(chars[i - 1]) || matches!(chars[i - 1], '@' | '$' | ':'));
        if !is_start(c) || prev_is_word {
            i += 1;
            continue;
        }
        let mut segments: Vec<String> = Vec::new();
        loop {
            let start = i;
            while i < chars.len() && is_part(chars[i]) {
                i += 1;
            }
            if i < chars.len() && matches!(chars[i], '?' | '!') {
                i += 1;
            }
            segments.push(chars[start..i].iter().collect());
            let sep = if chars.get(i) == Some(&'.') {
                1
            } else if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
                2
            } else {
                0
            };
            if sep > 0 && chars.get(i + sep).is_some_and(|&c| is_start(c)) {
                i += sep;
            } else {
                break;
            }
        }
        let called = segments.len() > 1 || chars.get(i) == Some(&'(');
        let first = segments[0].as_str();
        // `def name(args)` defines a method; it does not call one.
        let defined = std::mem::replace(&mut after_def, segments == ["def"]);
        if called && !defined && !(segments.len() == 1 && RUBY_KEYWORDS.contains(&first)) {
            if segments.len() > 1 && RUBY_KEYWORDS.contains(&first) && first != "self" {
                segments.remove(0);
            }
            let name = segments.join(".");
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_calls_are_found_lexically() {
        let src = "def load(p)\n  # YAML.load(x)\n  data = IO.read(p, \"r.b(\")\n  YAML::safe_load(data).fetch('a')\n  puts(data)\nend";
        assert_eq!(
            ruby_calls(src),
            ["IO.read", "YAML.safe_load", "fetch", "puts"]
        );
    }

    #[test]
    fn api_changes_are_set_differences() {
        let before = "import os\ndef f(c):\n    os.system('ls ' + c)\n    log(c)\n";
        let after = "import subprocess\ndef f(c):\n    subprocess.run(['ls', c])\n    log(c)\n";
        let (removed, added) = api_changes("python", before, after);
        assert_eq!(removed, ["os.system"]);
        assert_eq!(added, ["subprocess.run"]);
    }
}
