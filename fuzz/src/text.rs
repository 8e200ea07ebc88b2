//! Properties of `rescue_plugin::text`: request text to retrieval terms and
//! the FTS5 query built from them.

use rescue_plugin::text::{fts_any, is_stopword, shared_terms, terms, words};

/// Checks one text. Properties: words are non-empty and hold no whitespace,
/// quote or FTS5 operator character; terms
/// are a duplicate-free subset of the words without stopwords, single
/// letters or pure numbers; the FTS5 query is exactly `"t1" OR "t2" ...`,
/// so request text can never inject query syntax; `shared_terms` counts
/// what `terms` would.
pub fn check(text: &str) {
    let words = words(text);
    for word in &words {
        assert!(!word.is_empty(), "empty word from {text:?}");
        assert!(
            !word.contains(|c: char| c.is_whitespace()
                || matches!(c, '"' | '*' | '^' | ':' | '(' | ')' | '-' | '+')),
            "word {word:?} carries syntax"
        );
    }

    let terms = terms(text);
    for (i, term) in terms.iter().enumerate() {
        assert!(words.contains(term), "term {term:?} is not a word");
        assert!(term.len() >= 2, "single-letter term {term:?}");
        assert!(
            !term.chars().all(|c| c.is_ascii_digit()),
            "numeric term {term:?}"
        );
        assert!(!is_stopword(term), "stopword term {term:?}");
        assert!(!terms[..i].contains(term), "duplicate term {term:?}");
    }

    // The code level's allocation-free overlap count agrees with the terms.
    let request: Vec<String> = ["sql", "query", "user", "name", "execute", "é"]
        .map(String::from)
        .to_vec();
    let expected = terms.iter().filter(|t| request.contains(t)).count();
    assert_eq!(
        shared_terms(text, &request),
        expected,
        "shared terms of {text:?}"
    );

    let query = fts_any(&terms);
    if terms.is_empty() {
        assert!(query.is_empty());
        return;
    }
    let parts: Vec<&str> = query.split(" OR ").collect();
    assert_eq!(
        parts.len(),
        terms.len(),
        "query {query:?} has extra operators"
    );
    for (part, term) in parts.iter().zip(&terms) {
        let inner = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{part:?} is not one quoted term"));
        assert!(!inner.contains('"'), "quote inside {part:?}");
        assert_eq!(inner, term.replace('"', ""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_identifiers_and_syntax() {
        check("Write a Python function: cursor.execute(getUserName, user_id) NEAR(\"a\" b)*");
        check("ÀÉÎ ǅungla İstanbul ﬁle 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 12 345");
        check("");
    }
}
