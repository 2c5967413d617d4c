//! Reliability checks for SparkDaemon, shared by the cargo-fuzz targets in `fuzz/` and by this crate's
//! tests (proptest equivalents, regressions of every fuzz finding, and daemon-level tests in `tests/`).
//!
//! Each `check_*` function takes arbitrary bytes and panics only when a property is violated: a decoder
//! panicking, a decoded value that does not re-encode to what was read, or a store serving bytes that were
//! never validly written. Keeping them here (not in the fuzz crate) lets stable `cargo test` run them too.

pub mod checks;
pub mod content;
