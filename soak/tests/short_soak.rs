//! A few seconds of the real soak through the real proxy binary (the debug
//! build next to this test, as the end-to-end tests use): every request of
//! every kind answered exactly once, as expected.

use std::path::PathBuf;
use std::time::Duration;

use rescue_soak::mix::Kind;
use rescue_soak::run::{self, Options};

/// target/<profile>/deps/<test> -> target/<profile>/rescue, or $RESCUE_BIN.
fn rescue_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RESCUE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("rescue");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

#[test]
fn a_short_soak_passes() {
    let root = rescue_soak::repo_root();
    let options = Options {
        bin: rescue_bin(),
        kb: root.join("kb.sqlite"),
        duration: Duration::from_secs(4),
        clients: 6,
        seed: 42,
        sample_every: Duration::from_secs(1),
        warmup: Duration::from_secs(1),
        // A few seconds say nothing about leaks; the 10-minute run does.
        max_rss_growth_mib: 1024,
        max_body_bytes: 16 * 1024,
        log_filter: "warn".into(),
        cache_dir: root.join("target/test-plugin-cache"),
    };
    let summary = run::run(&options).unwrap();
    let report = run::render(&summary, &options);
    assert!(summary.passed(), "{report}");
    assert!(summary.total.sent > 50, "{report}");
    // Enough requests that each kind, faults included, came up.
    for kind in Kind::ALL {
        assert!(
            summary.by_kind.get(&kind).is_some_and(|t| t.sent > 0),
            "no {} request in the run:\n{report}",
            kind.name()
        );
    }
    assert_eq!(summary.clean_shutdown, Some(true), "{report}");
}
