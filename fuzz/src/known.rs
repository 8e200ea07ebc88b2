//! Findings that are reported but not fixed yet.
//!
//! A target that stops on the same known bug within seconds fuzzes nothing
//! else, so `scripts/fuzz` sets `RESCUE_FUZZ_ALLOW_KNOWN=1`: a property that
//! fails on an input matching a known finding's trigger is then not a crash.
//! Every other failure still is. Without the variable (`scripts/fuzz
//! --strict`, and the unit tests) every property is enforced, which is how a
//! fix is verified; once a finding is fixed, delete its entry here.
//! RELIABILITY.md ("Fuzzing") describes each finding with its reproducer.

use std::sync::OnceLock;

/// A reported, unfixed bug. None is open: F1-F5 are fixed (RELIABILITY.md);
/// add a variant here when a new finding has to be tolerated while it waits
/// for its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {}

/// Whether failures explained by `finding` are tolerated: the variable is
/// `1` (all known findings) or a comma-separated list of their names (e.g.
/// `TinyMaxChars`); findings the list leaves out fail as usual.
pub fn allowed(finding: Finding) -> bool {
    static ALLOWED: OnceLock<Option<String>> = OnceLock::new();
    let setting = ALLOWED.get_or_init(|| std::env::var("RESCUE_FUZZ_ALLOW_KNOWN").ok());
    match setting.as_deref() {
        Some("1") => true,
        Some(list) => list
            .split(',')
            .any(|name| name.trim() == format!("{finding:?}")),
        None => false,
    }
}

/// Panics with `failure` unless `explained_by` names a known finding that
/// is tolerated.
pub fn fail(failure: String, explained_by: Option<Finding>) {
    match explained_by {
        Some(finding) if allowed(finding) => {}
        Some(finding) => panic!("{failure} (known finding {finding:?})"),
        None => panic!("{failure}"),
    }
}
