//! The plugin's knowledge block on arbitrary (hostile) knowledge-base text
//! (see rescue_fuzz::compose).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: rescue_fuzz::compose::ComposeInput| {
    rescue_fuzz::compose::check(&input);
});
