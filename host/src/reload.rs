//! Loading the plugin and knowledge base, and hot-reloading them.
//!
//! A new kb.sqlite or plugin .wasm, noticed on SIGHUP or by polling the files'
//! modification times, is loaded exactly as at start-up: the KB verified
//! (schema version, content hash), the component compiled (or taken from the
//! cache) and instantiated, and one probe retrieval run through it. Only then
//! is it swapped in, atomically, for new requests; requests in flight finish
//! on the old one. A file that fails any step is rejected, logged and counted,
//! and the old pair keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::capabilities::kb::{KbReader, QueryLimits};
use crate::config::Config;
use crate::error::{Error, PluginFailure, Result};
use crate::runtime::{PluginLimits, PluginRuntime, PluginSource, RetrievalParams};
use crate::server::AppState;

/// A task every knowledge base must be able to answer without error: it
/// exercises the plugin's queries against the KB's schema.
const PROBE_TASK: &str =
    "Write a Python function that builds an SQL query from a user-supplied name";

/// Verifies the knowledge base, loads the plugin against it, and runs one
/// probe retrieval through the pair.
pub fn load_runtime(config: &Config) -> Result<Arc<PluginRuntime>> {
    let reader = KbReader::verified(
        &config.kb.path,
        QueryLimits {
            max_steps: config.kb.query_step_limit,
            max_rows: config.kb.query_row_limit,
        },
    )?;
    let info = reader.info();
    tracing::info!(
        kb = %config.kb.path.display(),
        schema = info.schema_version,
        cwes = info.cwes_in_scope,
        hash = %info.content_hash,
        "knowledge base verified"
    );
    let source = PluginSource {
        wasm_path: config.plugin.path.clone(),
        cache_dir: if config.plugin.cache {
            config
                .plugin
                .cache_dir
                .clone()
                .or_else(crate::runtime::default_cache_dir)
        } else {
            None
        },
    };
    let limits = PluginLimits {
        fuel: config.plugin.fuel,
        timeout: Duration::from_millis(config.plugin.timeout_ms),
        memory_bytes: config.plugin.memory_limit_bytes,
        max_instances: config.plugin.max_instances,
        full_mode_slots: config.full_mode_slots(),
    };
    let runtime = PluginRuntime::new(&source, Arc::new(reader), limits)?;
    let probe = crate::facets::extract(PROBE_TASK, &[]);
    // Fast mode: the probe must not call an upstream.
    let params = RetrievalParams::from_config(
        &config.retrieval,
        crate::config::RetrievalMode::Fast,
        config.retrieval.top_k,
        vec![],
    );
    match runtime.augment_blocking(&probe, &params) {
        Ok(_) => {}
        // Resource limits are request-time policy: a budget too tight for the
        // probe is worth a warning, not a refusal to serve.
        Err(Error::PluginRun {
            kind: PluginFailure::Fuel | PluginFailure::Timeout | PluginFailure::Memory,
            message,
        }) => {
            tracing::warn!(
                "the probe retrieval ran out of its budget; check the [plugin] limits: {message}"
            );
        }
        Err(error) => {
            return Err(Error::Plugin {
                what: "probe retrieval".into(),
                message: format!("the plugin cannot serve this knowledge base: {error}"),
            });
        }
    }
    Ok(Arc::new(runtime))
}

/// What identifies a version of a file on disk.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.kb.path.clone()];
    files.extend(config.plugin.path.clone());
    files
}

/// Reloads on SIGHUP and when a watched file changes, until the process ends.
pub async fn watch(state: Arc<AppState>) {
    let files = watched_files(&state.config);
    let mut seen: Vec<_> = files.iter().map(|f| fingerprint(f)).collect();
    let poll = Duration::from_millis(state.config.server.reload_poll_ms);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let polled = async {
            if poll.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(poll).await
            }
        };
        let reason = tokio::select! {
            () = signalled => "SIGHUP",
            () = polled => {
                let now: Vec<_> = files.iter().map(|f| fingerprint(f)).collect();
                if now == seen {
                    continue;
                }
                // A file still being written changes again; wait for it to settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                "file change"
            }
        };
        seen = files.iter().map(|f| fingerprint(f)).collect();
        reload(&state, reason).await;
    }
}

/// One reload attempt: load and check everything off the async threads, then
/// swap or reject.
pub async fn reload(state: &Arc<AppState>, reason: &str) {
    let config = state.config.clone();
    let loaded = tokio::task::spawn_blocking(move || load_runtime(&config)).await;
    match loaded {
        Ok(Ok(runtime)) => {
            let hash = runtime.kb().info().content_hash;
            state.swap_runtime(runtime);
            state.metrics.reload("ok");
            tracing::info!(reason, kb_hash = %hash, "reloaded the knowledge base and plugin");
        }
        Ok(Err(error)) => {
            state.metrics.reload("rejected");
            tracing::error!(
                reason,
                "reload rejected, still serving the previous knowledge base and plugin: {error}"
            );
        }
        Err(panic) => {
            state.metrics.reload("rejected");
            tracing::error!(reason, "reload failed: {panic}");
        }
    }
}
