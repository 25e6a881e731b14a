//! Shared helpers for the nexingest benchmarks (`cargo bench -p nexingest-benches`).
#![warn(missing_docs)]
