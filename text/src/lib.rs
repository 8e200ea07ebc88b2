//! Turning free text and identifiers into retrieval terms.
//!
//! Requests mix prose ("build an SQL query from a user-supplied name") with
//! identifiers (`cursor.execute`, `getUserName`). Both become lowercase word
//! terms; identifiers are split at `_`, `.` and camelCase boundaries so that an
//! API name meets the words of a guideline.
//!
//! The KB build (host) and the plugin share this crate: the build
//! precomputes what the plugin matches at serve time (the lexical index's
//! words, the examples' word sets, the packed columns of [`packed`]), so both
//! must split text and lay out records the same way.

pub mod packed;

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
    "arg",
    "args",
    "array",
    "arrays",
    "as",
    "assume",
    "at",
    "be",
    "been",
    "before",
    "being",
    "below",
    "between",
    "bool",
    "boolean",
    "both",
    "but",
    "by",
    "c",
    "call",
    "called",
    "calls",
    "can",
    "case",
    "cases",
    "char",
    "class",
    "code",
    "const",
    "could",
    "count",
    "cpp",
    "create",
    "creates",
    "def",
    "do",
    "does",
    "doing",
    "down",
    "e",
    "each",
    "eg",
    "element",
    "elements",
    "else",
    "etc",
    "every",
    "example",
    "examples",
    "false",
    "first",
    "float",
    "following",
    "for",
    "from",
    "function",
    "functions",
    "further",
    "g",
    "generate",
    "generates",
    "get",
    "gets",
    "given",
    "go",
    "golang",
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
    "ie",
    "if",
    "implement",
    "implements",
    "import",
    "in",
    "include",
    "index",
    "input",
    "inputs",
    "int",
    "integer",
    "integers",
    "into",
    "is",
    "it",
    "item",
    "items",
    "its",
    "itself",
    "java",
    "javascript",
    "js",
    "just",
    "k",
    "language",
    "len",
    "length",
    "let",
    "like",
    "list",
    "lists",
    "long",
    "m",
    "main",
    "make",
    "makes",
    "may",
    "me",
    "method",
    "might",
    "more",
    "most",
    "must",
    "my",
    "n",
    "need",
    "needs",
    "new",
    "no",
    "none",
    "nor",
    "not",
    "note",
    "now",
    "null",
    "number",
    "numbers",
    "object",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "order",
    "other",
    "our",
    "out",
    "output",
    "over",
    "own",
    "param",
    "parameter",
    "parameters",
    "params",
    "php",
    "please",
    "print",
    "prints",
    "program",
    "python",
    "result",
    "results",
    "return",
    "returned",
    "returns",
    "ruby",
    "run",
    "runs",
    "rust",
    "s",
    "same",
    "script",
    "second",
    "self",
    "set",
    "sets",
    "she",
    "should",
    "simple",
    "size",
    "so",
    "some",
    "sort",
    "sorted",
    "std",
    "step",
    "steps",
    "str",
    "string",
    "strings",
    "such",
    "sum",
    "t",
    "take",
    "takes",
    "task",
    "test",
    "tests",
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
    "three",
    "through",
    "to",
    "too",
    "true",
    "ts",
    "two",
    "type",
    "types",
    "typescript",
    "under",
    "until",
    "up",
    "use",
    "used",
    "uses",
    "using",
    "value",
    "values",
    "var",
    "very",
    "void",
    "want",
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
    "write",
    "writes",
    "written",
    "x",
    "y",
    "you",
    "your",
    "yours",
];

/// True for words that should not become retrieval terms.
pub fn is_stopword(word: &str) -> bool {
    // Sorted (a test checks it): a binary search, since this runs for every
    // word of every example the plugin considers.
    STOPWORDS.binary_search(&word).is_ok()
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

/// Calls `f` with each word of `text` as [`words`] would return them,
/// reusing one buffer instead of allocating a string per word.
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut current = String::new();
    let mut previous_lower = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            if ch.is_uppercase() && previous_lower && !current.is_empty() {
                f(&current);
                current.clear();
            }
            previous_lower = ch.is_lowercase() || ch.is_numeric();
            if ch.is_ascii() {
                current.push(ch.to_ascii_lowercase());
            } else {
                current.extend(ch.to_lowercase());
            }
        } else {
            previous_lower = false;
            if !current.is_empty() {
                f(&current);
                current.clear();
            }
        }
    }
    if !current.is_empty() {
        f(&current);
    }
}

