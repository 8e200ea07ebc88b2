//! The crate's one error type. Start-up failures (config, knowledge base, plugin)
//! and per-request failures share it; `server::errors` maps the per-request
//! variants to an HTTP status and an error body in the client's protocol.

use std::path::PathBuf;

/// Everything that can go wrong in the host, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("knowledge base {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("knowledge base {path}: {message}")]
    KbInvalid { path: PathBuf, message: String },

    #[error("knowledge-base source {path}: {message}")]
    KbSource { path: PathBuf, message: String },

    #[error("plugin {what}: {message}")]
    Plugin { what: String, message: String },

    #[error("{kind}: {message}")]
    PluginRun {
        kind: PluginFailure,
        message: String,
    },

    #[error("{message}")]
    BadRequest { message: String },

    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    #[error("security augmentation failed ({kind}) and the policy is fail-closed")]
    FailClosed { kind: PluginFailure },

    #[error("no upstream is configured for {api:?} requests{}", model.as_ref().map(|m| format!(" with model {m:?}")).unwrap_or_default())]
    NoUpstream {
        api: crate::config::UpstreamApi,
        model: Option<String>,
    },

    #[error("the proxy is at its limit of {limit} concurrent requests; retry shortly")]
    Overloaded { limit: usize },

    #[error("upstream unreachable: {message}")]
    UpstreamUnavailable { message: String },

    #[error("upstream sent no response headers within {after_ms} ms")]
    UpstreamTimeout { after_ms: u64 },

    #[error("upstream base URL {url:?}: {message}")]
    UpstreamUrl { url: String, message: String },

    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("knowledge-base summarizer: {message}")]
    KbSummarize { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one plugin run produced no usable result. Each has a short stable name
/// used in the `X-Rescue-Fail` header, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFailure {
    /// The guest trapped (a bug in the plugin, or a limit wasmtime enforces).
    Trap,
    /// The fuel budget ran out.
    Fuel,
    /// The wall-clock deadline (epoch) passed, or no plugin slot freed in time.
    Timeout,
    /// The guest tried to grow its memory past the cap.
    Memory,
    /// The plugin returned a typed error (knowledge base, schema, input).
    PluginError,
}

impl PluginFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginFailure::Trap => "plugin-trap",
            PluginFailure::Fuel => "plugin-fuel-exhausted",
            PluginFailure::Timeout => "plugin-timeout",
            PluginFailure::Memory => "plugin-memory-limit",
            PluginFailure::PluginError => "plugin-error",
        }
    }
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
