//! Full mode outside the proxy: `rescue retrieve --mode full` and
//! `rescue eval --mode full`.
//!
//! A proxied request brings the upstream, the model and the client's key
//! that full mode's extra call borrows; these commands take them from flags
//! and the environment instead. They also pace their calls rather than skip
//! them: in the proxy a call over the rate limit degrades that request to
//! fast mode, which is right for traffic but would make a measurement of
//! full mode silently measure some tasks in fast mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::HeaderMap;

use crate::config::{Config, FullModeConfig, UpstreamApi, UpstreamConfig};
use crate::error::{Error, Result};
use crate::runtime::{Completer, PluginRuntime, RequestFacets, Retrieval, RetrievalParams};
use crate::server::full_mode::{RateLimiter, UpstreamCompleter};
use crate::upstream::{Upstream, Upstreams};

/// Where full mode's calls go when no client request says.
pub struct OfflineFullMode {
    // Declared first so it is dropped last: the upstream's connection pool
    // lives on it.
    tokio: tokio::runtime::Runtime,
    upstream: Upstream,
    model: String,
    credentials: HeaderMap,
    settings: FullModeConfig,
    pacer: RateLimiter,
    /// The completer's own limiter: the pacer has already waited.
    unlimited: Arc<RateLimiter>,
    outcomes: Mutex<BTreeMap<&'static str, usize>>,
}

impl OfflineFullMode {
    /// `base_url` replaces the first OpenAI-compatible upstream configured;
    /// `model` overrides `retrieval.full.model`; the key, if the variable
    /// named `api_key_env` is set, goes out as a bearer token.
    pub fn new(
        config: &Config,
        base_url: Option<&str>,
        model: Option<String>,
        api_key_env: &str,
    ) -> Result<Self> {
        let mut upstreams = config.effective_upstreams();
        if let Some(base_url) = base_url {
            override_upstream(&mut upstreams, UpstreamApi::Openai, base_url);
        }
        let model = model
            .or_else(|| config.retrieval.full.model.clone())
            .ok_or_else(|| Error::BadRequest {
                message: "full mode needs a model: --model or retrieval.full.model".into(),
            })?;
        let mut credentials = HeaderMap::new();
        if let Ok(key) = std::env::var(api_key_env) {
            let value =
                http::HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                    Error::BadRequest {
                        message: format!("{api_key_env} does not hold a valid key"),
                    }
                })?;
            credentials.insert(http::header::AUTHORIZATION, value);
        }
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                path: PathBuf::from("<tokio runtime>"),
                source,
            })?;
        let upstream = Upstreams::new(&upstreams)?
            .select(UpstreamApi::Openai, Some(&model))
            .cloned()
            .ok_or_else(|| Error::NoUpstream {
                api: UpstreamApi::Openai,
                model: Some(model.clone()),
            })?;
        let settings = config.retrieval.full.clone();
        Ok(Self {
            tokio,
            upstream,
            model,
            credentials,
            pacer: RateLimiter::new(settings.max_calls_per_second, settings.burst),
            unlimited: Arc::new(RateLimiter::new(1e9, u32::MAX)),
            settings,
            outcomes: Mutex::new(BTreeMap::new()),
        })
    }

    /// One plugin run in full mode, after waiting for the rate limit.
    pub fn retrieve(
        &self,
        runtime: &PluginRuntime,
        facets: &RequestFacets,
        params: &RetrievalParams,
    ) -> Result<Retrieval> {
        self.pacer.acquire_blocking();
        let _entered = self.tokio.enter();
        let completer = Arc::new(UpstreamCompleter::new(
            &self.upstream,
            Some(&self.model),
            &self.credentials,
            &self.settings,
            Arc::clone(&self.unlimited),
        ));
        let result = runtime.retrieve_blocking(
            facets,
            params,
            Some(Arc::clone(&completer) as Arc<dyn Completer>),
        );
        if let Some(outcome) = completer.outcome() {
            tracing::debug!(outcome = outcome.as_str(), "full-mode call");
            *self
                .outcomes
                .lock()
                .expect("outcome counts lock")
                .entry(outcome.as_str())
                .or_default() += 1;
        }
        result
    }

    /// How the calls so far ended ("ok", "timeout", "failed"), with counts.
    pub fn outcomes(&self) -> BTreeMap<&'static str, usize> {
        self.outcomes.lock().expect("outcome counts lock").clone()
    }
}

/// A `--upstream`-style flag: replaces the base URL of the first upstream
/// speaking `api`, or adds one.
pub fn override_upstream(upstreams: &mut Vec<UpstreamConfig>, api: UpstreamApi, base_url: &str) {
    match upstreams.iter_mut().find(|u| u.api == api) {
        Some(upstream) => upstream.base_url = base_url.to_string(),
        None => {
            let name = match api {
                UpstreamApi::Openai => "openai",
                UpstreamApi::Anthropic => "anthropic",
            };
            upstreams.push(UpstreamConfig::new(name, api, base_url));
        }
    }
}
