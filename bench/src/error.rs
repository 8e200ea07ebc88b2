//! The crate's one error type: everything that can stop a benchmark run.

use std::path::PathBuf;

/// Why a benchmark run could not be carried out (as opposed to a target being
/// missed, which is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument {arg}: {message}")]
    Argument { arg: String, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the proxy binary {path} is missing: build it with `cargo build --release -p rescue-host`"
    )]
    ProxyMissing { path: PathBuf },

    #[error("the proxy did not start: {message}")]
    ProxyStart { message: String },

    #[error("reading /proc for pid {pid}: {message}")]
    Proc { pid: u32, message: String },

    #[error("HTTP: {0}")]
    Http(String),

    #[error("every request of {scenario} against {target} failed ({errors} errors): {last}")]
    AllFailed {
        scenario: String,
        target: String,
        errors: u64,
        last: String,
    },

    #[error("in-process plugin run: {0}")]
    Plugin(#[from] rescue_host::Error),

    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// For `map_err`: an I/O error about `path` (a file, or what was being
    /// set up when it failed).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
