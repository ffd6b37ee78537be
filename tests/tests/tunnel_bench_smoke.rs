//! Keeps the tunnel benchmark working: a few agents through the real plane, all hold
//! a long poll, all resync after the controller restarts. No timing is asserted.

#[test]
#[ignore = "lab: needs root and netns"]
fn the_benchmark_runs_small() {
    outpost_testkit::peer::require("wireguard-go", "wireguard-go");
    let f = outpost_tests::tunnel_bench::run(4, std::time::Duration::from_secs(3), 10).unwrap();
    print!("{}", outpost_tests::tunnel_bench::report(&f));
    assert_eq!(f.agents, 4);
    assert_eq!(f.held_min, 4, "every agent held a long poll: {f:?}");
    assert!(f.controller_rss_kib > 0 && f.hub_rss_kib > 0, "{f:?}");
    assert!(
        f.failed_polls >= 4,
        "the restart cut every held poll: {f:?}"
    );
}
