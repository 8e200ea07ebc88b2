//! Latency statistics: nearest-rank percentiles over recorded samples, and the
//! "added" latency (proxied minus direct, percentile by percentile).

use serde::Serialize;

/// The value at percentile `p` (0 < p <= 100) of `sorted` by the nearest-rank
/// method: the smallest sample such that at least p% of samples are <= it.
/// No interpolation, so every reported number is a latency that was observed.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of one set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Summary {
    /// Summarises latencies given in nanoseconds (sorts them in place).
    pub fn of_nanos(samples: &mut [u64]) -> Option<Summary> {
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&n| u128::from(n)).sum();
        Some(Summary {
            count: samples.len(),
            p50_us: us(percentile(samples, 50.0)?),
            p90_us: us(percentile(samples, 90.0)?),
            p99_us: us(percentile(samples, 99.0)?),
            max_us: us(*samples.last()?),
            mean_us: sum as f64 / samples.len() as f64 / 1000.0,
        })
    }

    /// What the proxy added: `self` (through the proxy) minus `direct`, per
    /// percentile. A percentile of a difference is not the difference of
    /// percentiles, but this is how peer gateways publish their overhead.
    pub fn minus(&self, direct: &Summary) -> Added {
        Added {
            p50_us: self.p50_us - direct.p50_us,
            p90_us: self.p90_us - direct.p90_us,
            p99_us: self.p99_us - direct.p99_us,
            max_us: self.max_us - direct.max_us,
        }
    }
}

/// Added latency per percentile, in microseconds (may be negative in noise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Added {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 90.0), Some(90));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
        assert_eq!(percentile(&ten, 50.0), Some(5));
        assert_eq!(percentile(&ten, 0.0), Some(1));
    }

    #[test]
    fn summary_and_added() {
        let mut proxied: Vec<u64> = (1..=1000).rev().map(|i| i * 1000 + 500).collect();
        let mut direct: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Summary::of_nanos(&mut proxied).unwrap();
        let d = Summary::of_nanos(&mut direct).unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(d.p50_us, 500.0);
        assert_eq!(d.p99_us, 990.0);
        assert_eq!(d.max_us, 1000.0);
        assert_eq!(d.mean_us, 500.5);
        let added = p.minus(&d);
        assert_eq!(added.p50_us, 0.5);
        assert_eq!(added.p99_us, 0.5);
        assert_eq!(added.max_us, 0.5);
        assert!(Summary::of_nanos(&mut []).is_none());
    }
}
