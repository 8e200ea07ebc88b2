//! Builds the RESCUE plugin (plugin/) as a wasm32-wasip2 component and places it
//! in OUT_DIR, so the host binary embeds the plugin it was built with.
//!
//! The nested cargo uses its own target directory (target/plugin) because the
//! outer build holds the lock on the main one. Set RESCUE_PLUGIN_WASM to a
//! prebuilt component to skip the nested build.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("rescue_plugin.wasm");
    println!("cargo:rerun-if-env-changed=RESCUE_PLUGIN_WASM");
    // Every file by name: a watched directory was seen to miss edits of
    // the files inside it, which embedded a stale plugin.
    // The root manifest holds the plugin's release profile.
    for watched in [
        "plugin/src",
        "plugin/Cargo.toml",
        "plugin/build.rs",
        // The plugin's own dependency, shared with the host: a stale copy
        // would split text differently from the KB the host builds.
        "text/src",
        "text/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        watch(&root.join(watched));
    }

    if let Some(prebuilt) = std::env::var_os("RESCUE_PLUGIN_WASM") {
        std::fs::copy(&prebuilt, &out)
            .unwrap_or_else(|e| panic!("copying RESCUE_PLUGIN_WASM {prebuilt:?}: {e}"));
        return;
    }

    ensure_target();
    let target_dir = root.join("target").join("plugin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .args(["--target", TARGET])
        .args(["-p", "rescue-plugin"])
        .arg("--manifest-path")
        .arg(root.join("plugin").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_outer_build_env(&mut cmd);
    let status = cmd.status().expect("running cargo for the plugin");
    assert!(status.success(), "building the plugin for {TARGET} failed");

    let built = target_dir
        .join(TARGET)
        .join("release")
        .join("rescue_plugin.wasm");
    std::fs::copy(&built, &out).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}

/// Asks cargo to rerun this script when `path`, or any file under it, changes.
fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
    if let Ok(entries) = std::fs::read_dir(path) {
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for entry in entries {
            watch(&entry);
        }
    }
}

/// The outer build's environment describes the host build (its target, flags,
/// and under clippy a rustc wrapper); none of it applies to the plugin.
fn scrub_outer_build_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let outer = key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("DEP_")
            || matches!(
                key.as_str(),
                "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_CRATE_NAME"
                    | "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if outer {
            cmd.env_remove(&key);
        }
    }
}

/// A fresh toolchain lacks the wasm32-wasip2 standard library; rustup adds it
/// (and `rust-toolchain.toml` alone does not, for an installed toolchain).
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(Path::exists) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed; run it by hand"
        );
    }
}
