//! Raw JSON editing on arbitrary text (see rescue_fuzz::raw).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        rescue_fuzz::raw::check(text);
    }
});
