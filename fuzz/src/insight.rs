//! Properties of `rescue_plugin::retrieve::parse_insight`, which reads the
//! upstream model's full-mode answer: text the proxy does not control.

use rescue_plugin::retrieve::parse_insight;
use rescue_plugin::text::words;

/// Checks one answer. Properties: no panic; the causes' words are words of
/// the answer; a draft exists only if some line opens a fence, and every
/// line of it is a line of the answer; a draft's language tag is one trimmed
/// line. (A fence inside a line, "see ```x```", is prose: it may stay in
/// the causes, whose words are all the semantic facet uses.)
pub fn check(answer: &str) {
    let insight = parse_insight(answer);
    let answer_words = words(answer);
    for word in words(&insight.causes) {
        assert!(
            answer_words.contains(&word),
            "cause word {word:?} not in the answer"
        );
    }
    let has_fence = answer.lines().any(|l| l.trim_start().starts_with("```"));
    assert!(
        has_fence || insight.draft.is_none(),
        "a draft without a fence"
    );
    if let Some((tag, code)) = &insight.draft {
        // Compared without trailing carriage returns: `str::lines` strips
        // one, and the draft is split into lines twice.
        let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
        for line in code.lines().map(|l| l.trim_end_matches('\r')) {
            assert!(
                lines.contains(&line),
                "draft line {line:?} not in the answer"
            );
        }
        if let Some(tag) = tag {
            assert!(
                !tag.is_empty() && !tag.contains('\n') && tag.trim() == tag,
                "tag {tag:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_answers() {
        for answer in [
            "",
            "```",
            "``````",
            "CAUSES:",
            "CAUSES: x\n```py\na\n```\n```c\nb\n```",
            "```\n```\nCAUSES: after",
            "\r\n```rust \r\ncode\r\n```\r\n",
            "0```",
            "```i\n \0'\0\r\r\r\r",
        ] {
            check(answer);
        }
    }
}
