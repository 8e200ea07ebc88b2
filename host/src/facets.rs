//! Protocol-neutral facet extraction: from the text of a conversation to the
//! `request-facets` the plugin sees (task text, code blocks, language).
//!
//! Protocol adapters pull the text out of their JSON shapes; everything after
//! that is shared here.

use crate::capabilities::code::{self, Lang};
use crate::runtime::{CodeBlock, RequestFacets};

/// Most code blocks passed to the plugin, and most bytes of each.
const MAX_BLOCKS: usize = 8;
const MAX_BLOCK_BYTES: usize = 64 * 1024;
/// Most bytes of task text passed to the plugin.
const MAX_TASK_BYTES: usize = 32 * 1024;

/// Fenced code blocks (``` or ~~~) in Markdown text, with their info string's
/// first word as the language.
pub fn fenced_blocks(text: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) => c,
            _ => continue,
        };
        let fence_len = trimmed.chars().take_while(|&c| c == fence_char).count();
        if fence_len < 3 {
            continue;
        }
        let info = trimmed[fence_len..].trim();
        let language = info
            .split_whitespace()
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut body = String::new();
        for inner in lines.by_ref() {
            let t = inner.trim_start();
            if t.chars().take_while(|&c| c == fence_char).count() >= fence_len
                && t.trim_matches(fence_char).trim().is_empty()
            {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        blocks.push(CodeBlock {
            language,
            text: body,
        });
    }
    blocks
}

/// A programming language named in prose ("Generate C code", "a Python
/// function", "in Go"). Case matters for the one-letter and common-word names.
pub fn language_named_in(text: &str) -> Option<Lang> {
    let words: Vec<&str> = text
        .split(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '.' | ':' | ';' | '(' | ')' | '"' | '\'' | '`')
        })
        .filter(|w| !w.is_empty())
        .collect();
    for word in &words {
        let lower = word.to_ascii_lowercase();
        let lang = match lower.as_str() {
            // Frameworks only where the name means nothing else in prose
            // ("node", "react" or "angular" do).
            "python" | "python3" | "django" | "flask" | "fastapi" | "pytest" | "numpy"
            | "pandas" => Some(Lang::Python),
            "c++" | "cpp" => Some(Lang::Cpp),
            "javascript" | "js" | "node.js" | "nodejs" | "express" | "typescript" | "next.js"
            | "nextjs" | "nestjs" => Some(Lang::JavaScript),
            "golang" => Some(Lang::Go),
            "java" | "servlet" | "jax-rs" => Some(Lang::Java),
            _ if *word == "C" => Some(Lang::C),
            _ if *word == "Go" => Some(Lang::Go),
            _ => None,
        };
        if lang.is_some() {
            return lang;
        }
    }
    None
}

/// Does this text look like source code rather than prose? (A raw code prefix,
/// as completion-style clients and benchmark prompts send.)
pub fn looks_like_code(text: &str) -> bool {
    let markers = [
        "def ",
        "#include",
        "import ",
        "function ",
        "func ",
        "package ",
        "public ",
        "class ",
        "=>",
        "};",
        "):\n",
        "*/",
    ];
    // A function signature opening a body (`int f(char *s) {`, `def f(x):`,
    // `func F(s string) string {`) is code on its own: completion-style
    // prompts are often a doc comment plus exactly one of those.
    let signature = |line: &str| {
        let line = line.trim_end();
        (line.contains('(') && line.contains(')') && line.ends_with('{')) || line.ends_with("):")
    };
    markers.iter().filter(|m| text.contains(*m)).count() >= 2
        || text.lines().any(signature)
        || text
            .lines()
            .filter(|l| l.trim_end().ends_with(['{', ';', ':']))
            .count()
            >= 3
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

/// Builds the plugin's facets from the task text (the last user turn) and the
/// text of earlier turns (searched for code only).
pub fn extract(task: &str, earlier: &[&str]) -> RequestFacets {
    let mut code_blocks: Vec<CodeBlock> = fenced_blocks(task);
    for text in earlier.iter().rev() {
        if code_blocks.len() >= MAX_BLOCKS {
            break;
        }
        code_blocks.extend(fenced_blocks(text));
    }
    if code_blocks.is_empty() && looks_like_code(task) {
        code_blocks.push(CodeBlock {
            language: None,
            text: task.to_string(),
        });
    }
    code_blocks.truncate(MAX_BLOCKS);

    let language = code_blocks
        .iter()
        .filter_map(|b| b.language.as_deref().and_then(Lang::parse))
        .next()
        .or_else(|| language_named_in(task))
        .or_else(|| {
            code_blocks
                .iter()
                .find_map(|b| code::detect_language(&b.text).and_then(Lang::parse))
        });

    for block in &mut code_blocks {
        block.text = truncate(&block.text, MAX_BLOCK_BYTES);
        block.language = block
            .language
            .as_deref()
            .and_then(Lang::parse)
            .or(language)
            .map(|l| l.name().to_string());
    }
    RequestFacets {
        task: truncate(task, MAX_TASK_BYTES),
        code_blocks,
        language: language.map(|l| l.name().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fenced_blocks_with_languages() {
        let text = "Fix this:\n```python\nos.system(cmd)\n```\nand\n~~~\nx = 1\n~~~\n";
        let blocks = fenced_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].language.as_deref(), Some("python"));
        assert_eq!(blocks[0].text, "os.system(cmd)\n");
        assert_eq!(blocks[1].language, None);
    }

    #[test]
    fn unterminated_fence_takes_the_rest() {
        let blocks = fenced_blocks("```c\nstrcpy(a, b);\n");
        assert_eq!(blocks[0].text, "strcpy(a, b);\n");
    }

    #[test]
    fn language_names_in_prose() {
        assert_eq!(
            language_named_in("Generate C code for the following"),
            Some(Lang::C)
        );
        assert_eq!(
            language_named_in("write a Python function"),
            Some(Lang::Python)
        );
        assert_eq!(language_named_in("Implement this in Go."), Some(Lang::Go));
        assert_eq!(language_named_in("let's go to the shop and see a c"), None);
        assert_eq!(
            language_named_in("A FastAPI route that returns the report"),
            Some(Lang::Python)
        );
        assert_eq!(
            language_named_in("a TypeScript handler for the upload"),
            Some(Lang::JavaScript)
        );
        assert_eq!(
            language_named_in("insert a node into the tree and react to the change"),
            None
        );
    }

    #[test]
    fn facets_of_a_raw_code_prompt() {
        let task = "import sqlite3\n\ndef get_user(conn, name):\n    \"\"\"Return the user row for name.\"\"\"\n";
        let f = extract(task, &[]);
        assert_eq!(f.language.as_deref(), Some("python"));
        assert_eq!(f.code_blocks.len(), 1);
    }

    #[test]
    fn a_doc_comment_and_one_signature_is_code() {
        assert!(looks_like_code(
            "/**\nReturn the URL to redirect to.\n*/\nchar* target_for(const char* url, const char* domain) {"
        ));
        assert!(looks_like_code(
            "// Hash a password.\nfunc HashPassword(password string) (string, error) {"
        ));
        assert!(!looks_like_code(
            "Explain this: what does f(x) do in maths?"
        ));
        assert!(!looks_like_code(
            "Note (important): the meeting moved to 3pm:"
        ));
    }

    #[test]
    fn facets_of_prose_with_earlier_code() {
        let f = extract("now make it safe", &["```js\nchild_process.exec(cmd)\n```"]);
        assert_eq!(f.language.as_deref(), Some("javascript"));
        assert_eq!(f.code_blocks[0].language.as_deref(), Some("javascript"));
    }
}
