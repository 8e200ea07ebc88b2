//! `rescue-soak`: the bounded soak test, e.g.
//! `cargo run --release -p rescue-soak -- --duration 600 --clients 32`.
//! Exits 0 when every check passed, 1 when one failed, 2 when the run could
//! not be carried out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rescue_soak::run::{self, Options};

/// Soak RESCUE Proxy on loopback: N clients for a fixed time through the real
/// binary to a mock upstream, mixing augmented, pass-through, streaming and
/// faulty requests; checks every request is answered exactly once and that
/// the proxy's RSS stays flat.
#[derive(Parser, Debug)]
#[command(name = "rescue-soak")]
struct Args {
    /// Length of the run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The proxy binary (default: target/release/rescue).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The knowledge base (default: the repository's kb.sqlite).
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Seed of the request mix, for a reproducible sequence per client.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 10)]
    sample_every: u64,
    /// Seconds of load before the RSS baseline is taken (default: a tenth
    /// of the run, at most 60).
    #[arg(long)]
    warmup: Option<u64>,
    /// Most RSS growth allowed from the baseline to the end, in MiB.
    #[arg(long, default_value_t = 32)]
    max_rss_growth_mib: u64,
    /// The proxy's server.max_body_bytes (oversize requests send twice this).
    #[arg(long, default_value_t = 65536)]
    max_body_bytes: usize,
    /// RESCUE_LOG for the proxy (its log goes to a file in the temp dir).
    #[arg(long, default_value = "warn")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = rescue_soak::repo_root();
    let options = Options {
        bin: args
            .bin
            .unwrap_or_else(|| root.join("target/release/rescue")),
        kb: args.kb.unwrap_or_else(|| root.join("kb.sqlite")),
        duration: Duration::from_secs(args.duration),
        clients: args.clients,
        seed: args.seed,
        sample_every: Duration::from_secs(args.sample_every.max(1)),
        warmup: Duration::from_secs(args.warmup.unwrap_or((args.duration / 10).min(60))),
        max_rss_growth_mib: args.max_rss_growth_mib,
        max_body_bytes: args.max_body_bytes,
        log_filter: args.log,
        cache_dir: root.join("target/soak-plugin-cache"),
    };
    match run::run(&options) {
        Ok(summary) => {
            print!("{}", run::render(&summary, &options));
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("rescue-soak: {error}");
            ExitCode::from(2)
        }
    }
}
