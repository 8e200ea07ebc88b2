//! The `rescue` command line: `serve`, `kb build/stats/verify`, `retrieve`, `eval`, `hash-key`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::capabilities::kb::{KbReader, QueryLimits};
use crate::config::{Config, LogFormat, RetrievalMode, UpstreamApi};
use crate::error::{Error, Result};
use crate::offline::{OfflineFullMode, override_upstream};
use crate::runtime::RetrievalParams;
use crate::server::{AppState, serve};
use crate::upstream::Upstreams;

#[derive(Debug, Parser)]
#[command(
    name = "rescue",
    version,
    about = "RESCUE Proxy: secure-code-generation gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Build or check the knowledge base.
    #[command(subcommand)]
    Kb(KbCommand),
    /// Run retrieval on prompts without a server (same plugin code path as the
    /// proxy) and print one JSON line per prompt.
    Retrieve(RetrieveArgs),
    /// Print the SHA-256 that policy rules use to name an API key (`key_sha256`).
    /// Reads the key from standard input, so it stays out of shell history.
    HashKey,
    /// Measure retrieval on labelled JSON-lines task sets ("prompt", "lang",
    /// "cwe": gold ids, empty for tasks that must not be augmented): Recall@1/5/10
    /// and MRR (strict and lenient), and the augmentation rate. Prints a table.
    Eval(EvalArgs),
}

/// Settings shared by every command that loads the plugin and knowledge base.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// TOML configuration file (unknown keys are errors).
    #[arg(long, short, env = "RESCUE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Knowledge base file (overrides kb.path).
    #[arg(long, env = "RESCUE_KB")]
    pub kb: Option<PathBuf>,
    /// Plugin component to load instead of the built-in one (overrides plugin.path).
    #[arg(long, env = "RESCUE_PLUGIN")]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Listen address (overrides server.listen), e.g. 0.0.0.0:8080 or 127.0.0.1:0.
    #[arg(long, env = "RESCUE_LISTEN")]
    pub listen: Option<String>,
    /// Base URL of the OpenAI-compatible upstream (replaces the first one
    /// configured), e.g. https://api.openai.com/v1.
    #[arg(long, env = "RESCUE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Base URL of the Anthropic upstream (replaces the first one configured),
    /// e.g. https://api.anthropic.com/v1.
    #[arg(long, env = "RESCUE_ANTHROPIC_UPSTREAM")]
    pub anthropic_upstream: Option<String>,
}

