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

/// The canonical name of a language as a fence tag or client spells it:
/// `Lang::name` for those with a grammar, and four without one that
/// retrieval still knows by name (php, ruby, csharp, rust): the CWE catalog
/// lists weaknesses for them and the developer scenarios are written in
/// them, so naming one narrows retrieval to its weaknesses even though no
/// API calls are read.
pub fn canonical_language(name: &str) -> Option<&'static str> {
    if let Some(lang) = Lang::parse(name) {
        return Some(lang.name());
    }
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "php" => "php",
        "ruby" | "rb" => "ruby",
        "csharp" | "c#" | "cs" => "csharp",
        "rust" | "rs" => "rust",
        _ => return None,
    })
}

/// A programming language named in prose ("Generate C code", "a Python
/// function", "in Go", "a Rails controller"), by its canonical name (see
/// [`canonical_language`]). Case matters for names that are also common
/// words; frameworks count only where the name means nothing else in prose
/// ("node", "react", "angular", "gin" or "express" alone do).
pub fn language_named_in(text: &str) -> Option<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    ',' | '.' | ':' | ';' | '(' | ')' | '"' | '\'' | '`' | '/'
                )
        })
        .filter(|w| !w.is_empty())
        .collect();
    for (i, word) in words.iter().enumerate() {
        let lower = word.to_ascii_lowercase();
        let next = words.get(i + 1).map(|w| w.to_ascii_lowercase());
        let followed_by = |w: &str| next.as_deref() == Some(w);
        let lang = match lower.as_str() {
            "python" | "python3" | "django" | "flask" | "fastapi" | "pytest" | "numpy"
            | "pandas" => "python",
            "c++" | "cpp" => "cpp",
            // "next.js" and "node.js" split at the dot into "js".
            "javascript" | "js" | "nodejs" => "javascript",
            "express" if *word == "Express" || followed_by("js") => "javascript",
            "typescript" | "nextjs" | "nestjs" => "javascript",
            "golang" => "go",
            "java" | "servlet" | "jax-rs" | "springboot" => "java",
            "spring" if *word == "Spring" || followed_by("boot") => "java",
            "php" | "laravel" | "symfony" | "wordpress" => "php",
            "ruby" => "ruby",
            "rails" | "sinatra" if word.starts_with(char::is_uppercase) => "ruby",
            "c#" | "csharp" | "dotnet" | "blazor" => "csharp",
            "asp" if followed_by("net") => "csharp",
            "rust" if *word == "Rust" => "rust",
            "actix" | "axum" => "rust",
            _ if *word == "C" => "c",
            _ if *word == "Go" => "go",
            _ => continue,
        };
        return Some(lang);
    }
    None
}

/// Keywords that open a function declaration in the languages retrieval
/// knows, including C's common return types.
const DECLARATION_KEYWORDS: [&str; 16] = [
    "def",
    "async",
    "func",
    "fn",
    "function",
    "public",
    "private",
    "protected",
    "static",
    "int",
    "void",
    "char",
    "bool",
    "size_t",
    "unsigned",
    "const",
];

/// Whether the text starts with a one-line declaration such as
/// `def delete_user_file(user_id: int) -> bool:` or
/// `public static Date makeDate(int year)`: a keyword, then a name directly
/// followed by its parameter list. Prompts are often a signature and a
/// docstring on one line, which the other tests miss.
fn opens_with_a_declaration(text: &str) -> bool {
    let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let Some((keyword, rest)) = first.split_once(' ') else {
        return false;
    };
    if !DECLARATION_KEYWORDS.contains(&keyword) {
        return false;
    }
    let Some(open) = rest.find('(') else {
        return false;
    };
    // The last word before the parenthesis, after any `*` or `&` of a
    // pointer or reference return type: empty when the parenthesis follows
    // a space or one of those.
    let name = rest[..open].rsplit([' ', '*', '&']).next().unwrap_or("");
    !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && rest[open..].contains(')')
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
        || opens_with_a_declaration(text)
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
        .filter_map(|b| b.language.as_deref().and_then(canonical_language))
        .next()
        .or_else(|| language_named_in(task))
        .or_else(|| {
            code_blocks.iter().find_map(|b| {
                code::detect_language(&b.text)
                    .and_then(Lang::parse)
                    .map(Lang::name)
            })
        });

    // A block's language picks the grammar its API calls are read with, so
    // only languages with one are passed on.
    for block in &mut code_blocks {
        block.text = truncate(&block.text, MAX_BLOCK_BYTES);
        block.language = block
            .language
            .as_deref()
            .and_then(Lang::parse)
            .or_else(|| language.and_then(Lang::parse))
            .map(|l| l.name().to_string());
    }
    RequestFacets {
        task: truncate(task, MAX_TASK_BYTES),
        code_blocks,
        language: language.map(str::to_string),
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
        for (text, named) in [
            ("Generate C code for the following", Some("c")),
            ("write a Python function", Some("python")),
            ("Implement this in Go.", Some("go")),
            ("let's go to the shop and see a c", None),
            ("A FastAPI route that returns the report", Some("python")),
            ("a TypeScript handler for the upload", Some("javascript")),
            ("insert a node into the tree and react to the change", None),
            ("an Express.js route for /login", Some("javascript")),
            ("express the total as a percentage", None),
            ("Spring Boot endpoint GET /api/exports/{name}", Some("java")),
            ("a spring boot service", Some("java")),
            ("plant the bulbs in spring", None),
            ("php page for my class project", Some("php")),
            ("a Laravel controller that stores the upload", Some("php")),
            ("Rails controller action that sets a cookie", Some("ruby")),
            ("keep the values within the guard rails", None),
            ("Sinatra route get '/docs/*'", Some("ruby")),
            ("ASP.NET Core controller action Download", Some("csharp")),
            ("a C# method that hashes the password", Some("csharp")),
            ("an axum handler for uploads", Some("rust")),
            ("a Rust function that parses the header", Some("rust")),
            ("remove the rust from the bike", None),
        ] {
            assert_eq!(language_named_in(text), named, "{text}");
        }
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
        // A signature and a docstring on one line.
        for code in [
            "def delete_user_file(user_id: int, filename: str) -> bool: \"\"\"Remove it.\"\"\"",
            "public static Date makeDate(int year, int month, int day) // a date",
            "func Lookup(name string) (*User, error) // finds the user",
            "char *read_line(FILE *f) returns the next line",
        ] {
            assert!(looks_like_code(code), "{code}");
        }
        for prose in [
            "function (in maths) means a mapping",
            "static electricity (from rubbing a balloon) is fun",
            "int main",
            "def jam (the band) is playing tonight",
        ] {
            assert!(!looks_like_code(prose), "{prose}");
        }
    }

    #[test]
    fn facets_of_prose_with_earlier_code() {
        let f = extract("now make it safe", &["```js\nchild_process.exec(cmd)\n```"]);
        assert_eq!(f.language.as_deref(), Some("javascript"));
        assert_eq!(f.code_blocks[0].language.as_deref(), Some("javascript"));
    }
}
