//! Properties of `rescue_host::facets` (task text and earlier turns to the
//! plugin's request facets) and of the tree-sitter code capability it and the
//! plugin use.

use rescue_host::capabilities::code::{self, Lang};
use rescue_host::facets;
use rescue_host::runtime::RequestFacets;

/// Bounds `facets::extract` promises (host/src/facets.rs).
pub const MAX_BLOCKS: usize = 8;
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;
pub const MAX_TASK_BYTES: usize = 32 * 1024;

/// Checks one conversation. Properties: the facets stay within their
/// bounds; the task is a prefix of the task text; every language named is a
/// canonical name of a supported grammar; fenced blocks' bodies are text of
/// the input. Then the code capability runs on each block: it must return,
/// and detected languages must be canonical names.
pub fn check(task: &str, earlier: &[&str]) {
    let facets = facets::extract(task, earlier);
    check_facets(&facets, task);

    for text in std::iter::once(task).chain(earlier.iter().copied()) {
        for block in facets::fenced_blocks(text) {
            for line in block.text.lines() {
                assert!(
                    text.contains(line),
                    "fenced block line {line:?} is not input text"
                );
            }
        }
        let _ = facets::language_named_in(text);
        let _ = facets::looks_like_code(text);
    }

    for block in &facets.code_blocks {
        if let Some(detected) = code::detect_language(&block.text) {
            assert!(Lang::parse(detected).is_some_and(|l| l.name() == detected));
        }
        if let Some(language) = &block.language {
            // A parse error is an answer; only a panic or a hang is a bug.
            if let Ok(calls) = code::extract_calls(language, &block.text) {
                for call in calls {
                    assert!(!call.is_empty(), "empty call name");
                }
            }
        }
    }
}

fn check_facets(facets: &RequestFacets, task: &str) {
    assert!(facets.task.len() <= MAX_TASK_BYTES, "task over its bound");
    assert!(
        task.starts_with(&facets.task),
        "task is not a prefix of the input"
    );
    assert!(
        facets.code_blocks.len() <= MAX_BLOCKS,
        "too many code blocks"
    );
    for block in &facets.code_blocks {
        assert!(
            block.text.len() <= MAX_BLOCK_BYTES,
            "code block over its bound"
        );
        if let Some(language) = &block.language {
            assert!(
                canonical(language),
                "block language {language:?} is not canonical"
            );
        }
    }
    if let Some(language) = &facets.language {
        assert!(
            canonical(language),
            "language {language:?} is not canonical"
        );
    }
}

fn canonical(name: &str) -> bool {
    Lang::ALL.iter().any(|l| l.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_prose_and_raw_code() {
        check(
            "Fix:\n```python\nos.system(cmd)\n```\n~~~\nx = 1\n",
            &["```c\nstrcpy(a, b);\n", "Write Go code"],
        );
        check("import os\ndef f(x):\n    return x;\n", &[]);
        check("````\n```\n", &["~~~~~~ js extra words\n"]);
        check(&"é".repeat(40_000), &[]);
    }
}
