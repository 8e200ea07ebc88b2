//! The RESCUE retrieval stage, compiled to a WebAssembly component.
//!
//! Facets of a request come in; the security knowledge to inject comes out.
//! Everything the plugin knows about the world arrives through the imports in
//! `wit/rescue.wit` (read-only knowledge-base queries, tree-sitter code analysis,
//! text embedding, the full mode's completion call, logging), so the logic in [`retrieve`] and [`compose`] is written against the
//! [`Capabilities`] trait and unit-tested natively with a fake.

pub mod compose;
pub mod retrieve;
pub use rescue_text as text;

/// Guest bindings generated from `wit/rescue.wit`.
// The generated glue flattens records into many parameters: that is the
// canonical ABI, not a design choice.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rescue-plugin",
        pub_export_macro: true,
        additional_derives: [PartialEq],
    });
}

use bindings::rescue::plugin::kb;
pub use bindings::rescue::plugin::kb::SqlValue;
pub use bindings::rescue::plugin::types::{
    Augmentation, CodeBlock, CweHit, FacetScore, Fusion, Mode, PluginError, RequestFacets,
    Retrieval, RetrievalParams,
};
use bindings::rescue::plugin::{code, embed, llm, log};

/// What the retrieval logic needs from its host. In the component these are the
/// WIT imports; in native unit tests, a fake over an in-memory table.
pub trait Capabilities {
    /// Runs a read-only statement; the error is the host's message.
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, String>;
    /// Called function names in `source`, or an empty list when the language is unsupported.
    fn extract_calls(&self, language: &str, source: &str) -> Vec<String>;
    /// The L2-normalised embedding of `text` (all zeros: no known word).
    fn embed(&self, text: &str) -> Vec<f32>;
    /// The upstream model's answer to `prompt` (full mode), or why not.
    fn complete(&self, prompt: &str, max_tokens: u32) -> Result<String, String>;
    fn debug(&self, message: &str);
    fn warn(&self, message: &str);
}

/// The capabilities the host grants the component.
struct Imports;

impl Capabilities for Imports {
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, String> {
        kb::query(sql, params).map_err(|error| match error {
            kb::KbError::Rejected(m) => format!("rejected: {m}"),
            kb::KbError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            kb::KbError::Failed(m) => format!("failed: {m}"),
        })
    }

    fn extract_calls(&self, language: &str, source: &str) -> Vec<String> {
        // An unsupported language or an oversized snippet only removes the API
        // facet; the task text still drives retrieval.
        code::extract_calls(language, source).unwrap_or_default()
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        embed::text_vector(text)
    }

    fn complete(&self, prompt: &str, max_tokens: u32) -> Result<String, String> {
        llm::complete(prompt, max_tokens).map_err(|error| match error {
            llm::LlmError::Unavailable(m) => format!("unavailable: {m}"),
            llm::LlmError::RateLimited => "rate limited".into(),
            llm::LlmError::Timeout => "timed out".into(),
            llm::LlmError::Failed(m) => format!("failed: {m}"),
        })
    }

    fn debug(&self, message: &str) {
        log::log(log::Level::Debug, message);
    }

    fn warn(&self, message: &str) {
        log::log(log::Level::Warn, message);
    }
}

struct Component;

impl bindings::Guest for Component {
    fn augment(facets: RequestFacets, params: RetrievalParams) -> Result<Retrieval, PluginError> {
        retrieve::augment(&Imports, &facets, &params)
    }
}

bindings::export!(Component with_types_in bindings);
