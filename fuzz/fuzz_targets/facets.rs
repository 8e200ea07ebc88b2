//! Facet extraction (fences, language, raw code) and the tree-sitter code
//! capability on arbitrary conversation text (see rescue_fuzz::facets).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (String, Vec<String>)| {
    let (task, earlier) = input;
    let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
    rescue_fuzz::facets::check(&task, &earlier);
});
