//! Keeps the WAN-check benchmark working: both probers sweep a few hundred answering
//! targets in the benchmark's lab, and every target is found up. No timing is asserted.

use outpost_tests::wan_bench::{self, Lab};

#[test]
#[ignore = "lab: needs root and netns"]
fn the_benchmark_runs_small() {
    let lab = Lab::new(300).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wan-sweep"));
    let ours = wan_bench::ours(&lab, bin, 300, 5_000, 500).unwrap();
    let fping = wan_bench::fping(&lab, 300, Some("0.1")).unwrap();
    print!("{}", wan_bench::table(&[ours.clone(), fping.clone()]));
    for s in [&ours, &fping] {
        assert_eq!((s.up, s.down), (300, 0), "{s:?}");
        assert!(s.cpu_secs >= 0.0 && s.max_rss_kib > 0, "{s:?}");
    }
    // A target that does not answer is found down by both.
    let dead = Lab::new(10).unwrap();
    dead.cpe
        .run(&["ip", "route", "del", "local", "10.200.0.0/15", "dev", "lo"]);
    dead.cpe
        .run(&["ip", "route", "add", "local", "10.200.0.0/29", "dev", "lo"]);
    let ours = wan_bench::ours(&dead, bin, 10, 5_000, 300).unwrap();
    assert_eq!((ours.up, ours.down), (7, 3), "{ours:?}");
}
