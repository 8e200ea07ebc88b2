//! Criterion micro-benchmarks of the request hot path, through `rescue_host`'s
//! public library API: plugin runs (instantiate + call), facet extraction,
//! the plugin's KB queries, tree-sitter call extraction, body rewriting.
//!
//! `cargo bench -p rescue-bench` (add `-- <filter>` to run a subset).
//! There is no embedding step in fast mode, so there is no embedding bench.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rescue_bench::inproc::{self, EMPTY_TASK, SQL_TASK};
use rescue_host::capabilities::code;
use rescue_host::capabilities::kb::{KbReader, QueryLimits, SqlValue};
use rescue_host::config::{AugmentPolicy, Placement};
use rescue_host::protocol::openai;
use rescue_host::runtime::RequestFacets;
use rescue_host::{facets, policy};
use rescue_plugin::retrieve;
use std::hint::black_box;

const PYTHON_SNIPPET: &str = "import os\nimport sqlite3\n\ndef lookup(conn, name):\n    cur = conn.cursor()\n    cur.execute(\"SELECT * FROM users WHERE name = '%s'\" % name)\n    os.system(\"echo \" + name)\n    return cur.fetchall()\n";

fn chat_body(task: &str) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": task}
        ],
        "temperature": 0.2
    })
    .to_string()
}

fn code_task() -> String {
    format!("Fix this so it is safe:\n```python\n{PYTHON_SNIPPET}```\n")
}

/// Under valgrind the plugin runtime cannot start (the pooling allocator
/// reserves hundreds of GiB of address space), so `RESCUE_BENCH_NO_PLUGIN=1`
/// skips the benches that need it: `valgrind --tool=callgrind` then counts
/// the instructions of the KB, facet and tree-sitter benches.
fn plugin_enabled() -> bool {
    std::env::var_os("RESCUE_BENCH_NO_PLUGIN").is_none()
}

fn plugin(c: &mut Criterion) {
    if !plugin_enabled() {
        return;
    }
    let kb = rescue_bench::repo_root().join("kb.sqlite");
    let runtime = inproc::runtime(&kb).expect("plugin runtime");
    let params = inproc::default_params();
    let mut group = c.benchmark_group("plugin");
    let empty = inproc::facets(EMPTY_TASK);
    group.bench_function("instantiate+empty_call", |b| {
        b.iter(|| {
            runtime
                .augment_blocking(black_box(&empty), &params)
                .unwrap()
        })
    });
    let sql = inproc::facets(SQL_TASK);
    assert!(
        runtime
            .augment_blocking(&sql, &params)
            .unwrap()
            .augmentation
            .is_some()
    );
    group.bench_function("instantiate+augment_sql_task", |b| {
        b.iter(|| runtime.augment_blocking(black_box(&sql), &params).unwrap())
    });
    let with_code = inproc::facets(&code_task());
    group.bench_function("instantiate+augment_code_block", |b| {
        b.iter(|| {
            runtime
                .augment_blocking(black_box(&with_code), &params)
                .unwrap()
        })
    });
    group.finish();
}

fn facet_extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("facets");
    group.bench_function("extract_prose", |b| {
        b.iter(|| facets::extract(black_box(SQL_TASK), &[]))
    });
    let task = code_task();
    group.bench_function("extract_fenced_code", |b| {
        b.iter(|| facets::extract(black_box(&task), &[]))
    });
    group.bench_function("extract_raw_code_detect_language", |b| {
        b.iter(|| facets::extract(black_box(PYTHON_SNIPPET), &[]))
    });
    let body = chat_body(SQL_TASK);
    group.bench_function("parse_json+chat_facets", |b| {
        b.iter(|| {
            let json: serde_json::Value = serde_json::from_str(black_box(&body)).unwrap();
            openai::chat_facets(&json)
        })
    });
    let prose = facets::extract("What is the capital of France?", &[]);
    group.bench_function("policy_detect_passthrough", |b| {
        b.iter(|| policy::should_augment(AugmentPolicy::Detect, black_box(&prose)))
    });
    group.finish();
}

