//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A small hand-rolled registry: a handful of counter families keyed by label
//! values, and fixed-bucket histograms, all behind one short-held mutex per
//! family. The hot path records a few numbers per request; a scrape renders
//! everything. No label ever holds request content or credentials: labels are
//! routes, status codes, CWE ids, failure kinds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms: 50 us to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A counter family: one value per combination of label values.
#[derive(Debug, Default)]
struct Counter {
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counter {
    fn add(&self, labels: &[&str], n: u64) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        *self
            .values
            .lock()
            .expect("metrics lock")
            .entry(key)
            .or_default() += n;
    }

    fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        self.values
            .lock()
            .expect("metrics lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

/// A histogram family with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    series: Mutex<BTreeMap<Vec<String>, HistogramSeries>>,
}

#[derive(Debug, Clone)]
struct HistogramSeries {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&self, labels: &[&str], value: Duration) {
        let seconds = value.as_secs_f64();
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let mut series = self.series.lock().expect("metrics lock");
        let entry = series.entry(key).or_insert_with(|| HistogramSeries {
            buckets: vec![0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        });
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            entry.buckets[i] += 1;
        }
        entry.count += 1;
        entry.sum += seconds;
    }
}

/// Every metric the proxy exports.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Counter,
    augmentation: Counter,
    cwes_injected: Counter,
    plugin_failures: Counter,
    failure_policy: Counter,
    reloads: Counter,
    full_mode_calls: Counter,
    rejected: Counter,
    stream_cuts: Counter,
    plugin_seconds: Histogram,
    upstream_seconds: Histogram,
    added_seconds: Histogram,
    in_flight: AtomicI64,
    kb_info: Mutex<Option<(String, u32)>>,
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(names: &[&str], values: &[String]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    pairs.join(",")
}

impl Metrics {
    /// One finished request: its route (`passthrough` for the rest) and status.
    pub fn request(&self, route: &str, status: u16) {
        self.requests.add(&[route, &status.to_string()], 1);
    }

    /// What augmentation did for a request on an augmentable route:
    /// `augmented`, `not_relevant` (retrieval found nothing above threshold),
    /// `skipped` (policy or opt-out), `failed_open`, `failed_closed`.
    pub fn augmentation(&self, route: &str, outcome: &str) {
        self.augmentation.add(&[route, outcome], 1);
    }

    pub fn cwe_injected(&self, cwe: &str) {
        self.cwes_injected.add(&[cwe], 1);
    }

    /// A plugin run that failed, by kind (`plugin-trap`, `plugin-fuel-exhausted`, ...),
    /// and what the failure policy did about it (`open` or `closed`).
    pub fn plugin_failure(&self, kind: &str, policy: &str) {
        self.plugin_failures.add(&[kind], 1);
        self.failure_policy.add(&[policy, kind], 1);
    }

    /// A full-mode call to the upstream: `ok`, `rate_limited`, `busy`, `timeout`,
    /// `failed` (the last three leave the request in fast mode).
    pub fn full_mode_call(&self, outcome: &str) {
        self.full_mode_calls.add(&[outcome], 1);
    }

    /// A request the HTTP layer refused before the proxy's handler saw it
    /// (hyper answers these itself, so they are not in the requests counter):
    /// `header_too_large` (431; 414 for a URI over 64 KiB), `malformed_request`
    /// (400).
    pub fn rejected(&self, reason: &str) {
        self.rejected.add(&[reason], 1);
    }

    /// A response stream that ended in an error after its status was sent
    /// (and counted): `idle` (the proxy cut an upstream that went silent),
    /// `upstream_error` (the upstream's stream broke: reset, truncated).
    pub fn stream_cut(&self, reason: &str) {
        self.stream_cuts.add(&[reason], 1);
    }

    /// A hot reload attempt: `ok` or `rejected`.
    pub fn reload(&self, result: &str) {
        self.reloads.add(&[result], 1);
    }

    pub fn plugin_time(&self, elapsed: Duration) {
        self.plugin_seconds.observe(&[], elapsed);
    }

    pub fn upstream_time(&self, api: &str, elapsed: Duration) {
        self.upstream_seconds.observe(&[api], elapsed);
    }

