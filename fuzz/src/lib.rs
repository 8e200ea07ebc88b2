//! Property checks behind the fuzz targets in `fuzz_targets/`.
//!
//! Each target decodes its input and calls one `check_*` function here. The
//! checks do more than "does not panic": they assert what the proxy promises
//! (ARCHITECTURE.md, "Invariants"): an augmented body is valid JSON with the
//! knowledge block exactly once, in the proxy's own place, and every byte the
//! client sent elsewhere is unchanged; the block cannot be closed or forged
//! by knowledge-base text and stays within its size bound; completion
//! comments stay comments. Keeping the checks in a library lets the unit
//! tests below replay reproducers without libFuzzer.
//!
//! A failed property panics with a message naming it, which libFuzzer
//! reports as a crash and saves the input.

pub mod comment;
pub mod compose;
pub mod embed;
pub mod facets;
pub mod insight;
pub mod known;
pub mod raw;
pub mod request;
pub mod shaped;
pub mod text;

/// Occurrences of `needle` in `haystack`, ignoring ASCII case (the plugin
/// defangs its tags case-insensitively, so that is how a forged tag counts).
pub fn count_ci(haystack: &str, needle: &str) -> usize {
    let hay = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    // Overlapping matches cannot occur for the tags counted here (they do not
    // overlap themselves), so `matches` is exact.
    hay.matches(needle.as_str()).count()
}
