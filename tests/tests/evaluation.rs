//! `rescue eval` and `rescue retrieve` through the real binary on the shipped
//! knowledge base: the metrics users read, and the fusion they configure.

use rescue_tests::run_rescue;

const SQL_TASK: &str = "Write a Python function that looks up a customer row by the name \
     the caller passes in, building the SQL query string from that name";
const ORDINARY_TASK: &str =
    "def add(a: int, b: int) -> int:\n    \"\"\"Return the sum of a and b.\"\"\"\n";

#[test]
fn eval_prints_the_table_and_writes_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = [
        serde_json::json!({"id": "sql", "lang": "python", "cwe": ["CWE-89"], "prompt": SQL_TASK}),
        serde_json::json!({"id": "add", "lang": "python", "cwe": [], "prompt": ORDINARY_TASK}),
    ];
    let lines: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    std::fs::write(dir.path().join("mixed.jsonl"), lines.join("\n")).unwrap();

    let output = run_rescue(
        &["eval", "mixed.jsonl", "--json", "metrics.json"],
        dir.path(),
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.starts_with("| set | n | R@1 | R@5 |") && table.contains("| inj-prec |"),
        "{table}"
    );
    assert!(table.contains("| mixed | 2 |"), "{table}");

    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    let set = &metrics[0];
    assert_eq!(set["set"], "mixed");
    assert_eq!(
        (set["n"].as_u64(), set["positives"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(set["r1"], 1.0, "CWE-89 ranks first for the SQL task: {set}");
    // The SQL task is augmented with CWE-89, the docstring task is not.
    assert_eq!(set["augmented"], 0.5, "{set}");
    assert_eq!(set["augmented_and_hit"], 0.5, "{set}");
    let precision = set["injected_precision"].as_f64().unwrap();
    assert!(precision > 0.0 && precision <= 1.0, "{set}");
}

#[test]
fn retrieve_follows_the_configured_fusion() {
    let dir = tempfile::tempdir().unwrap();
    let first_cwe = |config: &str| {
        std::fs::write(dir.path().join("rescue.toml"), config).unwrap();
        let output = run_rescue(&["retrieve", "-c", "rescue.toml", SQL_TASK], dir.path());
        let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(line["augmented"], true, "{line}");
        line["cwes"][0].clone()
    };
    let margin = first_cwe("[retrieval]\nfusion = \"score-margin\"\n");
    let rrf = first_cwe("[retrieval]\nfusion = \"reciprocal-rank\"\n");
    assert_eq!(
        (margin["id"].as_str(), rrf["id"].as_str()),
        (Some("CWE-89"), Some("CWE-89"))
    );
    // A score-margin vote is worth at least its base (2.0); a reciprocal-rank
    // vote at most 1/61.
    assert!(margin["score"].as_f64().unwrap() >= 2.0, "{margin}");
    assert!(rrf["score"].as_f64().unwrap() <= 3.0 / 61.0, "{rrf}");
    // Both report each facet's own score and rank.
    assert_eq!(margin["lexical"], rrf["lexical"]);
}
