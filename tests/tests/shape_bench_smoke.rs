//! Keeps the shaping benchmark working: every measurement at a small size, in its own
//! namespaces. The benchmark verifies each apply itself (every subscriber's class on
//! both devices, each re-rate read back with `tc`); here we check every figure exists
//! and is sane. No timing is asserted.

use outpost_tests::shape_bench::{self, BenchConfig};

#[test]
#[ignore = "lab: needs root and netns"]
fn the_benchmark_runs_small() {
    let cfg = BenchConfig {
        sizes: vec![50, 200],
        runs: 1,
        changes: 3,
    };
    let r = shape_bench::run_all(&cfg).unwrap();
    print!("{}", r.table());
    for prefix in [
        "ours: Shaper::full of 50, fresh",
        "ours: Shaper::full of 50 over",
        "tc -batch of the same plan, 50,",
        "ours: Shaper::full of 200, fresh",
        "tc -batch of the same plan, 200,",
        "ours: upsert (re-rate 1) among 200",
        "tc class change (one process) among 200",
        "CPU: ours, Shaper::full of 200",
        "CPU: tc -batch of 200",
    ] {
        let f = r
            .get(prefix)
            .unwrap_or_else(|| panic!("no figure {prefix}"));
        assert!(
            !f.samples.is_empty() && f.samples.iter().all(|s| s.is_finite() && *s >= 0.0),
            "{f:?}"
        );
    }
    assert_eq!(r.get("ours: upsert").unwrap().samples.len(), 3);
    assert!(r.get("ours: upsert (re-rate 1) among 50").is_none());
}
