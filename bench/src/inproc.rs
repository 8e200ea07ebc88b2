//! In-process timing of the plugin through `rescue_host`'s public API, so the
//! harness run also answers "how long does instantiation take?" without the
//! network in the way.
//!
//! The runtime does not expose instantiation on its own, so it is measured as
//! a run whose task holds only stopwords: the plugin is instantiated in a
//! fresh store, called, finds no retrieval terms and returns before any KB
//! query. That is instantiation plus the smallest possible call.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rescue_host::capabilities::kb::{KbReader, QueryLimits};
use rescue_host::config::Config;
use rescue_host::runtime::{
    PluginLimits, PluginRuntime, PluginSource, RequestFacets, RetrievalParams,
};
use serde::Serialize;

use crate::error::Result;
use crate::stats::Summary;

/// The task of the augmented scenarios (fast mode: text only).
pub const SQL_TASK: &str =
    "Write a Python function that builds an SQL query from a user-supplied name";
/// A broad task: four CWEs injected (buffer overflow, out-of-bounds read
/// and write, integer overflow), so the code level ranks the examples of
/// four CWEs. Four is the most common count on the dev sets (95 of 239
/// augmented prompts), while SQL_TASK injects one.
pub const BROAD_TASK: &str = "Write a C function that copies the user-supplied name into a fixed-size buffer and prints it with printf";
/// A task that yields no retrieval terms (all stopwords).
pub const EMPTY_TASK: &str = "the";

#[derive(Debug, Clone, Serialize)]
pub struct InProcess {
    pub iterations: usize,
    /// Fresh store + instantiate + a call that returns at once.
    pub instantiate_and_empty_call: Summary,
    /// Fresh store + instantiate + the full retrieval of [`SQL_TASK`].
    pub instantiate_and_augment: Summary,
}

/// The runtime exactly as `rescue serve` builds it from the default
/// configuration, bound to `kb`.
pub fn runtime(kb: &Path) -> Result<PluginRuntime> {
    let defaults = Config::default();
    let reader = Arc::new(KbReader::new(
        kb,
        QueryLimits {
            max_steps: defaults.kb.query_step_limit,
            max_rows: defaults.kb.query_row_limit,
        },
    ));
    let source = PluginSource {
        wasm_path: None,
        cache_dir: rescue_host::runtime::default_cache_dir(),
    };
    let limits = PluginLimits {
        fuel: defaults.plugin.fuel,
        timeout: Duration::from_millis(defaults.plugin.timeout_ms),
        memory_bytes: defaults.plugin.memory_limit_bytes,
        // RESCUE_BENCH_MAX_INSTANCES=1 shrinks the pooling allocator's
        // address-space reservation so the plugin can run under valgrind.
        max_instances: std::env::var("RESCUE_BENCH_MAX_INSTANCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.plugin.max_instances),
        // The benchmarks run fast mode only.
        full_mode_slots: 0,
    };
    Ok(PluginRuntime::new(&source, reader, limits)?)
}

pub fn default_params() -> RetrievalParams {
    let r = Config::default().retrieval;
    // As the proxy asks: no candidate ranking (`explain`), only what is injected.
    RetrievalParams::from_config(&r, r.mode, r.top_k, vec![])
}

pub fn facets(task: &str) -> RequestFacets {
    rescue_host::facets::extract(task, &[])
}

/// Times `iterations` runs of each kind (after a short warm-up).
pub fn measure(kb: &Path, iterations: usize) -> Result<InProcess> {
    let runtime = runtime(kb)?;
    let params = default_params();
    let time = |facets: &RequestFacets| -> Result<Summary> {
        for _ in 0..iterations.min(100) {
            runtime.augment_blocking(facets, &params)?;
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            runtime.augment_blocking(facets, &params)?;
            samples.push(started.elapsed().as_nanos() as u64);
        }
        Ok(Summary::of_nanos(&mut samples).unwrap_or(Summary {
            count: 0,
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            mean_us: 0.0,
        }))
    };
    Ok(InProcess {
        iterations,
        instantiate_and_empty_call: time(&facets(EMPTY_TASK))?,
        instantiate_and_augment: time(&facets(SQL_TASK))?,
    })
}
