//! Running the RESCUE plugin: one wasmtime `Engine`, the component compiled once
//! (and cached on disk as precompiled code), an `InstancePre`, the pooling
//! allocator, and a fresh `Store` per request with an epoch deadline, a memory
//! cap and (optionally) fuel.
//!
//! The store is the whole of the plugin's world: a WASI context that grants
//! nothing (no files, no sockets, no environment, frozen clocks), the knowledge
//! base reader and the code analyser. Credentials never enter it.

mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capabilities::code;
use crate::capabilities::kb::{self as kbcap, KbReader};
use crate::error::{Error, PluginFailure, Result};

pub mod bindings {
    //! Host bindings generated from `wit/rescue.wit`.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rescue-plugin",
    });
}

pub use bindings::rescue::plugin::types::{
    Augmentation, CodeBlock, CweHit, FacetScore, Fusion, Mode, PluginError, RequestFacets,
    Retrieval, RetrievalParams,
};
use bindings::rescue::plugin::{
    code as wit_code, embed as wit_embed, kb as wit_kb, llm as wit_llm, log as wit_log,
    types as wit_types,
};

impl RetrievalParams {
    /// The plugin's parameters from the `[retrieval]` section, with the
    /// per-request decisions of the policy (mode, top k, CWE scope).
    pub fn from_config(
        config: &crate::config::RetrievalConfig,
        mode: crate::config::RetrievalMode,
        top_k: u32,
        cwe_scope: Vec<u32>,
    ) -> Self {
        Self {
            mode: match mode {
                crate::config::RetrievalMode::Fast => Mode::Fast,
                crate::config::RetrievalMode::Full => Mode::Full,
            },
            top_k,
            lexical_threshold: config.lexical_threshold,
            semantic_threshold: config.semantic_threshold,
            scenario_threshold: config.scenario_threshold,
            classifier_threshold: config.classifier_threshold,
            ordinary_margin: config.ordinary_margin,
            fusion: match config.fusion {
                crate::config::FusionMethod::ReciprocalRank => Fusion::ReciprocalRank,
                crate::config::FusionMethod::ScoreMargin => Fusion::ScoreMargin,
            },
            rrf_k: config.rrf_k,
            score_fusion_base: config.score_fusion_base,
            rank_cut: config.rank_cut,
            lexical_weight: config.lexical_weight,
            semantic_weight: config.semantic_weight,
            scenario_weight: config.scenario_weight,
            classifier_weight: config.classifier_weight,
            hierarchy_walk: config.hierarchy_walk,
            max_chars: config.max_chars,
            cwe_scope,
            // What the proxy needs; eval and retrieve ask for the ranking.
            explain: false,
        }
    }
}

/// Why a full-mode completion did not happen (mirrors the WIT `llm-error`).
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionError {
    Unavailable(String),
    RateLimited,
    Timeout,
    Failed(String),
}

/// The host side of the `llm` import: one request's way to its upstream,
/// holding whatever credentials that takes. Called on a blocking thread.
pub trait Completer: Send + Sync {
    fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
    ) -> std::result::Result<String, CompletionError>;
    /// The longest a call may take (the plugin's deadline is extended by it).
    fn timeout(&self) -> Duration;
    /// Full mode was asked for but every full-mode slot was taken, so the
    /// request was retrieved in fast mode without calling.
    fn no_free_slot(&self) {}
}

/// Completions one plugin run may ask for.
const MAX_COMPLETIONS_PER_RUN: u32 = 1;

/// The plugin built from `plugin/` by `host/build.rs`, embedded in the binary.
pub const EMBEDDED_PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rescue_plugin.wasm"));

/// Per pooled instance, the memory (and table) kept mapped between runs; a
/// retrieval touches well under this.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// How often the epoch advances; the deadline is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Resource bounds on one plugin run.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Fuel units (roughly, Wasm instructions) one run may use; 0 turns
    /// metering off (the timeout still bounds a run).
    pub fuel: u64,
    /// Wall-clock budget of one run, including waiting for a free slot.
    pub timeout: Duration,
    /// Largest linear memory the plugin may grow to.
    pub memory_bytes: usize,
    /// Plugin runs in flight at once (pooling-allocator slots).
    pub max_instances: u32,
    /// Full-mode runs in flight at once, in slots of their own: such a run
    /// holds its instance while it waits for the upstream.
    pub full_mode_slots: u32,
}

