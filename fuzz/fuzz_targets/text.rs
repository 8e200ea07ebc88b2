//! The plugin's term extraction and FTS5 query on arbitrary text (see
//! rescue_fuzz::text).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| rescue_fuzz::text::check(text));
