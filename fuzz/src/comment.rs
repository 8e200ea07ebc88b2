//! Properties of `rescue_host::protocol::openai::as_comment`: the knowledge
//! before a legacy completions prompt, as line comments of its language.

use rescue_host::protocol::openai::as_comment;

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

/// Characters that end a line for at least one language, tokenizer or
/// editor (Python's tokenizer takes a lone `\r` as a newline and
/// `str.splitlines` also U+000B, U+000C, U+001C to U+001E and U+0085;
/// JavaScript ends lines at U+2028 and U+2029). Splitting on all of them is
/// how a reader of any of these languages could see the text.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{1C}'
            ..='\u{1E}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// The lines of `text` as a reader that honours every line break sees them:
/// `\r\n` is one break, any other break character is one, and a final break
/// ends the last line rather than starting an empty one.
fn lines(text: &str) -> Vec<String> {
    let normalised: String = text
        .replace("\r\n", "\n")
        .chars()
        .map(|c| if is_line_break(c) { '\n' } else { c })
        .collect();
    normalised.lines().map(str::to_string).collect()
}

/// Checks one wrapping. Properties: non-empty knowledge gives text ending in
/// a newline (so the prompt starts on a line of its own); the only line
/// break in it is the `\n` ending each line, so every line, split at any
/// line terminator a target language honours, starts with the language's
/// marker; the text between markers is the knowledge, line by line.
pub fn check(knowledge: &str, language: Option<&str>) {
    let out = as_comment(knowledge, language);
    let marker = marker(language);
    if knowledge.is_empty() {
        assert!(out.is_empty(), "empty knowledge gives no comment");
        return;
    }
    assert!(out.ends_with('\n'), "the comment ends with a newline");

    // What a tokenizer sees: no line may escape the comment.
    for line in out.split(is_line_break) {
        assert!(
            line.is_empty() || line.starts_with(marker),
            "{line:?} is outside the {marker} comment"
        );
    }
    assert!(
        !out.contains(|c| c != '\n' && is_line_break(c)),
        "a line break other than \\n in the comment"
    );

    // Lossless: each output line is one line of the knowledge.
    let unwrapped: Vec<String> = out
        .split_terminator('\n')
        .map(|line| {
            let rest = line
                .strip_prefix(marker)
                .unwrap_or_else(|| panic!("line {line:?} lacks the marker {marker:?}"));
            rest.strip_prefix(' ').unwrap_or(rest).to_string()
        })
        .collect();
    assert_eq!(
        unwrapped,
        lines(knowledge),
        "the comment carries the knowledge line by line"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer when only `\n` was a break: a last line ending in
    /// `\r`. Now that `\r` ends the line like any other break.
    #[test]
    fn a_trailing_carriage_return_ends_its_line() {
        check("\0\0\n\n\r", Some("python"));
        assert_eq!(as_comment("\0\0\n\n\r", Some("python")), "# \0\0\n#\n#\n");
    }

    /// Every break character, alone, doubled and as `\r\n`, in every language
    /// (F4's reproducer is a unit test of `as_comment` in the host now).
    #[test]
    fn every_line_break_stays_inside_the_comment() {
        for brk in [
            '\n', '\u{0B}', '\u{0C}', '\r', '\u{1C}', '\u{1D}', '\u{1E}', '\u{85}', '\u{2028}',
            '\u{2029}',
        ] {
            for language in LANGUAGES {
                check(&format!("- rule{brk}import os"), *language);
                check(&format!("{brk}{brk}x{brk}\r\n"), *language);
            }
        }
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
}
