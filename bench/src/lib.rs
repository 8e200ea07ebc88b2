//! Benchmark harness for RESCUE Proxy.
//!
//! `rescue-bench` (src/main.rs) measures the real proxy binary against a mock
//! upstream on loopback: added latency per percentile, throughput at fixed
//! concurrency, the proxy's memory and CPU. The criterion benches
//! (benches/hot_path.rs) time the hot-path pieces through `rescue_host`'s
//! library API. See BENCHMARKS.md at the repository root.

pub mod error;
pub mod harness;
pub mod inproc;
pub mod load;
pub mod mock;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod scenario;
pub mod stats;

pub use error::{Error, Result};

/// The workspace root (this crate lives in `bench/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}