// Parsed once per process: the size of the `build` variant's paths costs
// nothing worth boxing them for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Build kb.sqlite from the raw sources (offline unless --llm-base-url is given).
    Build {
        /// Folder with the raw sources (cwe/, safecoder/, sven/, codeshield-rules/).
        #[arg(long, default_value = "../shared/data/kb-sources")]
        sources: PathBuf,
        /// Folder with the static embedding model copied into the KB.
        #[arg(long, default_value = crate::kb::DEFAULT_EMBEDDINGS)]
        embeddings: PathBuf,
        /// Developer-phrased task scenarios per CWE (JSON lines: cwe, lang, task).
        #[arg(long, default_value = crate::kb::DEFAULT_SCENARIOS)]
        scenarios: PathBuf,
        /// Ordinary coding requests (JSON lines: lang, task), the scenario facet's counterweight.
        #[arg(long, default_value = crate::kb::DEFAULT_ORDINARY)]
        ordinary: PathBuf,
        /// Where to write the knowledge base.
        #[arg(long, default_value = "kb.sqlite")]
        out: PathBuf,
        /// Summarize guidelines and causes with the LLM behind this
        /// OpenAI-compatible base URL (e.g. https://api.openai.com/v1).
        #[arg(long, requires = "llm_model")]
        llm_base_url: Option<String>,
        /// The model to summarize with (e.g. gpt-4o-mini).
        #[arg(long, requires = "llm_base_url")]
        llm_model: Option<String>,
        /// Environment variable holding the LLM API key (not needed by local servers).
        #[arg(long, default_value = "OPENAI_API_KEY")]
        llm_api_key_env: String,
        /// Directory of cached LLM answers (default: ~/.cache/rescue-proxy/kb-llm).
        #[arg(long)]
        llm_cache: Option<PathBuf>,
        /// Seconds to wait for one LLM answer.
        #[arg(long, default_value_t = 300)]
        llm_timeout_secs: u64,
        /// Do not draw progress bars (they are only drawn on a terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// Also cover every weakness of the OWASP Top Ten 2021 (210 in scope
        /// instead of 83): reaches more weaknesses, ranks the common ones
        /// less well and doubles the scenario facet's work (EVAL.md).
        #[arg(long)]
        owasp_top10: bool,
    },
    /// Check a knowledge base's schema version and content hash.
    Verify {
        #[arg(default_value = "kb.sqlite")]
        path: PathBuf,
    },
    /// Print what a knowledge base holds: counts per level, language and CWE.
    Stats {
        #[arg(default_value = "kb.sqlite")]
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Task files, e.g. ../shared/data/eval-dev/*.jsonl.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Tasks retrieved at once (worth raising in full mode, where each task
    /// waits for the upstream).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    #[command(flatten)]
    pub full_mode: FullModeArgs,
}

#[derive(Debug, Args)]
pub struct RetrieveArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A single prompt; without it, JSON lines with "prompt" (and optional "lang")
    /// are read from --input or standard input.
    pub prompt: Option<String>,
    /// JSONL file of prompts.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub full_mode: FullModeArgs,
}

/// Retrieval mode and, for full mode, where its extra call goes.
#[derive(Debug, Args)]
pub struct FullModeArgs {
    /// Retrieval mode (`retrieve` defaults to `retrieval.mode` of the
    /// configuration, `eval` to fast). Full mode calls the configured
    /// OpenAI-compatible upstream once per prompt.
    #[arg(long, value_parser = ["fast", "full"])]
    pub mode: Option<String>,
    /// Full mode: base URL of the OpenAI-compatible upstream (replaces the
    /// first one configured).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Full mode: the model asked (default: `retrieval.full.model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Full mode: environment variable holding the upstream's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
}

impl FullModeArgs {
    /// The mode asked for, `default` when the flag is absent.
    fn mode(&self, default: RetrievalMode) -> RetrievalMode {
        match self.mode.as_deref() {
            Some("full") => RetrievalMode::Full,
            Some(_) => RetrievalMode::Fast,
            None => default,
        }
    }

    /// Full mode's way to the upstream, if `mode` is full.
    fn client(&self, config: &Config, mode: RetrievalMode) -> Result<Option<OfflineFullMode>> {
        match mode {
            RetrievalMode::Fast => Ok(None),
            RetrievalMode::Full => OfflineFullMode::new(
                config,
                self.upstream.as_deref(),
                self.model.clone(),
                &self.api_key_env,
            )
            .map(Some),
        }
    }
}

/// Runs the command line; the process exit code follows the result.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Kb(KbCommand::Build {
            sources,
            embeddings,
            scenarios,
            ordinary,
            out,
            llm_base_url,
            llm_model,
            llm_api_key_env,
            llm_cache,
            llm_timeout_secs,
            no_progress,
            owasp_top10,
        }) => {
            init_logging(LogFormat::Text);
            let summarizer = match (llm_base_url, llm_model) {
                (Some(base_url), Some(model)) => {
                    crate::kb::SummarizerChoice::Llm(crate::kb::LlmConfig {
                        base_url,
                        model,
                        api_key_env: llm_api_key_env,
                        cache_dir: llm_cache
                            .unwrap_or_else(crate::kb::LlmConfig::default_cache_dir),
                        timeout: std::time::Duration::from_secs(llm_timeout_secs),
                        retry_delay: std::time::Duration::from_secs(2),
                    })
                }
                _ => crate::kb::SummarizerChoice::Offline,
            };
            let report = crate::kb::build(&crate::kb::BuildOptions {
                sources,
                out: out.clone(),
                summarizer,
                progress: !no_progress,
                embeddings,
                scenarios,
                ordinary,
                owasp_top10,
            })?;
            println!(
                "built {}: {} CWEs ({} in scope), {} examples ({} sliced pairs, {:.1} -> {:.1} lines), \
                 backend {} ({} summarizer calls, {} LLM requests, {} cached), content hash {}",
                out.display(),
                report.cwes_total,
                report.cwes_in_scope,
                report.examples,
                report.pair_examples,
                report.lines_before_avg,
                report.lines_after_avg,
                report.backend,
                report.summarizer_calls,
                report.llm_requests,
                report.llm_cache_hits,
                report.content_hash
            );
            Ok(())
        }
        Command::Kb(KbCommand::Stats { path }) => {
            open_verified(&path)?;
            let stats = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|conn| crate::kb::stats(&conn))
            .map_err(|source| Error::Sqlite {
                path: path.clone(),
                source,
            })?;
            // A long table is often piped into `head`: a closed pipe ends
            // the output, it is not an error.
            match std::io::stdout()
                .lock()
                .write_all(stats.to_string().as_bytes())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
                    path: PathBuf::from("<stdout>"),
                    source: e,
                }),
                _ => Ok(()),
            }
        }
        Command::Kb(KbCommand::Verify { path }) => {
            let info = open_verified(&path)?;
            println!(
                "{}: schema {}, {} CWEs in scope, backend {}, content hash {} (verified)",
                path.display(),
                info.schema_version,
                info.cwes_in_scope,
                info.backend,
                info.content_hash
            );
            Ok(())
        }
        Command::Retrieve(args) => run_retrieve(args),
        Command::Eval(args) => {
            init_logging(LogFormat::Text);
            let mut config = load_config(&args.common)?;
            // Each job holds a plugin instance for its whole run (in full
            // mode, while waiting for the upstream too).
            config.plugin.max_instances = config.plugin.max_instances.max(u32::from(args.jobs));
            let runtime = crate::reload::load_runtime(&config)?;
            let full_mode = args
                .full_mode
                .client(&config, args.full_mode.mode(RetrievalMode::Fast))?;
            let rows = crate::eval::run(
                &runtime,
                &config,
                &args.files,
                full_mode.as_ref(),
                usize::from(args.jobs),
            )?;
            print!("{}", crate::eval::table(&rows));
            if let Some(full_mode) = &full_mode {
                let outcomes: Vec<String> = full_mode
                    .outcomes()
                    .iter()
                    .map(|(outcome, n)| format!("{n} {outcome}"))
                    .collect();
                println!("\nfull-mode calls: {}", outcomes.join(", "));
            }
            if let Some(path) = args.json {
                let json: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "set": m.name.trim(), "n": m.n, "positives": m.positives,
                            "r1": m.r1, "r5": m.r5, "r10": m.r10, "mrr": m.mrr,
                            "len_r1": m.len_r1, "len_r5": m.len_r5, "len_r10": m.len_r10, "len_mrr": m.len_mrr,
                            "augmented": m.augmented, "augmented_and_hit": m.augmented_and_hit,
                            "injected_precision": m.injected_precision,
                        })
                    })
                    .collect();
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&json).expect("JSON serialises"),
                )
                .map_err(|source| Error::Io { path, source })?;
            }
            Ok(())
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .map_err(|source| Error::Io {
                    path: PathBuf::from("<stdin>"),
                    source,
                })?;
            println!("{}", crate::policy::key_sha256(&key));
            Ok(())
        }
    }
}

fn load_config(common: &CommonArgs) -> Result<Config> {
    let mut config = match &common.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(kb) = &common.kb {
        config.kb.path = kb.clone();
    }
    if let Some(plugin) = &common.plugin {
        config.plugin.path = Some(plugin.clone());
    }
    Ok(config)
}

fn open_verified(path: &Path) -> Result<crate::kb::KbInfo> {
    Ok(KbReader::verified(
        path,
        QueryLimits {
            max_steps: 1,
            max_rows: 1,
        },
    )?
    .info())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESCUE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn run_serve(args: ServeArgs) -> Result<()> {
    let mut config = load_config(&args.common)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.upstreams = config.effective_upstreams();
    for (flag, api) in [
        (args.upstream, UpstreamApi::Openai),
        (args.anthropic_upstream, UpstreamApi::Anthropic),
    ] {
        if let Some(base_url) = flag {
            override_upstream(&mut config.upstreams, api, &base_url);
        }
    }
    config.validate(
        args.common
            .config
            .as_deref()
            .unwrap_or(Path::new("<flags>")),
    )?;
    init_logging(config.server.log_format);

    let upstreams = Upstreams::new(&config.upstreams)?;
    let runtime = crate::reload::load_runtime(&config)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(config.worker_threads())
        .thread_name("rescue-worker")
        .build()
        .map_err(|source| Error::Io {
            path: PathBuf::from("<tokio runtime>"),
            source,
        })?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .map_err(|source| Error::Bind { addr: config.server.listen.clone(), source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr: config.server.listen.clone(), source })?;
        for upstream in upstreams.iter() {
            tracing::info!(name = %upstream.name, api = ?upstream.api, base_url = upstream.base_url(), "upstream");
        }
        tracing::info!(policy = ?config.augment.policy, "listening on http://{local}");
        // Machine-readable for scripts and tests that start on port 0.
        println!("listening on {local}");
        let _ = std::io::stdout().flush();
        let state = Arc::new(AppState::new(config, runtime, upstreams));
        tokio::spawn(crate::reload::watch(Arc::clone(&state)));
        serve(listener, state, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// One CWE of `rescue retrieve`'s output, with each facet's score and rank.
fn hit_json(hit: &crate::runtime::CweHit) -> serde_json::Value {
    let facet = |f: &Option<crate::runtime::FacetScore>| {
        f.map(|f| serde_json::json!({"score": f.score, "rank": f.rank}))
    };
    serde_json::json!({
        "id": hit.id,
        "name": hit.name,
        "score": hit.score,
        "lexical": facet(&hit.lexical),
        "semantic": facet(&hit.semantic),
        "scenario": facet(&hit.scenario),
        "classifier": facet(&hit.classifier),
        "named": facet(&hit.named),
        "via": hit.via,
    })
}

fn run_retrieve(args: RetrieveArgs) -> Result<()> {
    init_logging(LogFormat::Text);
    let config = load_config(&args.common)?;
    let runtime = crate::reload::load_runtime(&config)?;
    let mode = args.full_mode.mode(config.retrieval.mode);
    let params = RetrievalParams {
        explain: true,
        ..RetrievalParams::from_config(&config.retrieval, mode, config.retrieval.top_k, vec![])
    };
    let full_mode = args.full_mode.client(&config, mode)?;
    let prompts: Vec<(serde_json::Value, String, Option<String>)> =
        match (&args.prompt, &args.input) {
            (Some(prompt), _) => vec![(serde_json::Value::Null, prompt.clone(), None)],
            (None, input) => {
                let reader: Box<dyn BufRead> = match input {
                    Some(path) => Box::new(std::io::BufReader::new(
                        std::fs::File::open(path).map_err(|source| Error::Io {
                            path: path.clone(),
                            source,
                        })?,
                    )),
                    None => Box::new(std::io::stdin().lock()),
                };
                let mut prompts = Vec::new();
                for (n, line) in reader.lines().enumerate() {
                    let line = line.map_err(|source| Error::Io {
                        path: PathBuf::from("<input>"),
                        source,
                    })?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let row: serde_json::Value =
                        serde_json::from_str(&line).map_err(|e| Error::BadRequest {
                            message: format!("input line {}: {e}", n + 1),
                        })?;
                    let prompt = row.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| {
                        Error::BadRequest {
                            message: format!("input line {}: no \"prompt\" string", n + 1),
                        }
                    })?;
                    let lang = row.get("lang").and_then(|l| l.as_str()).map(str::to_string);
                    prompts.push((
                        row.get("id").cloned().unwrap_or(serde_json::Value::Null),
                        prompt.to_string(),
                        lang,
                    ));
                }
                prompts
            }
        };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (id, prompt, lang) in prompts {
        let mut facets = crate::facets::extract(&prompt, &[]);
        if let Some(lang) = lang {
            facets.language = Some(lang);
        }
        let gated = crate::policy::should_augment(config.augment.policy, &facets);
        let result = match &full_mode {
            None => runtime.augment_blocking(&facets, &params),
            Some(full_mode) => full_mode.retrieve(&runtime, &facets, &params),
        };
        let line = match result {
            Ok(retrieval) => {
                let candidates: Vec<serde_json::Value> =
                    retrieval.candidates.iter().map(hit_json).collect();
                match retrieval.augmentation.filter(|_| gated) {
                    Some(a) => serde_json::json!({
                        "id": id, "augmented": true,
                        "cwes": a.cwes.iter().map(hit_json).collect::<Vec<_>>(),
                        "example": a.example_id, "text": a.text,
                        "candidates": candidates,
                    }),
                    None => serde_json::json!({
                        "id": id, "augmented": false, "gated": gated, "cwes": [],
                        "candidates": candidates,
                    }),
                }
            }
            Err(e) => serde_json::json!({"id": id, "augmented": false, "error": e.to_string()}),
        };
        writeln!(out, "{line}").map_err(|source| Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        })?;
    }
    Ok(())
}