    /// The proxy's own share of a request's time to response headers.
    pub fn added_latency(&self, route: &str, elapsed: Duration) {
        self.added_seconds.observe(&[route], elapsed);
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn set_kb(&self, content_hash: &str, schema_version: u32) {
        *self.kb_info.lock().expect("metrics lock") =
            Some((content_hash.to_string(), schema_version));
    }

    /// For tests: the current value of the requests counter.
    pub fn requests_count(&self, route: &str, status: u16) -> u64 {
        self.requests.get(&[route, &status.to_string()])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &[&str], &Counter); 9] = [
            (
                "rescue_requests_total",
                "Requests answered, by route and status.",
                &["route", "status"],
                &self.requests,
            ),
            (
                "rescue_augmentation_total",
                "Outcome of augmentation on augmentable routes.",
                &["route", "outcome"],
                &self.augmentation,
            ),
            (
                "rescue_cwe_injected_total",
                "CWEs whose knowledge was injected.",
                &["cwe"],
                &self.cwes_injected,
            ),
            (
                "rescue_plugin_failures_total",
                "Plugin runs that failed, by kind.",
                &["kind"],
                &self.plugin_failures,
            ),
            (
                "rescue_failure_policy_total",
                "Plugin failures handled fail-open or fail-closed.",
                &["policy", "kind"],
                &self.failure_policy,
            ),
            (
                "rescue_reloads_total",
                "Hot reloads of the knowledge base and plugin.",
                &["result"],
                &self.reloads,
            ),
            (
                "rescue_full_mode_calls_total",
                "Full mode's calls to the upstream, by outcome (all but ok fall back to fast mode).",
                &["outcome"],
                &self.full_mode_calls,
            ),
            (
                "rescue_requests_rejected_total",
                "Requests the HTTP layer refused before routing (not in rescue_requests_total), by reason.",
                &["reason"],
                &self.rejected,
            ),
            (
                "rescue_upstream_stream_cuts_total",
                "Response streams that ended in an error after the status was sent, by reason.",
                &["reason"],
                &self.stream_cuts,
            ),
        ];
        for (name, help, names, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (values, n) in counter.values.lock().expect("metrics lock").iter() {
                let _ = writeln!(out, "{name}{{{}}} {n}", labels(names, values));
            }
        }
        let histograms: [(&str, &str, &[&str], &Histogram); 3] = [
            (
                "rescue_plugin_duration_seconds",
                "Time of one plugin run (Wasm and KB queries).",
                &[],
                &self.plugin_seconds,
            ),
            (
                "rescue_upstream_duration_seconds",
                "Time from sending upstream to its response headers.",
                &["api"],
                &self.upstream_seconds,
            ),
            (
                "rescue_added_latency_seconds",
                "The proxy's own time before the response headers: total minus upstream.",
                &["route"],
                &self.added_seconds,
            ),
        ];
        for (name, help, names, histogram) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (values, series) in histogram.series.lock().expect("metrics lock").iter() {
                let base = labels(names, values);
                let sep = if base.is_empty() { "" } else { "," };
                let mut cumulative = 0;
                for (bound, n) in LATENCY_BUCKETS.iter().zip(&series.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{base}{sep}le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{base}{sep}le=\"+Inf\"}} {}",
                    series.count
                );
                let braces = if base.is_empty() {
                    String::new()
                } else {
                    format!("{{{base}}}")
                };
                let _ = writeln!(out, "{name}_sum{braces} {}", series.sum);
                let _ = writeln!(out, "{name}_count{braces} {}", series.count);
            }
        }
        let _ = writeln!(
            out,
            "# HELP rescue_in_flight_requests Requests being handled.\n# TYPE rescue_in_flight_requests gauge\nrescue_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        if let Some((hash, schema)) = self.kb_info.lock().expect("metrics lock").as_ref() {
            let _ = writeln!(
                out,
                "# HELP rescue_kb_info The knowledge base being served.\n# TYPE rescue_kb_info gauge\nrescue_kb_info{{content_hash=\"{}\",schema_version=\"{schema}\"}} 1",
                escape(hash)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.request("chat_completions", 200);
        m.request("chat_completions", 200);
        m.cwe_injected("CWE-89");
        m.added_latency("chat_completions", Duration::from_micros(300));
        m.added_latency("chat_completions", Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("rescue_requests_total{route=\"chat_completions\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("rescue_cwe_injected_total{cwe=\"CWE-89\"} 1"));
        assert!(text.contains(
            "rescue_added_latency_seconds_bucket{route=\"chat_completions\",le=\"0.00025\"} 0"
        ));
        assert!(text.contains(
            "rescue_added_latency_seconds_bucket{route=\"chat_completions\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "rescue_added_latency_seconds_bucket{route=\"chat_completions\",le=\"0.005\"} 2"
        ));
        assert!(text.contains("rescue_added_latency_seconds_count{route=\"chat_completions\"} 2"));
        assert!(text.contains("# TYPE rescue_plugin_duration_seconds histogram"));
    }

    #[test]
    fn rejections_and_stream_cuts_are_counted_by_reason() {
        let m = Metrics::default();
        m.rejected("header_too_large");
        m.rejected("header_too_large");
        m.stream_cut("idle");
        let text = m.render();
        assert!(
            text.contains("rescue_requests_rejected_total{reason=\"header_too_large\"} 2"),
            "{text}"
        );
        assert!(text.contains("rescue_upstream_stream_cuts_total{reason=\"idle\"} 1"));
        assert!(text.contains("# TYPE rescue_upstream_stream_cuts_total counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
