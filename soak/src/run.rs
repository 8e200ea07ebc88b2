//! One soak run: mock upstream, the real proxy, N clients for a fixed time,
//! RSS sampled throughout, then the checks and a summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::client::{self, ClientSettings, Tally};
use crate::error::Result;
use crate::mix::Kind;
use crate::mock::MockUpstream;
use crate::proxy::{Proxy, ProxyCommand};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub bin: PathBuf,
    pub kb: PathBuf,
    pub duration: Duration,
    pub clients: usize,
    pub seed: u64,
    /// RSS is sampled this often.
    pub sample_every: Duration,
    /// RSS after this much load is the baseline that growth is measured from
    /// (allocator pools, plugin instances and connection buffers fill first).
    pub warmup: Duration,
    /// Most RSS growth from the baseline to the end, in MiB.
    pub max_rss_growth_mib: u64,
    /// The proxy's `server.max_body_bytes`; oversize requests send twice that.
    pub max_body_bytes: usize,
    pub log_filter: String,
    pub cache_dir: PathBuf,
}

/// One RSS reading.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    pub at: Duration,
    pub rss_kib: u64,
}

/// Everything a run measured, and its verdict.
#[derive(Debug)]
pub struct Summary {
    pub elapsed: Duration,
    pub by_kind: BTreeMap<Kind, Tally>,
    pub total: Tally,
    pub duplicates_upstream: Vec<(String, u32)>,
    /// Bad-JSON or oversize requests the upstream received anyway.
    pub leaked_upstream: u64,
    /// Lost requests the upstream had received.
    pub lost_but_forwarded: u64,
    pub disconnects: u64,
    pub cancelled_streams: u64,
    pub rss: Vec<RssSample>,
    pub rss_baseline_kib: u64,
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
    /// Sum of `rescue_requests_total` at the end, if /metrics answered.
    pub proxy_counted: Option<u64>,
    pub healthy_at_end: bool,
    pub proxy_exited_early: Option<String>,
    pub clean_shutdown: Option<bool>,
    pub failures: Vec<String>,
    pub log_path: PathBuf,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the soak. Blocks; builds its own tokio runtime.
pub fn run(options: &Options) -> Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(crate::error::Error::io("tokio runtime"))?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &Options) -> Result<Summary> {
    let mock = MockUpstream::start().await?;
    // A directory per run, kept afterwards: runs may overlap (the short soak
    // in the test suite), and the log is the post-mortem of a failed one.
    let log_dir = tempfile::Builder::new()
        .prefix("rescue-soak-")
        .tempdir()
        .map_err(crate::error::Error::io(std::env::temp_dir()))?
        .keep();
    let command = ProxyCommand {
        bin: options.bin.clone(),
        kb: options.kb.clone(),
        upstream: mock.base_url(),
        config: format!("[server]\nmax_body_bytes = {}\n", options.max_body_bytes),
        log_filter: options.log_filter.clone(),
        cache_dir: options.cache_dir.clone(),
    };
    let mut proxy = tokio::task::block_in_place(|| Proxy::start(&command, &log_dir))?;
    let pid = proxy.pid();
    let started = Instant::now();
    let mut rss = vec![RssSample {
        at: Duration::ZERO,
        rss_kib: proxy.rss_kib()?,
    }];

    let settings = Arc::new(ClientSettings {
        proxy: proxy.addr,
        seed: options.seed,
        oversize_bytes: options.max_body_bytes * 2,
    });
    let deadline = started + options.duration;
    let clients: Vec<_> = (0..options.clients.max(1))
        .map(|c| tokio::spawn(client::run(Arc::clone(&settings), c, deadline)))
        .collect();

    // Sample RSS until the clients are done, and watch the process.
    let mut proxy_exited_early = None;
    while Instant::now() < deadline {
        let wait = options
            .sample_every
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        if let Some(status) = proxy.exited() {
            proxy_exited_early = Some(status.to_string());
            break;
        }
        if let Ok(kib) = crate::proxy::rss_kib(pid) {
            rss.push(RssSample {
                at: started.elapsed(),
                rss_kib: kib,
            });
        }
    }

    let mut by_kind: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut local_only = Vec::new();
    let mut lost_ids = Vec::new();
    for handle in clients {
        match handle.await {
            Ok(report) => {
                for (kind, tally) in report.by_kind {
                    by_kind.entry(kind).or_default().merge(&tally);
                }
                local_only.extend(report.local_only);
                lost_ids.extend(report.lost_ids);
            }
            Err(e) => {
                let t = by_kind.entry(Kind::AugmentedChat).or_default();
                t.event(&format!("client task failed: {e}"));
                t.unexpected += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    // Cancelled upstream streams are noticed at the mock's next send (every
    // 20 ms): give the last ones time to register.
    tokio::time::sleep(Duration::from_secs(2)).await;

    if let Ok(kib) = crate::proxy::rss_kib(pid) {
        rss.push(RssSample {
            at: started.elapsed(),
            rss_kib: kib,
        });
    }
    let healthy_at_end = get(proxy.addr, "/healthz")
        .await
        .is_some_and(|(s, _)| s == 200);
    let proxy_counted = get(proxy.addr, "/metrics")
        .await
        .map(|(_, body)| requests_total(&body));

    let stats = &mock.stats;
    let duplicates_upstream = stats.duplicates();
    let leaked_upstream = local_only
        .iter()
        .filter(|id| stats.times_seen(id) > 0)
        .count() as u64;
    let lost_but_forwarded = lost_ids
        .iter()
        .filter(|id| stats.times_seen(id) > 0)
        .count() as u64;
    let cancelled_streams = stats
        .cancelled_streams
        .load(std::sync::atomic::Ordering::Relaxed);
    let disconnects = by_kind
        .get(&Kind::ClientDisconnect)
        .map_or(0, |t| t.as_expected);

    let clean_shutdown = if proxy_exited_early.is_none() {
        let status = tokio::task::block_in_place(|| proxy.terminate(Duration::from_secs(35)));
        Some(status.is_some_and(|s| s.success()))
    } else {
        None
    };

    let mut total = Tally::default();
    for tally in by_kind.values() {
        total.merge(tally);
    }
    let baseline = rss
        .iter()
        .find(|s| s.at >= options.warmup)
        .or(rss.last())
        .map_or(0, |s| s.rss_kib);
    let end = rss.last().map_or(0, |s| s.rss_kib);
    let peak = rss.iter().map(|s| s.rss_kib).max().unwrap_or(0);

    let mut summary = Summary {
        elapsed,
        by_kind,
        total,
        duplicates_upstream,
        leaked_upstream,
        lost_but_forwarded,
        disconnects,
        cancelled_streams,
        rss,
        rss_baseline_kib: baseline,
        rss_end_kib: end,
        rss_peak_kib: peak,
        proxy_counted,
        healthy_at_end,
        proxy_exited_early,
        clean_shutdown,
        failures: Vec::new(),
        log_path: proxy.log_path.clone(),
    };
    summary.failures = judge(&summary, options);
    Ok(summary)
}

/// The run's failed checks (empty: passed).
pub fn judge(s: &Summary, options: &Options) -> Vec<String> {
    let mut failures = Vec::new();
    let t = &s.total;
    if t.sent == 0 {
        failures.push("no request was sent".into());
    }
    if t.lost > 0 {
        failures.push(format!("{} requests lost (no answer)", t.lost));
    }
    if t.misrouted > 0 {
        failures.push(format!(
            "{} answers carried another request's id",
            t.misrouted
        ));
    }
    if t.unexpected > 0 {
        failures.push(format!("{} answers not as expected", t.unexpected));
    }
    if !s.duplicates_upstream.is_empty() {
        failures.push(format!(
            "{} requests reached the upstream more than once (first: {:?})",
            s.duplicates_upstream.len(),
            s.duplicates_upstream[0]
        ));
    }
    if s.leaked_upstream > 0 {
        failures.push(format!(
            "{} bad-JSON/oversize requests reached the upstream",
            s.leaked_upstream
        ));
    }
    if s.cancelled_streams < s.disconnects {
        failures.push(format!(
            "{} clients left mid-stream but only {} upstream streams were cancelled",
            s.disconnects, s.cancelled_streams
        ));
    }
    if let Some(status) = &s.proxy_exited_early {
        failures.push(format!("the proxy exited during the run: {status}"));
    }
    if !s.healthy_at_end && s.proxy_exited_early.is_none() {
        failures.push("/healthz did not answer 200 after the run".into());
    }
    if s.clean_shutdown == Some(false) {
        failures.push("the proxy did not exit cleanly on SIGTERM within 35 s".into());
    }
    let growth_kib = s.rss_end_kib.saturating_sub(s.rss_baseline_kib);
    if growth_kib > options.max_rss_growth_mib * 1024 {
        failures.push(format!(
            "RSS grew by {} MiB after warm-up (limit {} MiB)",
            growth_kib / 1024,
            options.max_rss_growth_mib
        ));
    }
    failures
}

/// One GET to the proxy's own endpoints; `None` if it did not answer.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// Sum of every `rescue_requests_total` sample in a Prometheus text page.
pub fn requests_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("rescue_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The summary as text tables.
pub fn render(s: &Summary, options: &Options) -> String {
    let mut out = String::new();
    let secs = s.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "soak: {} clients, {:.0} s, seed {}; {} requests ({:.0}/s)",
        options.clients,
        secs,
        options.seed,
        s.total.sent,
        s.total.sent as f64 / secs.max(0.001)
    );
    let _ = writeln!(
        out,
        "\n| kind | sent | answered | as expected | failed open | shed | unexpected | lost | misrouted |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |out: &mut String, name: &str, t: &Tally| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.sent,
            t.answered(),
            t.as_expected,
            t.failed_open,
            t.shed,
            t.unexpected,
            t.lost,
            t.misrouted
        );
    };
    for (kind, tally) in &s.by_kind {
        row(&mut out, kind.name(), tally);
    }
    row(&mut out, "**total**", &s.total);

    let _ = writeln!(out, "\n| event | count |\n|---|---:|");
    for (event, count) in &s.total.events {
        let _ = writeln!(out, "| {event} | {count} |");
    }
    let _ = writeln!(
        out,
        "| requests received twice by the upstream | {} |",
        s.duplicates_upstream.len()
    );
    let _ = writeln!(
        out,
        "| bad-JSON/oversize requests that reached the upstream | {} |",
        s.leaked_upstream
    );
    let _ = writeln!(
        out,
        "| lost requests the upstream had received | {} |",
        s.lost_but_forwarded
    );
    let _ = writeln!(
        out,
        "| client disconnects / upstream streams cancelled | {} / {} |",
        s.disconnects, s.cancelled_streams
    );
    let _ = writeln!(
        out,
        "| requests counted by the proxy (rescue_requests_total) | {} |",
        s.proxy_counted.map_or("n/a".to_string(), |n| n.to_string())
    );

    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "\nproxy RSS (MiB), sampled every {} s:",
        options.sample_every.as_secs()
    );
    let samples: Vec<String> = s
        .rss
        .iter()
        .map(|r| format!("{:.0}s={:.1}", r.at.as_secs_f64(), mib(r.rss_kib)))
        .collect();
    let _ = writeln!(out, "  {}", samples.join(" "));
    let _ = writeln!(
        out,
        "  start {:.1}, after {} s warm-up {:.1}, peak {:.1}, end {:.1}; growth after warm-up {:+.1} (limit {})",
        mib(s.rss.first().map_or(0, |r| r.rss_kib)),
        options.warmup.as_secs(),
        mib(s.rss_baseline_kib),
        mib(s.rss_peak_kib),
        mib(s.rss_end_kib),
        mib(s.rss_end_kib) - mib(s.rss_baseline_kib),
        options.max_rss_growth_mib
    );
    let _ = writeln!(
        out,
        "healthz after the run: {}; SIGTERM exit: {}",
        if s.healthy_at_end { "200" } else { "FAILED" },
        match s.clean_shutdown {
            Some(true) => "clean",
            Some(false) => "NOT clean",
            None => "n/a",
        }
    );
    let _ = writeln!(out, "proxy log: {}", s.log_path.display());
    if s.passed() {
        let _ = writeln!(out, "\nPASS");
    } else {
        let _ = writeln!(out, "\nFAIL:");
        for f in &s.failures {
            let _ = writeln!(out, "  - {f}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_request_counters() {
        let page = "# TYPE rescue_requests_total counter\nrescue_requests_total{route=\"chat_completions\",status=\"200\"} 12\nrescue_requests_total{route=\"passthrough\",status=\"200\"} 3\nrescue_in_flight_requests 0\n";
        assert_eq!(requests_total(page), 15);
    }
}
