//! RESCUE Proxy: a transparent OpenAI-compatible gateway that runs the RESCUE
//! retrieval stage in a sandboxed WebAssembly component and injects the security
//! knowledge it finds into code-generation requests.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod facets;
pub mod kb;
pub mod metrics;
pub mod offline;
pub mod policy;
pub mod protocol;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod upstream;

pub use error::{Error, Result};
