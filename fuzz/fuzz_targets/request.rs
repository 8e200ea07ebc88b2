//! Request parsing, facet extraction and knowledge insertion for every
//! augmentable route, from arbitrary bytes (see rescue_fuzz::request).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rescue_fuzz::request::check_bytes(data));