/// Where the plugin comes from and where its compiled form is cached.
#[derive(Debug, Clone, Default)]
pub struct PluginSource {
    /// A `.wasm` component to load instead of the embedded one.
    pub wasm_path: Option<PathBuf>,
    /// Directory for precompiled `.cwasm` files; `None` compiles in memory.
    pub cache_dir: Option<PathBuf>,
}

/// Per-run state: the plugin's entire view of the world.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    kb: Arc<KbReader>,
    memory: MemoryCap,
    /// Full mode's way to the upstream; `None` in fast mode.
    completer: Option<Arc<dyn Completer>>,
    completions_left: u32,
}

/// Caps linear-memory growth and remembers whether the cap was hit, so a
/// failed run can be reported as a memory failure rather than a generic trap.
struct MemoryCap {
    max_bytes: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            wasmtime::bail!(
                "plugin memory cap of {} bytes reached (wanted {desired})",
                self.max_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for HostState {}

impl wit_kb::Host for HostState {
    fn query(
        &mut self,
        sql: String,
        params: Vec<wit_kb::SqlValue>,
    ) -> Result<Vec<wit_kb::Row>, wit_kb::KbError> {
        let params: Vec<kbcap::SqlValue> = params.into_iter().map(from_wit_value).collect();
        match self.kb.query(&sql, &params) {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|row| row.into_iter().map(to_wit_value).collect())
                .collect()),
            Err(kbcap::QueryError::Rejected(m)) => Err(wit_kb::KbError::Rejected(m)),
            Err(kbcap::QueryError::LimitExceeded(m)) => Err(wit_kb::KbError::LimitExceeded(m)),
            Err(kbcap::QueryError::Failed(m)) => Err(wit_kb::KbError::Failed(m)),
        }
    }
}

fn from_wit_value(value: wit_kb::SqlValue) -> kbcap::SqlValue {
    match value {
        wit_kb::SqlValue::Null => kbcap::SqlValue::Null,
        wit_kb::SqlValue::Integer(i) => kbcap::SqlValue::Integer(i),
        wit_kb::SqlValue::Real(f) => kbcap::SqlValue::Real(f),
        wit_kb::SqlValue::Text(s) => kbcap::SqlValue::Text(s),
        wit_kb::SqlValue::Blob(b) => kbcap::SqlValue::Blob(b),
    }
}

fn to_wit_value(value: kbcap::SqlValue) -> wit_kb::SqlValue {
    match value {
        kbcap::SqlValue::Null => wit_kb::SqlValue::Null,
        kbcap::SqlValue::Integer(i) => wit_kb::SqlValue::Integer(i),
        kbcap::SqlValue::Real(f) => wit_kb::SqlValue::Real(f),
        kbcap::SqlValue::Text(s) => wit_kb::SqlValue::Text(s),
        kbcap::SqlValue::Blob(b) => wit_kb::SqlValue::Blob(b),
    }
}

impl wit_code::Host for HostState {
    fn extract_calls(
        &mut self,
        language: String,
        source: String,
    ) -> Result<Vec<String>, wit_code::CodeError> {
        code::extract_calls(&language, &source).map_err(|e| match e {
            code::CodeError::UnsupportedLanguage(l) => wit_code::CodeError::UnsupportedLanguage(l),
            code::CodeError::TooLarge(n) => wit_code::CodeError::TooLarge(n),
        })
    }

    fn detect_language(&mut self, source: String) -> Option<String> {
        code::detect_language(&source).map(str::to_string)
    }
}

impl wit_embed::Host for HostState {
    fn text_vector(&mut self, text: String) -> Vec<f32> {
        self.kb.embed(&text)
    }
}

