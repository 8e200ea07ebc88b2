//! The request pipeline on generated bodies of the shapes the adapters read
//! (see rescue_fuzz::shaped).
#![no_main]

libfuzzer_sys::fuzz_target!(|body: rescue_fuzz::shaped::Body| body.check());
