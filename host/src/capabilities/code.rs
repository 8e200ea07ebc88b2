//! Code analysis for the plugin, with tree-sitter running in the host.
//!
//! Grammars are C libraries; compiling them into the Wasm sandbox would need a
//! WASI C toolchain, so the host parses and hands the plugin plain strings.
//! Parsers are kept per thread and queries compiled once per process: compiling
//! a query costs milliseconds, running one microseconds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use tree_sitter::{Language, Parser, Query, QueryCursor, StreamingIterator};

/// Largest snippet the host parses for a plugin, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;

/// A language with a grammar in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Python,
    C,
    Cpp,
    JavaScript,
    Go,
    Java,
}

impl Lang {
    pub const ALL: [Lang; 6] = [
        Lang::Python,
        Lang::C,
        Lang::Cpp,
        Lang::JavaScript,
        Lang::Go,
        Lang::Java,
    ];

    /// Accepts the names clients write in fences and prompts.
    pub fn parse(name: &str) -> Option<Lang> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "python" | "py" | "python3" => Lang::Python,
            "c" | "h" => Lang::C,
            "cpp" | "c++" | "cc" | "cxx" | "hpp" => Lang::Cpp,
            "javascript" | "js" | "jsx" | "node" | "nodejs" | "mjs" => Lang::JavaScript,
            "go" | "golang" => Lang::Go,
            "java" => Lang::Java,
            _ => return None,
        })
    }

    /// Canonical name, as passed to the plugin.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::JavaScript => "javascript",
            Lang::Go => "go",
            Lang::Java => "java",
        }
    }

    fn grammar(self) -> Language {
        match self {
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::C => tree_sitter_c::LANGUAGE.into(),
            Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
        }
    }

    /// The callee of every call expression, captured as `@callee`.
    fn calls_query(self) -> &'static str {
        match self {
            Lang::Python => "(call function: (_) @callee)",
            Lang::C | Lang::Go => "(call_expression function: (_) @callee)",
            Lang::Cpp => {
                "(call_expression function: (_) @callee) (new_expression type: (_) @callee)"
            }
            Lang::JavaScript => {
                "(call_expression function: (_) @callee) (new_expression constructor: (_) @callee)"
            }
            Lang::Java => {
                "(method_invocation object: (_)? @object name: (identifier) @callee) \
                 (object_creation_expression type: (_) @callee)"
            }
        }
    }
}

/// Why code analysis was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeError {
    UnsupportedLanguage(String),
    TooLarge(u32),
}

fn queries() -> &'static HashMap<Lang, Query> {
    static QUERIES: OnceLock<HashMap<Lang, Query>> = OnceLock::new();
    QUERIES.get_or_init(|| {
        Lang::ALL
            .iter()
            .map(|&lang| {
                let query = Query::new(&lang.grammar(), lang.calls_query()).unwrap_or_else(|e| {
                    panic!("built-in {} calls query is invalid: {e}", lang.name())
                });
                (lang, query)
            })
            .collect()
    })
}

thread_local! {
    static PARSERS: RefCell<HashMap<Lang, Parser>> = RefCell::new(HashMap::new());
}

fn with_tree<R>(lang: Lang, source: &str, f: impl FnOnce(&tree_sitter::Tree) -> R) -> Option<R> {
    PARSERS.with(|parsers| {
        let mut parsers = parsers.borrow_mut();
        let parser = parsers.entry(lang).or_insert_with(|| {
            let mut parser = Parser::new();
            parser
                .set_language(&lang.grammar())
                .expect("grammar is compatible with the linked tree-sitter");
            parser
        });
        parser.parse(source, None).map(|tree| f(&tree))
    })
}

/// Reduces a callee expression to an API name: `os.system`, `cursor.execute`,
/// `std::system`, `strcpy`. Long receivers (`a.b().c(d).e`) keep only the method.
fn api_name(text: &str) -> Option<String> {
    let compact: String = text.split_whitespace().collect();
    let simple = compact
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '$'))
        || compact.contains("->") && !compact.contains('(');
    let name = if simple && compact.len() <= 64 {
        compact.replace("->", ".").replace("::", ".")
    } else {
        compact
            .rsplit(['.', ':', '>', '(', ')', '[', ']'])
            .find(|segment| !segment.is_empty())?
            .to_string()
    };
    let name = name.trim_matches('.').to_string();
    (!name.is_empty() && name.chars().any(|c| c.is_alphabetic())).then_some(name)
}

/// Names of the functions and methods called in `source`, deduplicated, in
/// order of first appearance.
pub fn extract_calls(language: &str, source: &str) -> Result<Vec<String>, CodeError> {
    let lang = Lang::parse(language)
        .ok_or_else(|| CodeError::UnsupportedLanguage(language.to_string()))?;
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CodeError::TooLarge(MAX_SOURCE_BYTES as u32));
    }
    let query = &queries()[&lang];
    let callee_index = query
        .capture_index_for_name("callee")
        .expect("query has @callee");
    let object_index = query.capture_index_for_name("object");
    Ok(with_tree(lang, source, |tree| {
        let mut names: Vec<String> = Vec::new();
        let mut cursor = QueryCursor::new();
        let mut matches = cursor.matches(query, tree.root_node(), source.as_bytes());
        while let Some(m) = matches.next() {
            let text_of = |index| {
                m.captures
                    .iter()
                    .find(|c| c.index == index)
                    .and_then(|c| c.node.utf8_text(source.as_bytes()).ok())
            };
            let Some(callee) = text_of(callee_index) else {
                continue;
            };
            let full = match object_index.and_then(text_of) {
                Some(object) => format!("{object}.{callee}"),
                None => callee.to_string(),
            };
            if let Some(name) = api_name(&full).or_else(|| api_name(callee))
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        names
    })
    .unwrap_or_default())
}

