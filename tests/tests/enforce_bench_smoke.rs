//! Keeps the enforcement benchmark working: every measurement at tiny sizes, in its own
//! namespaces. It checks what the benchmark measured exists and is sane (the probe
//! stream stopped, packets were forwarded); no timing is asserted.

use outpost_tests::enforce_bench::{self, BenchConfig};

#[test]
#[ignore = "lab: needs root and netns"]
fn the_benchmark_runs_small() {
    let cfg = BenchConfig {
        n: 300,
        ipt_n: 300,
        runs: 1,
        changes: 2,
        fwd_sizes: vec![0, 300],
        fwd_secs: 0.1,
        fwd_runs: 1,
        pace_us: 50,
    };
    let r = enforce_bench::run_all(&cfg).unwrap();
    print!("{}", r.table());
    for prefix in [
        "ours: full() of 300 into a fresh",
        "nft -f",
        "nft -j -f",
        "iptables-restore",
        "ours: change(add 1), call",
        "nft add element",
        "iptables -A",
        "ours: change(add), set of 300",
        "ours: set of 300",
        "iptables: chain of 300 rules",
    ] {
        let f = r
            .get(prefix)
            .unwrap_or_else(|| panic!("no figure {prefix}"));
        assert!(
            !f.samples.is_empty() && f.samples.iter().all(|s| s.is_finite() && *s >= 0.0),
            "{f:?}"
        );
    }
    assert!(r.get("ours: set of 0").unwrap().median() > 0.0);
}
