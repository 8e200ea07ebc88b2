//! The plugin's parser of the full-mode answer on arbitrary text (see
//! rescue_fuzz::insight).
#![no_main]

libfuzzer_sys::fuzz_target!(|answer: &str| rescue_fuzz::insight::check(answer));
