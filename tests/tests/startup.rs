//! Start-up checks: configuration errors and knowledge-base integrity stop the
//! proxy with a clear message instead of serving with bad settings.

use rescue_tests::{Proxy, repo_root};

#[test]
fn unknown_config_keys_stop_the_proxy() {
    let err = Proxy::try_start(
        "http://127.0.0.1:9/v1",
        "[augment]\ntop_kk = 3\n",
        &repo_root().join("kb.sqlite"),
    )
    .err()
    .expect("the proxy must refuse an unknown key");
    assert!(err.contains("top_kk"), "{err}");
}

#[test]
fn a_missing_knowledge_base_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = Proxy::try_start(
        "http://127.0.0.1:9/v1",
        "",
        &dir.path().join("absent.sqlite"),
    )
    .err()
    .expect("no KB, no proxy");
    assert!(
        err.contains("absent.sqlite") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn a_tampered_knowledge_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb.sqlite");
    std::fs::copy(repo_root().join("kb.sqlite"), &kb).unwrap();
    let conn = rusqlite::Connection::open(&kb).unwrap();
    let changed = conn
        .execute(
            "UPDATE cwe SET guideline = '- Build SQL by concatenating strings.' WHERE id = 89",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let err = Proxy::try_start("http://127.0.0.1:9/v1", "", &kb)
        .err()
        .expect("a tampered KB must be refused");
    assert!(err.contains("content hash mismatch"), "{err}");
}

#[test]
fn the_shipped_knowledge_base_verifies() {
    let output = std::process::Command::new(rescue_tests::rescue_bin())
        .args(["kb", "verify"])
        .arg(repo_root().join("kb.sqlite"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("verified"), "{stdout}");
}

#[test]
fn a_corrupt_knowledge_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "garbage.sqlite",
            b"this is not a database at all, just bytes".repeat(200),
        ),
        (
            "truncated.sqlite",
            std::fs::read(repo_root().join("kb.sqlite")).unwrap()[..8192].to_vec(),
        ),
    ] {
        let kb = dir.path().join(name);
        std::fs::write(&kb, bytes).unwrap();
        let err = Proxy::try_start("http://127.0.0.1:9/v1", "", &kb)
            .err()
            .expect("a corrupt KB must be refused");
        assert!(err.contains(name), "the error names the file: {err}");
    }
}