impl wit_llm::Host for HostState {
    fn complete(
        &mut self,
        prompt: String,
        max_tokens: u32,
    ) -> std::result::Result<String, wit_llm::LlmError> {
        let Some(completer) = &self.completer else {
            return Err(wit_llm::LlmError::Unavailable(
                "fast mode: no upstream calls".into(),
            ));
        };
        if self.completions_left == 0 {
            return Err(wit_llm::LlmError::RateLimited);
        }
        self.completions_left -= 1;
        completer
            .complete(&prompt, max_tokens.min(2_000))
            .map_err(|e| match e {
                CompletionError::Unavailable(m) => wit_llm::LlmError::Unavailable(m),
                CompletionError::RateLimited => wit_llm::LlmError::RateLimited,
                CompletionError::Timeout => wit_llm::LlmError::Timeout,
                CompletionError::Failed(m) => wit_llm::LlmError::Failed(m),
            })
    }
}

impl wit_log::Host for HostState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        // The message is plugin-controlled: bound it so a plugin cannot flood logs.
        let message: String = message.chars().take(512).collect();
        match level {
            wit_log::Level::Debug => tracing::debug!(target: "rescue::plugin", "{message}"),
            wit_log::Level::Info => tracing::info!(target: "rescue::plugin", "{message}"),
            wit_log::Level::Warn => tracing::warn!(target: "rescue::plugin", "{message}"),
        }
    }
}

/// A wall clock frozen at the epoch: the plugin has no use for the time of day,
/// and a clock is a side channel.
struct FrozenWallClock;

impl wasmtime_wasi::HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

struct FrozenMonotonicClock;

impl wasmtime_wasi::HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A loaded, instantiable plugin bound to one knowledge base.
pub struct PluginRuntime {
    engine: Engine,
    pre: bindings::RescuePluginPre<HostState>,
    kb: Arc<KbReader>,
    limits: PluginLimits,
    /// Fast-mode runs, including full-mode requests that found every
    /// full-mode slot taken: `max_instances`.
    slots: Arc<Semaphore>,
    /// Full-mode runs, which wait on the network: `full_mode_slots`.
    full_mode_slots: Arc<Semaphore>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("kb", &self.kb.path())
            .field("limits", &self.limits)
            .finish()
    }
}

fn plugin_err(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Plugin {
        what: what.to_string(),
        message: format!("{error:#}"),
    }
}

