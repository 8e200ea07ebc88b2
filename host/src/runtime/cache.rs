//! The precompiled-component cache.
//!
//! Compiling the plugin with Cranelift takes tens to hundreds of milliseconds;
//! loading precompiled code takes microseconds. Precompiled code is only valid
//! for the wasmtime version and engine configuration that produced it, so the
//! cache key hashes the component bytes together with the engine's own
//! compatibility hash. Files are written to a temporary name and renamed, so a
//! crash never leaves a half-written entry; a corrupt or stale entry is
//! recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// Feeds `Hash` output into SHA-256 so the key is stable across processes
/// (the std hashers are randomly seeded).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache key of `wasm` for this engine.
pub fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.0.update(wasm);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

fn compile_err(error: impl std::fmt::Display) -> Error {
    Error::Plugin {
        what: "compiling component".into(),
        message: format!("{error:#}"),
    }
}

/// Loads `wasm` as a component, through the on-disk cache when there is one.
pub fn load_component(engine: &Engine, wasm: &[u8], cache_dir: Option<&Path>) -> Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm).map_err(compile_err);
    };
    let path = dir.join(format!("rescue-plugin-{}.cwasm", cache_key(engine, wasm)));
    // Read into memory rather than `deserialize_file`: a mapped file that
    // someone truncates or rewrites in place would crash the process (SIGBUS).
    if let Ok(bytes) = std::fs::read(&path) {
        // SAFETY: the file is only ever written by `precompile_component` of an
        // engine with the same compatibility hash (it is in the name), into a
        // directory created private to this user. wasmtime still checks the
        // header and refuses files from another version or configuration.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => return Ok(component),
            Err(error) => tracing::warn!(
                path = %path.display(),
                "discarding unusable plugin cache entry: {error:#}"
            ),
        }
    }
    let compiled = engine.precompile_component(wasm).map_err(compile_err)?;
    if let Err(error) = store(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), "plugin cache not written: {error}");
    }
    // SAFETY: `compiled` was produced just now by this engine.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(compile_err)
}

fn store(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, path)
}
