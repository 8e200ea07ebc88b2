//! The `rescue` command line as a user meets it. (Being an integration test of
//! this package also makes `cargo test --workspace` build the binary that the
//! end-to-end tests in `tests/` start.)

use std::process::Command;

fn rescue() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rescue"))
}

#[test]
fn help_lists_the_commands() {
    let out = rescue().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "kb", "retrieve"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn verify_reports_a_missing_file_and_fails() {
    let out = rescue()
        .args(["kb", "verify", "/nonexistent/kb.sqlite"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("/nonexistent/kb.sqlite") && text.contains("not found"),
        "{text}"
    );
}

#[test]
fn serve_rejects_a_bad_upstream_url_before_listening() {
    let out = rescue()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "ftp://example/v1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("ftp://example/v1") && text.contains("scheme"),
        "{text}"
    );
}

#[test]
fn hash_key_reads_the_key_from_stdin() {
    use std::io::Write;
    let mut child = rescue()
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

/// The floors of ../shared/data/eval-dev/BASELINE.md (TF-IDF over CWE text,
/// lenient R@5: llmseceval 0.253, cweval 0.306) must stay beaten, with at most
/// 10% of ordinary tasks augmented. A regression guard, not a target.
#[test]
fn eval_on_the_dev_sets_beats_the_baseline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dev = root.join("../shared/data/eval-dev");
    let json = std::env::temp_dir().join(format!("rescue-eval-{}.json", std::process::id()));
    let out = rescue()
        .current_dir(root)
        .arg("eval")
        .args(
            [
                "llmseceval.jsonl",
                "cweval.jsonl",
                "humaneval-negatives.jsonl",
            ]
            .map(|f| dev.join(f)),
        )
        .arg("--json")
        .arg(&json)
        .env("XDG_CACHE_HOME", root.join("target/test-plugin-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("| set | n | R@1"), "{table}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["set"] == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    assert!(
        row("llmseceval")["len_r5"].as_f64().unwrap() > 0.253,
        "{table}"
    );
    assert!(row("cweval")["len_r5"].as_f64().unwrap() > 0.306, "{table}");
    assert!(
        row("humaneval-negatives")["augmented"].as_f64().unwrap() <= 0.10,
        "{table}"
    );
    // What the user gets: the right knowledge in the prompt. Floors a few
    // points under EVAL.md's numbers (0.433, 0.565) and above the lexical
    // facet alone (0.387, 0.519), so losing the semantic facet or the fusion
    // fails here.
    assert!(
        row("llmseceval")["augmented_and_hit"].as_f64().unwrap() > 0.40,
        "{table}"
    );
    assert!(
        row("cweval")["augmented_and_hit"].as_f64().unwrap() > 0.53,
        "{table}"
    );
}