impl PluginRuntime {
    /// Builds the engine, loads (or compiles and caches) the component and
    /// prepares it for instantiation. Fails if the component does not match the
    /// WIT world this host implements.
    pub fn new(source: &PluginSource, kb: Arc<KbReader>, limits: PluginLimits) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = limits.max_instances.max(1) + limits.full_mode_slots;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memories_per_component(2)
            .max_memory_size(limits.memory_bytes)
            // Reset a finished instance's memory by rewriting it rather than
            // returning it to the kernel: madvise on every run cost TLB
            // shootdowns across cores and a page fault per touched page on
            // the next (measured: BENCHMARKS.md).
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            // ...and rewrite only the pages the run wrote (Linux >= 6.7; a
            // plain memset of the whole 1.1 MB memory otherwise): a
            // retrieval dirties a fraction of it, and the memset was 16% of
            // a run (BENCHMARKS.md).
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Fuel is optional: the epoch deadline already bounds a run's
            // time, and metering costs ~6% of a retrieval (BENCHMARKS.md).
            .consume_fuel(limits.fuel > 0)
            .epoch_interruption(true)
            .profiler(if std::env::var_os("RESCUE_PERFMAP").is_some() {
                // `perf` can then name the plugin's functions (BENCHMARKS.md).
                wasmtime::ProfilingStrategy::PerfMap
            } else {
                wasmtime::ProfilingStrategy::None
            })
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| plugin_err("engine", e))?;

        let wasm = match &source.wasm_path {
            Some(path) => std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?,
            None => EMBEDDED_PLUGIN.to_vec(),
        };
        let component = cache::load_component(&engine, &wasm, source.cache_dir.as_deref())?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| plugin_err("linking WASI", e))?;
        bindings::RescuePlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| plugin_err("linking capabilities", e))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| plugin_err("instantiate_pre", e))?;
        let pre =
            bindings::RescuePluginPre::new(instance_pre).map_err(|e| plugin_err("exports", e))?;

        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            pre,
            kb,
            slots: Arc::new(Semaphore::new(limits.max_instances.max(1) as usize)),
            full_mode_slots: Arc::new(Semaphore::new(limits.full_mode_slots as usize)),
            limits,
        })
    }

    pub fn kb(&self) -> &Arc<KbReader> {
        &self.kb
    }

    fn new_store(&self, completer: Option<Arc<dyn Completer>>) -> Store<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .wall_clock(FrozenWallClock)
            .monotonic_clock(FrozenMonotonicClock);
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            kb: Arc::clone(&self.kb),
            memory: MemoryCap {
                max_bytes: self.limits.memory_bytes,
                hit: false,
            },
            completer,
            completions_left: MAX_COMPLETIONS_PER_RUN,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store
    }

    /// One fast-mode plugin run on the calling thread. Blocking: it runs
    /// Wasm and SQLite.
    pub fn augment_blocking(
        &self,
        facets: &RequestFacets,
        params: &RetrievalParams,
    ) -> Result<Retrieval> {
        self.retrieve_blocking(facets, params, None)
    }

    /// One plugin run on the calling thread, with full mode's way to the
    /// upstream when `params.mode` is full. Blocking: it runs Wasm, SQLite
    /// and (full mode) waits for the upstream.
    pub fn retrieve_blocking(
        &self,
        facets: &RequestFacets,
        params: &RetrievalParams,
        completer: Option<Arc<dyn Completer>>,
    ) -> Result<Retrieval> {
        let completer = completer.filter(|_| params.mode == Mode::Full);
        // The epoch keeps ticking while the host waits for the upstream, so
        // full mode's deadline covers the call as well as the plugin's work.
        let budget = self.limits.timeout
            + completer
                .as_ref()
                .map_or(Duration::ZERO, |c| c.timeout() * MAX_COMPLETIONS_PER_RUN);
        let mut store = self.new_store(completer);
        if self.limits.fuel > 0 {
            store
                .set_fuel(self.limits.fuel)
                .map_err(|e| plugin_err("fuel", e))?;
        }
        let ticks = (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);

        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|plugin| plugin.call_augment(&mut store, facets, params));
        match outcome {
            Ok(Ok(retrieval)) => Ok(retrieval),
            Ok(Err(error)) => Err(Error::PluginRun {
                kind: PluginFailure::PluginError,
                message: match error {
                    PluginError::Kb(m) => format!("knowledge base: {m}"),
                    PluginError::Schema(m) => format!("knowledge-base schema: {m}"),
                    PluginError::InvalidInput(m) => format!("invalid input: {m}"),
                },
            }),
            Err(error) => {
                let kind = if store.data().memory.hit {
                    PluginFailure::Memory
                } else {
                    match error.downcast_ref::<Trap>() {
                        Some(Trap::OutOfFuel) => PluginFailure::Fuel,
                        Some(Trap::Interrupt) => PluginFailure::Timeout,
                        _ => PluginFailure::Trap,
                    }
                };
                Err(Error::PluginRun {
                    kind,
                    message: format!("{error:#}"),
                })
            }
        }
    }

    /// One plugin run from async code. A fast-mode run waits (within the
    /// timeout) for a free slot, then runs right here, on the runtime worker
    /// that polls the request. A full-mode run, which waits on the network,
    /// takes a full-mode slot if one is free and runs on the blocking pool;
    /// if none is, the request is retrieved in fast mode (and the completer
    /// told so): full mode may slow a request down, never queue it or the
    /// fast-mode runs behind the upstream.
    ///
    /// Running in place holds the worker for the few hundred microseconds of
    /// a retrieval. The server sizes its runtime at cores + plugin slots
    /// workers (`server.worker_threads`), so while every slot is busy there
    /// are still as many free workers as cores to serve and steal everything
    /// else, and no handoff is paid per request: measured against
    /// `block_in_place` (+14% CPU per request) and a dedicated thread pool
    /// (+15%) in BENCHMARKS.md.
    pub async fn augment(
        self: &Arc<Self>,
        facets: RequestFacets,
        mut params: RetrievalParams,
        completer: Option<Arc<dyn Completer>>,
    ) -> Result<Retrieval> {
        if let Some(completer) = completer.filter(|_| params.mode == Mode::Full) {
            match Arc::clone(&self.full_mode_slots).try_acquire_owned() {
                Ok(permit) => {
                    let this = Arc::clone(self);
                    return tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        this.retrieve_blocking(&facets, &params, Some(completer))
                    })
                    .await
                    .map_err(|e| Error::PluginRun {
                        kind: PluginFailure::Trap,
                        message: format!("plugin task panicked: {e}"),
                    })?;
                }
                Err(_) => {
                    completer.no_free_slot();
                    params.mode = Mode::Fast;
                }
            }
        }
        let _permit =
            tokio::time::timeout(self.limits.timeout, Arc::clone(&self.slots).acquire_owned())
                .await
                .map_err(|_| Error::PluginRun {
                    kind: PluginFailure::Timeout,
                    message: "no plugin slot became free within the timeout".into(),
                })?
                .expect("plugin semaphore is never closed");
        self.retrieve_blocking(&facets, &params, None)
    }
}

