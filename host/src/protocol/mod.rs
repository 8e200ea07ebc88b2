//! Protocol adapters: the only code that knows the JSON shapes of a given API.
//! Each adapter pulls task text out of a request, applies an augmentation to
//! it, and shapes error bodies the way that protocol's clients expect.

pub mod openai;
pub mod raw;