/// Best guess at the language of a snippet: the grammar that parses it with
/// the fewest errors, with cheap keyword hints breaking ties between the
/// C-family grammars that accept much of each other's syntax.
pub fn detect_language(source: &str) -> Option<&'static str> {
    if source.trim().is_empty() || source.len() > MAX_SOURCE_BYTES {
        return None;
    }
    let hint = |lang: Lang| -> i64 {
        let has = |needle: &str| source.contains(needle);
        match lang {
            Lang::Python => (has("def ") || has("import ") && !has(";") || has("elif ")) as i64,
            Lang::C => has("#include") as i64,
            Lang::Cpp => {
                (has("std::") || has("#include <iostream>") || has("template<") || has("class "))
                    as i64
                    * 2
            }
            Lang::JavaScript => {
                (has("function") || has("=>") || has("const ") || has("require(")) as i64
            }
            Lang::Go => (has("package ") || has("func ") || has(":=")) as i64 * 2,
            Lang::Java => {
                (has("public class") || has("System.out") || has("import java")) as i64 * 2
            }
        }
    };
    // Hinted grammars first, and the first clean parse wins: parsing with all
    // six costs milliseconds, and most snippets parse cleanly in their own.
    let mut order = Lang::ALL;
    order.sort_by_key(|&lang| -hint(lang));
    let mut best: Option<(i64, i64, Lang)> = None;
    for lang in order {
        let Some(errors) = with_tree(lang, source, |tree| count_errors(tree.root_node())) else {
            continue;
        };
        if errors == 0 {
            return Some(lang.name());
        }
        if best.is_none_or(|(e, h, _)| (errors, -hint(lang)) < (e, h)) {
            best = Some((errors, -hint(lang), lang));
        }
    }
    best.filter(|(errors, _, _)| *errors * 20 < source.lines().count() as i64)
        .map(|(_, _, lang)| lang.name())
}

fn count_errors(node: tree_sitter::Node<'_>) -> i64 {
    if !node.has_error() {
        return 0;
    }
    let own = (node.is_error() || node.is_missing()) as i64;
    let mut cursor = node.walk();
    own + node.children(&mut cursor).map(count_errors).sum::<i64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_calls_keep_their_receiver() {
        let src = "import os\ndef f(name):\n    cur = conn.cursor()\n    cur.execute('SELECT * FROM u WHERE n = ' + name)\n    os.system(name)\n    return open(name).read()\n";
        assert_eq!(
            extract_calls("python", src).unwrap(),
            ["conn.cursor", "cur.execute", "os.system", "read", "open"]
        );
    }

    #[test]
    fn c_and_cpp_calls() {
        let c = "int main(int argc, char **argv) { char b[8]; strcpy(b, argv[1]); p->free_fn(b); return system(b); }";
        assert_eq!(
            extract_calls("c", c).unwrap(),
            ["strcpy", "p.free_fn", "system"]
        );
        let cpp = "void f() { auto p = new Widget(); std::system(\"ls\"); }";
        assert_eq!(extract_calls("cpp", cpp).unwrap(), ["Widget", "std.system"]);
    }

    #[test]
    fn javascript_go_and_java_calls() {
        let js = "const cp = require('child_process'); cp.exec(cmd); new URL(x);";
        assert_eq!(
            extract_calls("js", js).unwrap(),
            ["require", "cp.exec", "URL"]
        );
        let go = "package main\nfunc f() { exec.Command(\"sh\").Run() }";
        assert_eq!(extract_calls("go", go).unwrap(), ["Run", "exec.Command"]);
        let java = "class A { void f() { Runtime.getRuntime().exec(cmd); new File(p); } }";
        assert_eq!(
            extract_calls("java", java).unwrap(),
            ["Runtime.getRuntime", "exec", "File"]
        );
    }

    #[test]
    fn broken_code_still_yields_calls() {
        assert_eq!(
            extract_calls("python", "def f(:\n  eval(x)\n").unwrap(),
            ["eval"]
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            extract_calls("cobol", "x"),
            Err(CodeError::UnsupportedLanguage("cobol".into()))
        );
        let big = "a".repeat(MAX_SOURCE_BYTES + 1);
        assert!(matches!(
            extract_calls("c", &big),
            Err(CodeError::TooLarge(_))
        ));
    }

    #[test]
    fn detects_common_languages() {
        assert_eq!(
            detect_language("def f(x):\n    return x + 1\n"),
            Some("python")
        );
        assert_eq!(
            detect_language("package main\n\nfunc main() {\n\tx := 1\n\t_ = x\n}\n"),
            Some("go")
        );
        assert_eq!(
            detect_language("#include <stdio.h>\nint main(void) { printf(\"hi\"); return 0; }\n"),
            Some("c")
        );
        assert_eq!(detect_language(""), None);
    }
}