/// Advances the engine's epoch so deadlines fire. The thread holds only a weak
/// reference and ends when the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("rescue-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("spawning the epoch thread");
}

/// Default directory for precompiled plugin code.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .map(|base| base.join("rescue-proxy"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kb::QueryLimits;

    fn shipped_kb() -> Arc<KbReader> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kb.sqlite");
        Arc::new(KbReader::new(
            &path,
            QueryLimits {
                max_steps: 10_000,
                max_rows: 1_000,
            },
        ))
    }

    fn limits() -> PluginLimits {
        PluginLimits {
            fuel: 200_000_000,
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_instances: 4,
            full_mode_slots: 2,
        }
    }

    fn sql_task() -> RequestFacets {
        RequestFacets {
            task: "Write a Python function that builds an SQL query from a user-supplied name"
                .into(),
            code_blocks: vec![],
            language: Some("python".into()),
        }
    }

    /// Why a run failed; panics if it did not fail as a plugin run.
    fn failure_kind(result: Result<Retrieval>) -> PluginFailure {
        match result {
            Err(Error::PluginRun { kind, .. }) => kind,
            other => panic!("expected a plugin failure, got {other:?}"),
        }
    }

    fn params() -> RetrievalParams {
        RetrievalParams::from_config(
            &crate::config::RetrievalConfig::default(),
            crate::config::RetrievalMode::Fast,
            4,
            vec![],
        )
    }

    #[test]
    fn the_embedded_plugin_retrieves_from_the_shipped_kb() {
        let runtime = PluginRuntime::new(&PluginSource::default(), shipped_kb(), limits()).unwrap();
        let out = runtime
            .augment_blocking(&sql_task(), &params())
            .unwrap()
            .augmentation
            .expect("augmented");
        assert_eq!(out.cwes[0].id, "CWE-89");
        // Each run gets a fresh store: a second run sees no state from the first.
        let again = runtime
            .augment_blocking(&sql_task(), &params())
            .unwrap()
            .augmentation
            .unwrap();
        assert_eq!(again.text, out.text);
    }

    #[test]
    fn the_configured_fusion_reaches_the_plugin() {
        let runtime = PluginRuntime::new(&PluginSource::default(), shipped_kb(), limits()).unwrap();
        let fused_with = |fusion| {
            let config = crate::config::RetrievalConfig {
                fusion,
                ..Default::default()
            };
            let params = RetrievalParams::from_config(
                &config,
                crate::config::RetrievalMode::Fast,
                4,
                vec![],
            );
            let out = runtime.augment_blocking(&sql_task(), &params).unwrap();
            out.augmentation.expect("augmented").cwes[0].clone()
        };
        // A reciprocal-rank vote is worth at most 1/61; a score-margin vote
        // at least its base (2.0).
        let rrf = fused_with(crate::config::FusionMethod::ReciprocalRank);
        let margin = fused_with(crate::config::FusionMethod::ScoreMargin);
        assert_eq!((rrf.id.as_str(), margin.id.as_str()), ("CWE-89", "CWE-89"));
        assert!(rrf.score > 0.0 && rrf.score <= 3.0 / 61.0, "{}", rrf.score);
        assert!(margin.score >= 2.0, "{}", margin.score);
    }

    #[test]
    fn fuel_exhaustion_is_reported_as_such() {
        let runtime = PluginRuntime::new(
            &PluginSource::default(),
            shipped_kb(),
            PluginLimits {
                fuel: 5_000,
                ..limits()
            },
        )
        .unwrap();
        assert_eq!(
            failure_kind(runtime.augment_blocking(&sql_task(), &params())),
            PluginFailure::Fuel
        );
    }

    #[test]
    fn a_memory_cap_below_the_plugin_footprint_is_refused_at_load() {
        let err = PluginRuntime::new(
            &PluginSource::default(),
            shipped_kb(),
            PluginLimits {
                memory_bytes: 1 << 20,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn a_run_that_outgrows_the_memory_cap_fails_as_a_memory_failure() {
        let runtime = PluginRuntime::new(
            &PluginSource::default(),
            shipped_kb(),
            PluginLimits {
                memory_bytes: 8 << 20,
                ..limits()
            },
        )
        .unwrap();
        let mut huge = sql_task();
        huge.task = "sql ".repeat(2 << 20);
        assert_eq!(
            failure_kind(runtime.augment_blocking(&huge, &params())),
            PluginFailure::Memory
        );
        // The failure was confined to that run's store.
        assert!(
            runtime
                .augment_blocking(&sql_task(), &params())
                .unwrap()
                .augmentation
                .is_some()
        );
    }

    #[test]
    fn precompiled_cache_is_written_reused_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let source = PluginSource {
            wasm_path: None,
            cache_dir: Some(dir.path().to_path_buf()),
        };
        PluginRuntime::new(&source, shipped_kb(), limits()).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].extension().is_some_and(|e| e == "cwasm"));
        let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();

        // A second load uses the entry as it is.
        let runtime = PluginRuntime::new(&source, shipped_kb(), limits()).unwrap();
        assert!(
            runtime
                .augment_blocking(&sql_task(), &params())
                .unwrap()
                .augmentation
                .is_some()
        );
        assert_eq!(
            std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
            written
        );

        // A corrupt entry is replaced, not trusted.
        std::fs::write(&entries[0], b"not a cwasm").unwrap();
        let runtime = PluginRuntime::new(&source, shipped_kb(), limits()).unwrap();
        assert!(
            runtime
                .augment_blocking(&sql_task(), &params())
                .unwrap()
                .augmentation
                .is_some()
        );
        assert!(std::fs::metadata(&entries[0]).unwrap().len() > 1000);
    }

    /// A hostile stand-in for the plugin, in component text: it exports an
    /// `augment` of the right type whose body is `body` (core Wasm).
    fn hostile_plugin(dir: &Path, body: &str) -> PathBuf {
        let text = format!(
            r#"(component
  (type $cb (record (field "language" (option string)) (field "text" string)))
  (export $cb-e "code-block" (type $cb))
  (type $facets (record (field "task" string) (field "code-blocks" (list $cb-e)) (field "language" (option string))))
  (export $facets-e "request-facets" (type $facets))
  (type $mode (enum "fast" "full"))
  (export $mode-e "mode" (type $mode))
  (type $fusion (enum "reciprocal-rank" "score-margin"))
  (export $fusion-e "fusion" (type $fusion))
  (type $params (record (field "mode" $mode-e) (field "top-k" u32) (field "lexical-threshold" float64) (field "semantic-threshold" float64) (field "scenario-threshold" float64) (field "classifier-threshold" float64) (field "ordinary-margin" float64) (field "fusion" $fusion-e) (field "rrf-k" u32) (field "score-fusion-base" float64) (field "rank-cut" u32) (field "lexical-weight" float64) (field "semantic-weight" float64) (field "scenario-weight" float64) (field "classifier-weight" float64) (field "hierarchy-walk" bool) (field "max-chars" u32) (field "cwe-scope" (list u32)) (field "explain" bool)))
  (export $params-e "retrieval-params" (type $params))
  (type $fs (record (field "score" float64) (field "rank" u32)))
  (export $fs-e "facet-score" (type $fs))
  (type $hit (record (field "id" string) (field "name" string) (field "score" float64) (field "lexical" (option $fs-e)) (field "semantic" (option $fs-e)) (field "scenario" (option $fs-e)) (field "classifier" (option $fs-e)) (field "named" (option $fs-e)) (field "via" (option string))))
  (export $hit-e "cwe-hit" (type $hit))
  (type $aug (record (field "text" string) (field "cwes" (list $hit-e)) (field "example-id" (option string))))
  (export $aug-e "augmentation" (type $aug))
  (type $ret (record (field "augmentation" (option $aug-e)) (field "candidates" (list $hit-e))))
  (export $ret-e "retrieval" (type $ret))
  (type $err (variant (case "kb" string) (case "schema" string) (case "invalid-input" string)))
  (export $err-e "plugin-error" (type $err))
  (core module $m
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
    ;; More than 16 flat parameters: the canonical ABI passes them in memory.
    (func (export "augment") (param i32) (result i32)
      {body}))
  (core instance $i (instantiate $m))
  (func (export "augment") (param "facets" $facets-e) (param "params" $params-e) (result (result $ret-e (error $err-e)))
    (canon lift (core func $i "augment") (memory (core memory $i "mem")) (realloc (core func $i "realloc")))))"#
        );
        let path = dir.join("hostile.wasm");
        std::fs::write(&path, wat::parse_str(&text).expect("valid component text")).unwrap();
        path
    }

    #[test]
    fn a_trapping_plugin_is_a_trap_failure() {
        let dir = tempfile::tempdir().unwrap();
        let source = PluginSource {
            wasm_path: Some(hostile_plugin(dir.path(), "unreachable")),
            cache_dir: None,
        };
        let runtime = PluginRuntime::new(&source, shipped_kb(), limits()).unwrap();
        assert_eq!(
            failure_kind(runtime.augment_blocking(&sql_task(), &params())),
            PluginFailure::Trap
        );
    }

    #[test]
    fn a_looping_plugin_is_stopped_by_fuel_or_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let looping = "(loop $forever (br $forever)) unreachable";
        let source = PluginSource {
            wasm_path: Some(hostile_plugin(dir.path(), looping)),
            cache_dir: None,
        };
        let stopped_with = |limits: PluginLimits| {
            let runtime = PluginRuntime::new(&source, shipped_kb(), limits).unwrap();
            failure_kind(runtime.augment_blocking(&sql_task(), &params()))
        };
        // Fuel first: deterministic.
        assert_eq!(stopped_with(limits()), PluginFailure::Fuel);
        // With fuel to spare, the wall-clock deadline (epochs) ends it.
        let deadline = Duration::from_millis(50);
        assert_eq!(
            stopped_with(PluginLimits {
                fuel: u64::MAX / 2,
                timeout: deadline,
                ..limits()
            }),
            PluginFailure::Timeout
        );
        // Without metering (the default), the deadline alone ends it.
        assert_eq!(
            stopped_with(PluginLimits {
                fuel: 0,
                timeout: deadline,
                ..limits()
            }),
            PluginFailure::Timeout
        );
    }

    #[test]
    fn a_component_of_another_world_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("empty.wasm");
        // The smallest valid component: no exports, so no `augment`.
        std::fs::write(&wasm, [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]).unwrap();
        let source = PluginSource {
            wasm_path: Some(wasm),
            cache_dir: None,
        };
        let err = PluginRuntime::new(&source, shipped_kb(), limits()).unwrap_err();
        assert!(matches!(err, Error::Plugin { .. }), "{err:?}");
    }
}
