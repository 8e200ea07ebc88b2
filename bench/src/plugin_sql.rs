//! The plugin's SQL statements, read from plugin/src/retrieve.rs at compile
//! time, so the KB micro-benchmarks run exactly the statements the plugin
//! sends (a copy would drift the day retrieval changes).

const RETRIEVE_RS: &str = include_str!("../../plugin/src/retrieve.rs");

/// The lexical facet (precomputed BM25 per word); parameters: the words as a JSON array,
/// language, CWE scope ('' = no filter).
pub fn search_sql() -> String {
    string_const(RETRIEVE_RS, "LEXICAL_SQL").expect("LEXICAL_SQL in plugin/src/retrieve.rs")
}

/// The semantic facet (`vector_dot` over `cwe_vector`); parameters: query
/// vector (f32 little-endian blob), language, CWE scope.
pub fn semantic_sql() -> String {
    string_const(RETRIEVE_RS, "SEMANTIC_SQL").expect("SEMANTIC_SQL in plugin/src/retrieve.rs")
}

/// The secure-example lookup; parameters: CWE id, language, query vector.
pub fn example_sql() -> String {
    string_const(RETRIEVE_RS, "EXAMPLE_SQL").expect("EXAMPLE_SQL in plugin/src/retrieve.rs")
}

/// The highest `?N` in a statement: how many parameters it binds.
pub fn parameter_count(sql: &str) -> usize {
    sql.split('?')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The value of `const NAME: &str = "...";` in Rust source, with the
/// escapes such constants use: `\` + newline (which also drops the next
/// line's leading whitespace), `\"`, `\\`, `\n`.
pub fn string_const(source: &str, name: &str) -> Option<String> {
    let start = source.find(&format!("const {name}: &str = \""))?;
    let body = &source[start..];
    let body = &body[body.find('"')? + 1..];
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_continuations_and_quotes() {
        let src = "const A: &str = \"SELECT 1 \\\n     FROM t WHERE x = \\\"q\\\"\";\n";
        assert_eq!(
            string_const(src, "A").as_deref(),
            Some("SELECT 1 FROM t WHERE x = \"q\"")
        );
        assert_eq!(string_const(src, "B"), None);
    }

    #[test]
    fn counts_numbered_parameters() {
        assert_eq!(parameter_count("SELECT ?1, ?12 WHERE x = ?3"), 12);
        assert_eq!(parameter_count("SELECT 1"), 0);
    }

    #[test]
    fn finds_the_plugin_statements() {
        let search = search_sql();
        assert!(search.starts_with("SELECT p.cwe"), "{search}");
        assert!(search.contains("json_each(?1)"), "{search}");
        assert!(search.contains("LIMIT"), "{search}");
        assert_eq!(parameter_count(&search), 3, "{search}");
        assert!(semantic_sql().contains("vector_dot(v.vector, ?1)"));
        assert_eq!(parameter_count(&semantic_sql()), 3);
        assert!(example_sql().contains("FROM example"));
        assert_eq!(parameter_count(&example_sql()), 3);
    }
}
