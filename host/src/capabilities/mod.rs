//! The host side of the plugin's imports: what the sandbox is allowed to do.
//!
//! Each capability is plain Rust with no wasmtime types, so it can be tested on
//! its own; `runtime` adapts them to the generated WIT traits.

pub mod code;
pub mod kb;
