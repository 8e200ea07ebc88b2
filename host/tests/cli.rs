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
