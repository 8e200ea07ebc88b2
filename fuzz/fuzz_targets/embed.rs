//! The host's static embedding encoder on arbitrary text (see
//! rescue_fuzz::embed).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| rescue_fuzz::embed::check(text));
