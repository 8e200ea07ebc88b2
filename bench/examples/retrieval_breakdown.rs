//! Where a fast-mode retrieval's time goes: runs the shipped plugin on the
//! shipped KB in process, 2,000 times after a warm-up, and prints the time
//! per run, the KB queries per run and the time spent in them. Everything
//! else is the sandbox (instantiation, the plugin's own code, copying
//! values across the boundary). Under `perf record` it is the profile target
//! that BENCHMARKS.md's figures came from.
//!
//! `cargo run --release -p rescue-bench --example retrieval_breakdown [task]`
//! (`RESCUE_BREAKDOWN_RUNS=N` for more runs, so that a profile is not
//! dominated by loading the KB).

use std::time::Instant;

fn main() -> Result<(), rescue_bench::Error> {
    let task = std::env::args().nth(1).unwrap_or_else(|| {
        "Write a Python function that builds an SQL query from a user-supplied name".into()
    });
    let kb = rescue_bench::repo_root().join("kb.sqlite");
    let runtime = rescue_bench::inproc::runtime(&kb)?;
    let params = rescue_bench::inproc::default_params();
    let facets = rescue_bench::inproc::facets(&task);
    for _ in 0..200 {
        runtime.augment_blocking(&facets, &params)?;
    }
    let runs: u32 = std::env::var("RESCUE_BREAKDOWN_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let (queries_before, query_time_before) = runtime.kb().query_stats();
    let started = Instant::now();
    let mut last = None;
    for _ in 0..runs {
        last = Some(runtime.augment_blocking(&facets, &params)?);
    }
    let total = started.elapsed();
    let (queries_after, query_time_after) = runtime.kb().query_stats();
    println!(
        "per run: {:?} in all, {} KB queries taking {:?}",
        total / runs,
        (queries_after - queries_before) / u64::from(runs),
        (query_time_after - query_time_before) / runs
    );
    match last.and_then(|r| r.augmentation) {
        Some(a) => println!(
            "injected {:?}, example {:?}, {} characters",
            a.cwes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            a.example_id,
            a.text.len()
        ),
        None => println!("not augmented"),
    }
    Ok(())
}
