//! Link settings of the WebAssembly component.
//!
//! The pooling allocator makes a reused memory slot accessible up to the
//! module's initial size; growing past it (`memory.grow`) costs an
//! `mprotect`, and the next instantiation in that slot shrinks it back with
//! another, each a TLB shootdown on every core. A retrieval's heap peaks
//! above the default initial memory (1.1 MiB, most of it the stack), so
//! every augmented request paid two of them (measured under load: ~2
//! mprotect calls per request, ~10% of the proxy's CPU with their
//! interrupts). Starting at a size no retrieval outgrows makes them
//! disappear; pages that are not touched cost nothing, and only touched
//! ones are reset between runs.

/// Initial linear memory: 1 MiB of stack plus room for the largest
/// retrieval's heap (four injected CWEs, their example pools and the
/// composed block).
const INITIAL_MEMORY_BYTES: u64 = 4 * 1024 * 1024;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory={INITIAL_MEMORY_BYTES}");
    }
}
