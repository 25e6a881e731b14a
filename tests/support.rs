//! Shared helpers for the integration tests: where the local services and shared data are.
#![warn(missing_docs)]

use std::path::PathBuf;

/// Whether this run is under CI (`CI=true`), where a missing service is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reads a service address from the environment that `scripts/services.sh` sets.
///
/// Returns `None` (after printing why) when it is unset outside CI, so a developer without the
/// services sees the test skip loudly.
///
/// # Panics
/// Under CI when the variable is unset: a missing service there is a failure.
pub fn service_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if in_ci() => panic!("{var} is not set under CI=true; run the tests through `make test`"),
        _ => {
            eprintln!("SKIPPED: {var} is not set; run `make test` to start the local services");
            None
        }
    }
}

/// The shared real-data directory (`../shared/realdata` from the project root), if present.
pub fn realdata_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata");
    dir.is_dir().then_some(dir)
}