/// How many of `terms` occur among the words of `text` (each counted once):
/// the definition that word sets ([`word_set`], [`term_set`],
/// [`shared_words`]), which the KB precomputes for the code level, are
/// tested against.
pub fn shared_terms(text: &str, terms: &[String]) -> usize {
    let words = words(text);
    let mut counted: Vec<&String> = Vec::new();
    for term in terms {
        if words.contains(term) && !counted.contains(&term) {
            counted.push(term);
        }
    }
    counted.len()
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

/// The terms as a JSON array of strings, the lexical query's parameter
/// (read with SQLite's `json_each`). Every character that JSON requires to be
/// escaped is, so no request text can change the array's shape.
pub fn json_array(terms: &[String]) -> String {
    let mut out = String::from("[");
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in term.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// A word's key in a word set: FNV-1a (64 bits) of its lowercase UTF-8.
/// Collisions among the few thousand distinct words of the KB and a request
/// are vanishingly unlikely (~1e-12), and a collision only adds one to an
/// overlap count.
pub fn word_hash(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The distinct words of `text` ([`words`]) as a word set: their
/// [`word_hash`]es, sorted, as little-endian bytes. The KB stores the word set
/// of each example's API list and task at build time, so serving a request
/// compares sets instead of splitting the same texts on every request.
pub fn word_set(text: &str) -> Vec<u8> {
    let mut hashes = Vec::new();
    for_each_word(text, |word| hashes.push(word_hash(word)));
    set_bytes(hashes)
}

/// The word set of request terms (already lowercase words).
pub fn term_set(terms: &[String]) -> Vec<u8> {
    set_bytes(terms.iter().map(|t| word_hash(t)).collect())
}

fn set_bytes(mut hashes: Vec<u64>) -> Vec<u8> {
    hashes.sort_unstable();
    hashes.dedup();
    hashes.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// How many words two word sets share (a merge of the sorted hashes); `None`
/// when either is not a word set (length not a multiple of 8). With
/// `a = word_set(text)` and `b = term_set(terms)` this is
/// [`shared_terms`]`(text, terms)`.
pub fn shared_words(a: &[u8], b: &[u8]) -> Option<usize> {
    if !a.len().is_multiple_of(8) || !b.len().is_multiple_of(8) {
        return None;
    }
    let key = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    let (mut a, mut b) = (a.chunks_exact(8).map(key), b.chunks_exact(8).map(key));
    let (mut x, mut y) = (a.next(), b.next());
    let mut shared = 0;
    while let (Some(p), Some(q)) = (x, y) {
        match p.cmp(&q) {
            std::cmp::Ordering::Less => x = a.next(),
            std::cmp::Ordering::Greater => y = b.next(),
            std::cmp::Ordering::Equal => {
                shared += 1;
                x = a.next();
                y = b.next();
            }
        }
    }
    Some(shared)
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
    fn shared_terms_agree_with_terms() {
        let request = terms("execute the SQL query for a user name");
        for text in [
            "cursor.execute,fetchall,getUserName",
            "Run an SQL query: execute it, then execute it again",
            "",
            "ÉXECUTE Größe userName",
        ] {
            let expected = terms(text).iter().filter(|t| request.contains(t)).count();
            assert_eq!(shared_terms(text, &request), expected, "{text}");
        }
        let mut all = Vec::new();
        for_each_word("getUserName(user_id)", |w| all.push(w.to_string()));
        assert_eq!(all, words("getUserName(user_id)"));
    }

    #[test]
    fn stopwords_are_sorted_and_unique() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_stopword("the") && is_stopword("a") && !is_stopword("sql"));
    }

    #[test]
    fn shared_terms_counts_each_term_once_at_any_query_length() {
        let text = "execute the query, then execute it again: Query done";
        for extra in [0, 70] {
            let mut request: Vec<String> = (0..extra).map(|i| format!("filler{i}")).collect();
            request.extend(["query", "execute", "absent"].map(String::from));
            assert_eq!(shared_terms(text, &request), 2, "{} terms", request.len());
            assert_eq!(shared_terms("Exécute query", &request), 1, "non-ASCII text");
        }
    }

    #[test]
    fn json_array_escapes_what_json_requires() {
        let terms = ["a\"b", "c\\d", "e\nf", "né"].map(String::from);
        assert_eq!(json_array(&terms), r#"["a\"b","c\\d","e\u000af","né"]"#);
        assert_eq!(json_array(&[]), "[]");
    }

    #[test]
    fn word_sets_count_what_shared_terms_counts() {
        let texts = [
            "cursor.execute,db.QueryRow,fmt.Sprintf",
            "Write a Python function that runs an SQL query for a user name; EXECUTE it",
            "Ünïcode Straße getÜberName sql",
            "",
        ];
        let queries = [
            terms("execute the SQL query for a user name"),
            terms("strasse straße über name"),
            terms("nothing in common"),
            Vec::new(),
        ];
        for text in texts {
            for query in &queries {
                assert_eq!(
                    shared_words(&word_set(text), &term_set(query)),
                    Some(shared_terms(text, query)),
                    "{text:?} / {query:?}"
                );
            }
        }
    }

    #[test]
    fn word_sets_are_sorted_distinct_and_checked() {
        let set = word_set("query Query QUERY row");
        assert_eq!(set.len(), 16);
        assert_eq!(shared_words(&set, &set), Some(2));
        assert_eq!(shared_words(&set, &[0; 7]), None);
        assert_eq!(shared_words(&[], &set), Some(0));
    }
}
