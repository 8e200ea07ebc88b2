//! Turning free text and identifiers into retrieval terms.
//!
//! Requests mix prose ("build an SQL query from a user-supplied name") with
//! identifiers (`cursor.execute`, `getUserName`). Both become lowercase word
//! terms; identifiers are split at `_`, `.` and camelCase boundaries so that an
//! API name meets the words of a guideline.

/// Words that carry no security meaning in a coding task: English function
/// words plus the vocabulary every code-generation prompt shares ("write a
/// function that returns ..."). Matching on them would make every request look
/// like every weakness.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "do",
    "does",
    "doing",
    "down",
    "each",
    "else",
    "etc",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "must",
    "my",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "e",
    "g",
    "ie",
    "eg",
    // Shared vocabulary of coding prompts.
    "write",
    "writes",
    "written",
    "create",
    "creates",
    "implement",
    "implements",
    "generate",
    "generates",
    "code",
    "function",
    "functions",
    "method",
    "program",
    "script",
    "following",
    "given",
    "return",
    "returns",
    "returned",
    "using",
    "use",
    "uses",
    "used",
    "make",
    "makes",
    "need",
    "needs",
    "please",
    "want",
    "like",
    "example",
    "examples",
    "new",
    "get",
    "gets",
    "set",
    "sets",
    "take",
    "takes",
    "call",
    "called",
    "calls",
    "def",
    "args",
    "arg",
    "param",
    "params",
    "parameter",
    "parameters",
    "value",
    "values",
    "result",
    "results",
    "true",
    "false",
    "none",
    "null",
    "list",
    "lists",
    "number",
    "numbers",
    "int",
    "integer",
    "integers",
    "str",
    "string",
    "strings",
    "float",
    "bool",
    "boolean",
    "array",
    "arrays",
    "python",
    "c",
    "cpp",
    "java",
    "javascript",
    "js",
    "go",
    "golang",
    "rust",
    "ruby",
    "php",
    "typescript",
    "ts",
    "language",
    "simple",
    "first",
    "second",
    "one",
    "two",
    "three",
    "n",
    "x",
    "y",
    "k",
    "s",
    "t",
    "m",
    "output",
    "input",
    "inputs",
    "print",
    "prints",
    "self",
    "class",
    "object",
    "type",
    "types",
    "main",
    "run",
    "runs",
    "test",
    "tests",
    "case",
    "cases",
    "step",
    "steps",
    "task",
    "let",
    "var",
    "const",
    "import",
    "include",
    "std",
    "void",
    "char",
    "long",
    "size",
    "len",
    "length",
    "sum",
    "count",
    "element",
    "elements",
    "item",
    "items",
    "index",
    "order",
    "sorted",
    "sort",
    "given",
    "note",
    "assume",
    "may",
    "might",
    "every",
    "new",
];

/// True for words that should not become retrieval terms.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// Splits text into lowercase alphanumeric words, also breaking identifiers at
/// camelCase boundaries (`getUserName` -> get, user, name).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            if ch.is_uppercase() && previous_lower && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = ch.is_lowercase() || ch.is_numeric();
            current.extend(ch.to_lowercase());
        } else {
            previous_lower = false;
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Retrieval terms of a text: its words minus stopwords, pure numbers and
/// single letters, deduplicated in order of first appearance.
pub fn terms(text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for word in words(text) {
        if word.len() < 2 || word.chars().all(|c| c.is_ascii_digit()) || is_stopword(&word) {
            continue;
        }
        if !seen.contains(&word) {
            seen.push(word);
        }
    }
    seen
}

/// An FTS5 query that matches any of the terms. Each term is quoted, so no
/// request text can inject FTS5 query syntax.
pub fn fts_any(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_identifiers_and_prose() {
        assert_eq!(
            words("cursor.execute(getUserName, user_id)"),
            ["cursor", "execute", "get", "user", "name", "user", "id"]
        );
    }

    #[test]
    fn terms_drop_stopwords_and_duplicates() {
        assert_eq!(
            terms("Write a Python function that builds an SQL query from a user-supplied name"),
            ["builds", "sql", "query", "user", "supplied", "name"]
        );
    }

    #[test]
    fn fts_query_cannot_smuggle_syntax() {
        let q = fts_any(&["a\"b".to_string(), "near".to_string()]);
        assert_eq!(q, "\"ab\" OR \"near\"");
    }
}
