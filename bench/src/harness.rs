//! One harness run: mock upstream up, plugin timed in process, the real proxy
//! started in front of the mock, then every scenario at every concurrency
//! level, first directly against the mock, then through the proxy, so each
//! "added" figure compares two measurements of the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::inproc;
use crate::load::{self, Bounds, RunResult};
use crate::mock::{MockConfig, MockUpstream};
use crate::procfs;
use crate::proxy::{Proxy, ProxyCommand};
use crate::report::{Machine, Measurement, Report, RunSettings, Side, check_targets};
use crate::scenario::{self, Scenario};
use crate::stats::Summary;

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub max_requests: u64,
    pub concurrency: Vec<usize>,
    pub mock: MockConfig,
    pub proxy_bin: PathBuf,
    pub kb: PathBuf,
    pub proxy_log: Option<String>,
    pub proxy_config: Option<PathBuf>,
    /// Scenario names to run; empty runs all.
    pub scenarios: Vec<String>,
    pub in_process_iterations: usize,
}

/// Where the proxy answers and how to read its resource use.
struct Target {
    addr: std::net::SocketAddr,
    name: &'static str,
}

/// Runs everything and returns the report; progress goes to stderr.
pub fn run(options: &Options) -> Result<Report> {
    let scenarios: Vec<Scenario> = scenario::all()
        .into_iter()
        .filter(|s| options.scenarios.is_empty() || options.scenarios.iter().any(|n| n == s.name))
        .collect();
    if scenarios.is_empty() {
        return Err(Error::Argument {
            arg: "--scenarios".into(),
            message: format!(
                "none of {:?} is a scenario; known: {}",
                options.scenarios,
                scenario::all()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut machine = Machine::detect();

    eprintln!(
        "timing the plugin in process ({} runs each)...",
        options.in_process_iterations
    );
    let in_process = inproc::measure(&options.kb, options.in_process_iterations)?;

    let mock = MockUpstream::start(options.mock)?;
    let log_dir = tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))?;
    let proxy = Proxy::start(
        &ProxyCommand {
            bin: options.proxy_bin.clone(),
            kb: options.kb.clone(),
            upstream: mock.base_url(),
            log_filter: options.proxy_log.clone(),
            config: options.proxy_config.clone(),
        },
        log_dir.path(),
    )?;
    eprintln!(
        "proxy pid {} on {}, mock on {}",
        proxy.pid(),
        proxy.addr,
        mock.addr
    );

    // The load generator gets one thread of its own, like the mock: on a
    // 2-core machine the proxy then competes with exactly two busy threads.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("load generator runtime"))?;

    // One request of each kind first, so a broken set-up fails in a second
    // rather than after minutes of errors.
    for s in &scenarios {
        let once = Bounds {
            duration: Duration::from_secs(5),
            max_requests: 1,
        };
        let result = client.block_on(load::run(proxy.addr, Arc::new(s.spec.clone()), 1, once));
        if result.ok != 1 {
            return Err(Error::AllFailed {
                scenario: s.name.into(),
                target: "proxy".into(),
                errors: result.errors,
                last: result.last_error.unwrap_or_default(),
            });
        }
    }

    let proxy_start = procfs::sample(proxy.pid())?;
    let mut measurements = Vec::new();
    for s in &scenarios {
        for &concurrency in &options.concurrency {
            let direct = Target {
                addr: mock.addr,
                name: "direct",
            };
            let proxied = Target {
                addr: proxy.addr,
                name: "proxied",
            };
            let d = measure(&client, options, s, concurrency, &direct, None, || {
                procfs::thread_cpu(std::process::id(), mock.tid).map(|c| c.as_secs_f64() * 1e6)
            })?;
            let p = measure(
                &client,
                options,
                s,
                concurrency,
                &proxied,
                Some(proxy.addr),
                || procfs::sample(proxy.pid()).map(|p| p.cpu_ms() * 1000.0),
            )?;
            let added = match (&p.latency, &d.latency) {
                (Some(p), Some(d)) => Some(p.minus(d)),
                _ => None,
            };
            let added_first_byte = match (&p.first_byte, &d.first_byte) {
                (Some(p), Some(d)) if s.streaming => Some(p.minus(d)),
                _ => None,
            };
            eprintln!(
                "{:<20} c={:<3} direct {:>7.0} req/s p99 {:>8.3} ms | proxied {:>7.0} req/s p99 {:>8.3} ms | augmented {}/{}",
                s.name,
                concurrency,
                d.requests_per_second,
                d.latency.map_or(0.0, |l| l.p99_us / 1000.0),
                p.requests_per_second,
                p.latency.map_or(0.0, |l| l.p99_us / 1000.0),
                p.augmented,
                p.ok
            );
            measurements.push(Measurement {
                scenario: s.name.to_string(),
                concurrency,
                direct: d,
                proxied: p,
                added,
                added_first_byte,
                expect_augmented: s.augmented,
            });
        }
    }
    let proxy_end = procfs::sample(proxy.pid())?;
    machine.load_at_end = crate::report::load_average();
    let lowest = options.concurrency.iter().copied().min().unwrap_or(1);
    let targets = check_targets(&measurements, &in_process, &proxy_end, lowest);
    drop(proxy);
    drop(mock);

    Ok(Report {
        machine,
        settings: RunSettings {
            source: source_version(),
            duration_s: options.duration.as_secs_f64(),
            warmup_s: options.warmup.as_secs_f64(),
            max_requests: options.max_requests,
            concurrency: options.concurrency.clone(),
            mock_delay_ms: options.mock.delay.as_secs_f64() * 1000.0,
            stream_chunks: options.mock.stream_chunks,
            stream_gap_ms: options.mock.stream_gap.as_secs_f64() * 1000.0,
            proxy_bin: options.proxy_bin.display().to_string(),
            kb: options.kb.display().to_string(),
            proxy_log: options
                .proxy_log
                .clone()
                .unwrap_or_else(|| "info (default)".into()),
            proxy_config: options
                .proxy_config
                .as_ref()
                .map_or_else(|| "defaults".into(), |p| p.display().to_string()),
        },
        proxy_start,
        proxy_end,
        in_process,
        measurements,
        targets,
    })
}

/// Warm-up, then one measured run; `cpu_us` reads the CPU time (in
/// microseconds) of whatever serves `target`; `metrics`, the proxy whose
/// plugin time to read around the run.
fn measure(
    client: &tokio::runtime::Runtime,
    options: &Options,
    s: &Scenario,
    concurrency: usize,
    target: &Target,
    metrics: Option<std::net::SocketAddr>,
    cpu_us: impl Fn() -> Result<f64>,
) -> Result<Side> {
    let spec = Arc::new(s.spec.clone());
    if !options.warmup.is_zero() {
        client.block_on(load::run(
            target.addr,
            Arc::clone(&spec),
            concurrency,
            Bounds {
                duration: options.warmup,
                max_requests: options.max_requests,
            },
        ));
    }
    let plugin_before = metrics.map(crate::proxy::plugin_time).transpose()?;
    let cpu_before = cpu_us()?;
    let mut result: RunResult = client.block_on(load::run(
        target.addr,
        spec,
        concurrency,
        Bounds {
            duration: options.duration,
            max_requests: options.max_requests,
        },
    ));
    let cpu_after = cpu_us()?;
    let plugin_after = metrics.map(crate::proxy::plugin_time).transpose()?;
    let plugin_us_mean = match (plugin_before, plugin_after) {
        (Some((sum0, n0)), Some((sum1, n1))) if n1 > n0 => {
            Some((sum1 - sum0) / (n1 - n0) as f64 * 1e6)
        }
        _ => None,
    };
    if result.ok == 0 {
        return Err(Error::AllFailed {
            scenario: s.name.into(),
            target: target.name.into(),
            errors: result.errors,
            last: result.last_error.unwrap_or_default(),
        });
    }
    Ok(Side {
        ok: result.ok,
        errors: result.errors,
        last_error: result.last_error.clone(),
        augmented: result.augmented,
        requests_per_second: result.requests_per_second(),
        latency: Summary::of_nanos(&mut result.latencies_ns),
        first_byte: if s.streaming {
            Summary::of_nanos(&mut result.first_byte_ns)
        } else {
            None
        },
        cpu_us_per_request: (cpu_after - cpu_before) / result.ok as f64,
        plugin_us_mean,
    })
}

/// Which tree was measured; "unknown" outside a git checkout.
fn source_version() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(crate::repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

/// `--concurrency 1,8,32`.
pub fn parse_levels(text: &str) -> Result<Vec<usize>> {
    let levels: Vec<usize> = text
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Argument {
            arg: "--concurrency".into(),
            message: format!("{text:?}: {e}"),
        })?;
    if levels.is_empty() || levels.contains(&0) || levels.iter().any(|&c| c > 1024) {
        return Err(Error::Argument {
            arg: "--concurrency".into(),
            message: format!("{text:?}: levels must be 1..=1024"),
        });
    }
    Ok(levels)
}

/// `10s`, `500ms`, `2m`, `250us`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Argument {
        arg: "duration".into(),
        message: format!("{text:?} is not a duration like 10s, 500ms or 2m"),
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || !(0.0..=3600.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_levels() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        for bad in ["", "ten", "5h", "-1s", "99999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_levels("1,8,32").unwrap(), [1, 8, 32]);
        for bad in ["", "0", "1,x", "5000"] {
            assert!(parse_levels(bad).is_err(), "{bad}");
        }
    }
}
