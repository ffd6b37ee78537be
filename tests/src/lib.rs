//! Whole-system tests and benchmarks for Outpost.
//!
//! # Layout
//! - [`renewals`]: renewals per second through the controller's HTTP API, side by side
//!   with the raw SQLite rate of the same transaction shape. Run the benchmark with
//!   `cargo bench -p outpost-tests --bench renewals`; `tests/renewals_smoke.rs` runs it
//!   small to keep it correct.

pub mod renewals;
