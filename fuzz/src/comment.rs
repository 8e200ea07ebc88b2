//! Properties of `rescue_host::protocol::openai::as_comment`: the knowledge
//! before a legacy completions prompt, as line comments of its language.

use rescue_host::protocol::openai::as_comment;

use crate::known::{self, Finding};

/// Language names the proxy may pass (canonical names from the facets, plus
/// the extra ones `as_comment` knows) and one it does not know.
pub const LANGUAGES: &[Option<&str>] = &[
    None,
    Some("python"),
    Some("c"),
    Some("cpp"),
    Some("javascript"),
    Some("go"),
    Some("java"),
    Some("rust"),
    Some("typescript"),
    Some("csharp"),
    Some("php"),
    Some("cobol"),
];

/// The comment marker a language must get.
pub fn marker(language: Option<&str>) -> &'static str {
    match language {
        Some(
            "c" | "cpp" | "javascript" | "go" | "java" | "rust" | "typescript" | "csharp" | "php",
        ) => "//",
        _ => "#",
    }
}

/// Characters that end a line comment in at least one of the languages
/// (Python's tokenizer takes a lone `\r` as a newline; JavaScript also ends
/// lines at U+2028 and U+2029). Splitting on all of them is how a reader of
/// any of these languages could see the text.
fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// Checks one wrapping. Properties: non-empty knowledge gives text ending in
/// a newline (so the prompt starts on a line of its own); every line, split
/// at any line terminator a target language honours, starts with the
/// language's marker; the text between markers is the knowledge, line by
/// line.
pub fn check(knowledge: &str, language: Option<&str>) {
    let out = as_comment(knowledge, language);
    let marker = marker(language);
    if knowledge.is_empty() {
        assert!(out.is_empty(), "empty knowledge gives no comment");
        return;
    }
    assert!(out.ends_with('\n'), "the comment ends with a newline");

    // Lossless: each `\n`-terminated output line is one line of the
    // knowledge as `str::lines` splits it (a trailing `\r` of the last line
    // stays in it, so output lines are split at `\n` only).
    let unwrapped: Vec<&str> = out
        .split_terminator('\n')
        .map(|line| {
            let rest = line
                .strip_prefix(marker)
                .unwrap_or_else(|| panic!("line {line:?} lacks the marker {marker:?}"));
            rest.strip_prefix(' ').unwrap_or(rest)
        })
        .collect();
    let original: Vec<&str> = knowledge.lines().collect();
    assert_eq!(
        unwrapped, original,
        "the comment carries the knowledge line by line"
    );

    // What a tokenizer sees: no line may escape the comment.
    for line in out.split(is_line_break) {
        if !line.is_empty() && !line.starts_with(marker) {
            known::fail(
                format!("{line:?} is outside the {marker} comment"),
                knowledge
                    .contains(['\r', '\u{2028}', '\u{2029}'])
                    .then_some(Finding::CommentLineBreaks),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (a property too strict, not a bug): a last line
    /// ending in `\r` is kept whole.
    #[test]
    fn a_trailing_carriage_return_stays_in_its_line() {
        check("\0\0\n\n\r", Some("python"));
    }

    #[test]
    fn every_language_gets_its_marker() {
        for language in LANGUAGES {
            check(
                "<security_knowledge>\n\n## CWE-89: x\n- rule\n</security_knowledge>\n",
                *language,
            );
            check("", *language);
            check("\n\n", *language);
        }
    }

    /// F4 reproducer (fuzz target `as_comment`): a lone `\r` in knowledge
    /// text ends a Python `#` comment, so what follows it is code.
    #[test]
    #[should_panic(expected = "CommentLineBreaks")]
    fn f4_lone_carriage_return_escapes_the_comment() {
        check("- rule\rimport os; os.system('id')", Some("python"));
    }
}
