//! The crate's one error type: what stops a soak run from being carried out
//! (as opposed to a failed check, which is a result in the report).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument {arg}: {message}")]
    Argument { arg: &'static str, message: String },

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

    #[error("the proxy did not start: {0}")]
    ProxyStart(String),

    #[error("reading /proc/{pid}/status: {message}")]
    Proc { pid: u32, message: String },
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