fn kb_queries(c: &mut Criterion) {
    let kb = KbReader::new(
        &rescue_bench::repo_root().join("kb.sqlite"),
        QueryLimits {
            max_steps: 10_000,
            max_rows: 1_000,
        },
    );
    // The plugin's own statements, so the benchmark runs what it sends.
    let search = retrieve::LEXICAL_SQL;
    let semantic = retrieve::LANGUAGE_SQL;
    let example = retrieve::EXAMPLES_SQL;
    let terms = rescue_plugin::text::terms(SQL_TASK);
    // ?1 the words (JSON array).
    let search_params = [SqlValue::Text(rescue_plugin::text::json_array(&terms))];
    assert!(!kb.query(search, &search_params).unwrap().is_empty());
    let vector: Vec<u8> = rescue_host::embed::to_le_bytes(&kb.embed(&terms.join(" ")));
    // ?1 query vector, ?2 language: the language's weaknesses, all scored.
    let semantic_params = [
        SqlValue::Blob(vector.clone()),
        SqlValue::Text("python".into()),
    ];
    assert_eq!(kb.query(semantic, &semantic_params).unwrap().len(), 1);
    let mut group = c.benchmark_group("kb");
    group.bench_function("cwe_search_bm25", |b| {
        b.iter(|| {
            kb.query(black_box(search), black_box(&search_params))
                .unwrap()
        })
    });
    group.bench_function("cwe_search_semantic", |b| {
        b.iter(|| {
            kb.query(black_box(semantic), black_box(&semantic_params))
                .unwrap()
        })
    });
    // ?1 query vector, ?2 neighbours averaged: every scenario scored.
    let scenario_params = [SqlValue::Blob(vector.clone()), SqlValue::Integer(3)];
    assert_eq!(
        kb.query(retrieve::SCENARIO_SQL, &scenario_params)
            .unwrap()
            .len(),
        1
    );
    group.bench_function("scenario_means", |b| {
        b.iter(|| {
            kb.query(
                black_box(retrieve::SCENARIO_SQL),
                black_box(&scenario_params),
            )
            .unwrap()
        })
    });
    // ?1 query vector: every class of the classifier's model scored.
    let classifier_params = [SqlValue::Blob(vector.clone())];
    assert_eq!(
        kb.query(retrieve::CLASSIFIER_SQL, &classifier_params)
            .unwrap()
            .len(),
        1
    );
    group.bench_function("classifier_scores", |b| {
        b.iter(|| {
            kb.query(
                black_box(retrieve::CLASSIFIER_SQL),
                black_box(&classifier_params),
            )
            .unwrap()
        })
    });
    group.bench_function("embed_query_terms", |b| {
        let text = terms.join(" ");
        b.iter(|| kb.embed(black_box(&text)))
    });
    // ?1 the chosen CWEs (JSON array), ?2 language, ?3 query vector, ?4 the
    // request terms' word set.
    let example_params = [
        SqlValue::Text("[89]".into()),
        SqlValue::Text("python".into()),
        SqlValue::Blob(vector),
        SqlValue::Blob(rescue_plugin::text::term_set(&terms)),
    ];
    group.bench_function("secure_example", |b| {
        b.iter(|| {
            kb.query(black_box(example), black_box(&example_params))
                .unwrap()
        })
    });
    group.finish();
}

fn tree_sitter(c: &mut Criterion) {
    let mut group = c.benchmark_group("code");
    group.bench_function("extract_calls_python", |b| {
        b.iter(|| code::extract_calls("python", black_box(PYTHON_SNIPPET)).unwrap())
    });
    group.bench_function("detect_language", |b| {
        b.iter(|| code::detect_language(black_box(PYTHON_SNIPPET)))
    });
    group.finish();
}

fn body_rewriting(c: &mut Criterion) {
    if !plugin_enabled() {
        return;
    }
    let kb = rescue_bench::repo_root().join("kb.sqlite");
    let runtime = Arc::new(inproc::runtime(&kb).expect("plugin runtime"));
    let params = inproc::default_params();
    let knowledge = runtime
        .augment_blocking(&inproc::facets(SQL_TASK), &params)
        .unwrap()
        .augmentation
        .expect("augmented")
        .text;
    let body = chat_body(SQL_TASK);
    let mut group = c.benchmark_group("openai");
    group.bench_function("apply_chat_system", |b| {
        b.iter(|| {
            openai::apply_chat(black_box(&body), black_box(&knowledge), Placement::System).unwrap()
        })
    });
    group.bench_function("apply_chat_user_prefix", |b| {
        b.iter(|| {
            openai::apply_chat(
                black_box(&body),
                black_box(&knowledge),
                Placement::UserPrefix,
            )
            .unwrap()
        })
    });
    // Everything the proxy does for an augmented chat request between reading
    // the body and sending it upstream, minus the async hand-off.
    group.bench_function("host_pipeline_augmented", |b| {
        b.iter(|| {
            let json: serde_json::Value = serde_json::from_str(black_box(&body)).unwrap();
            let facets: RequestFacets = openai::chat_facets(&json).unwrap();
            assert!(policy::should_augment(AugmentPolicy::Detect, &facets));
            let a = runtime
                .augment_blocking(&facets, &params)
                .unwrap()
                .augmentation
                .unwrap();
            openai::apply_chat(&body, &a.text, Placement::System).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = plugin, facet_extraction, kb_queries, tree_sitter, body_rewriting
}
criterion_main!(benches);
