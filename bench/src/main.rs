//! `rescue-bench`: one run of the benchmark harness. Prints Markdown tables to
//! stdout (progress to stderr) and, with `--json`, writes the full results.
//!
//! ```sh
//! cargo build --release -p rescue-host -p rescue-bench
//! target/release/rescue-bench --duration 10s --concurrency 1,8,32 --json bench.json
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rescue_bench::harness::{self, Options};
use rescue_bench::mock::MockConfig;
use rescue_bench::{Error, Result, repo_root};

#[derive(Debug, Parser)]
#[command(
    name = "rescue-bench",
    about = "Measure RESCUE Proxy against a loopback mock upstream: added latency, throughput, RSS, CPU"
)]
struct Cli {
    /// Measured time per scenario, concurrency level and path (direct/proxied).
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Unrecorded load before each measurement (connections, caches, SQLite).
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// Closed-loop concurrency levels (connections), comma-separated.
    #[arg(long, default_value = "1,8,32")]
    concurrency: String,
    /// Upper bound on requests per measurement, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// The mock's time from request to response headers.
    #[arg(long, default_value = "0ms")]
    delay: String,
    /// SSE chunks in a streamed answer.
    #[arg(long, default_value_t = 8)]
    stream_chunks: usize,
    /// Gap between SSE chunks.
    #[arg(long, default_value = "1ms")]
    stream_gap: String,
    /// The proxy binary [default: target/release/rescue].
    #[arg(long)]
    rescue_bin: Option<PathBuf>,
    /// Knowledge base [default: kb.sqlite at the repository root].
    #[arg(long)]
    kb: Option<PathBuf>,
    /// RESCUE_LOG for the proxy (default: the proxy's own, `info`).
    #[arg(long)]
    proxy_log: Option<String>,
    /// A TOML configuration for the proxy (`rescue serve --config`), e.g. to
    /// try other `plugin.max_instances`; the harness still sets listen,
    /// upstream and KB.
    #[arg(long)]
    proxy_config: Option<PathBuf>,
    /// Only these scenarios (comma-separated): passthrough-chat,
    /// passthrough-models, augmented-chat, augmented-broad, passthrough-stream,
    /// augmented-stream.
    #[arg(long, default_value = "")]
    scenarios: String,
    /// Runs of each in-process plugin timing.
    #[arg(long, default_value_t = 2000)]
    in_process_iterations: usize,
    /// Write the full results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn options(cli: &Cli) -> Result<Options> {
    let root = repo_root();
    Ok(Options {
        duration: harness::parse_duration(&cli.duration)?,
        warmup: harness::parse_duration(&cli.warmup)?,
        max_requests: cli.max_requests.max(1),
        concurrency: harness::parse_levels(&cli.concurrency)?,
        mock: MockConfig {
            delay: harness::parse_duration(&cli.delay)?,
            stream_chunks: cli.stream_chunks.clamp(1, 10_000),
            stream_gap: harness::parse_duration(&cli.stream_gap)?,
        },
        proxy_bin: cli
            .rescue_bin
            .clone()
            .unwrap_or_else(|| root.join("target/release/rescue")),
        kb: cli.kb.clone().unwrap_or_else(|| root.join("kb.sqlite")),
        proxy_log: cli.proxy_log.clone(),
        proxy_config: cli.proxy_config.clone(),
        scenarios: cli
            .scenarios
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        in_process_iterations: cli.in_process_iterations.clamp(1, 1_000_000),
    })
}

fn main_result() -> Result<()> {
    let cli = Cli::parse();
    let options = options(&cli)?;
    let report = harness::run(&options)?;
    println!("{}", report.markdown());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).map_err(Error::io(path))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match main_result() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rescue-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
