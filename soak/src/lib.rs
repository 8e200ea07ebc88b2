//! Bounded soak test for RESCUE Proxy (issue 7, item 6).
//!
//! `rescue-soak` (src/main.rs) starts the real `rescue` binary on
//! 127.0.0.1:0 in front of a mock upstream on loopback ([`mock`]) and runs N
//! closed-loop clients ([`client`]) for a fixed time, mixing augmented chat,
//! pass-through, SSE streams, Anthropic messages and faults ([`mix`]). Every
//! request carries a unique id; the run checks that each one is answered
//! exactly once with the expected status class, that nothing reaches the
//! upstream twice, and that the proxy's RSS stays flat ([`run`]). See
//! RELIABILITY.md at the repository root for the figures of a 10-minute run.

pub mod client;
pub mod error;
pub mod mix;
pub mod mock;
pub mod proxy;
pub mod run;

pub use error::{Error, Result};

/// The workspace root (this crate lives in `soak/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}
