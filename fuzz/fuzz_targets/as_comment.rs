//! Completions comment wrapping, on arbitrary text and on real knowledge
//! blocks composed from arbitrary KB text (see rescue_fuzz::comment).
#![no_main]

use rescue_fuzz::comment::{LANGUAGES, check};

libfuzzer_sys::fuzz_target!(
    |input: (u8, bool, rescue_fuzz::compose::ComposeInput, String)| {
        let (language, composed, knowledge, text) = input;
        let language = LANGUAGES[usize::from(language) % LANGUAGES.len()];
        if composed {
            check(&rescue_fuzz::compose::block(&knowledge), language);
        } else {
            check(&text, language);
        }
    }
);
