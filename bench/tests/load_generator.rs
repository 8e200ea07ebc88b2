//! The load generator against the mock, on loopback: every request it counts
//! is one the mock served, bounds are honoured, and streamed answers are timed
//! to the first and the last byte. No assertion depends on timing.

use std::sync::Arc;
use std::time::Duration;

use rescue_bench::load::{self, Bounds, RequestSpec};
use rescue_bench::mock::{MockConfig, MockUpstream};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_count_bound_is_exact_and_matches_what_the_mock_served() {
    let mock = MockUpstream::start(MockConfig::default()).unwrap();
    let spec = Arc::new(RequestSpec::post_json(
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ));
    let bounds = Bounds {
        duration: Duration::from_secs(60),
        max_requests: 300,
    };
    let result = runtime().block_on(load::run(mock.addr, spec, 4, bounds));
    assert_eq!(result.errors, 0, "{:?}", result.last_error);
    assert_eq!(result.ok, 300);
    assert_eq!(result.latencies_ns.len(), 300);
    assert_eq!(mock.served(), 300);
    assert_eq!(result.augmented, 0, "the mock never says augmented");
}

#[test]
fn a_time_bound_stops_the_run_and_every_request_is_counted_once() {
    let mock = MockUpstream::start(MockConfig::default()).unwrap();
    let bounds = Bounds {
        duration: Duration::from_millis(200),
        max_requests: 1_000_000,
    };
    let result = runtime().block_on(load::run(
        mock.addr,
        Arc::new(RequestSpec::get("/v1/models")),
        3,
        bounds,
    ));
    assert_eq!(result.errors, 0, "{:?}", result.last_error);
    assert!(result.ok > 0);
    assert_eq!(mock.served(), result.ok);
    assert!(result.ok < 1_000_000, "stopped by time, not by count");
}

#[test]
fn streams_are_timed_to_first_and_last_byte() {
    let mock = MockUpstream::start(MockConfig {
        delay: Duration::ZERO,
        stream_chunks: 4,
        stream_gap: Duration::from_millis(2),
    })
    .unwrap();
    let spec = Arc::new(RequestSpec::post_json(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    ));
    let bounds = Bounds {
        duration: Duration::from_secs(60),
        max_requests: 5,
    };
    let result = runtime().block_on(load::run(mock.addr, spec, 1, bounds));
    assert_eq!(result.ok, 5, "{:?}", result.last_error);
    for (first, last) in result.first_byte_ns.iter().zip(&result.latencies_ns) {
        assert!(first <= last);
    }
}

#[test]
fn errors_are_counted_not_hidden() {
    let mock = MockUpstream::start(MockConfig::default()).unwrap();
    let bounds = Bounds {
        duration: Duration::from_secs(60),
        max_requests: 3,
    };
    // The mock answers 404 to an unknown path.
    let result = runtime().block_on(load::run(
        mock.addr,
        Arc::new(RequestSpec::get("/v1/nothing")),
        1,
        bounds,
    ));
    assert_eq!(result.ok, 0);
    assert_eq!(result.errors, 3);
    assert!(result.last_error.unwrap().contains("404"));
}
