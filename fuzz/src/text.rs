//! Properties of `rescue_plugin::text`: request text to retrieval terms and
//! the lexical query's JSON array built from them.

use rescue_plugin::text::{
    is_stopword, json_array, shared_terms, shared_words, term_set, terms, word_set, words,
};

/// Checks one text. Properties: words are non-empty and hold no whitespace,
/// quote or FTS5 operator character; terms
/// are a duplicate-free subset of the words without stopwords, single
/// letters or pure numbers; the lexical query's parameter is a JSON array of
/// exactly the terms (and of any strings at all), so request text can never
/// change its shape; `shared_terms` counts what `terms` would, and so do the
/// word sets the KB stores (`word_set` against `term_set`).
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
    assert_eq!(
        shared_words(&word_set(text), &term_set(&request)),
        Some(expected),
        "shared words of {text:?}"
    );
    assert_eq!(
        shared_words(&word_set(text), &term_set(&terms)),
        Some(terms.len()),
        "a text shares all its terms with itself: {text:?}"
    );

    // The lexical query's parameter is a JSON array holding exactly the
    // terms, whatever they contain.
    let query = json_array(&terms);
    let parsed: Vec<String> = serde_json::from_str(&query)
        .unwrap_or_else(|e| panic!("{query:?} is not a JSON array of strings: {e}"));
    assert_eq!(parsed, terms, "{query:?}");
    let arbitrary: Vec<String> = text.split(' ').map(String::from).collect();
    let parsed: Vec<String> = serde_json::from_str(&json_array(&arbitrary))
        .unwrap_or_else(|e| panic!("raw words of {text:?}: {e}"));
    assert_eq!(parsed, arbitrary);
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
