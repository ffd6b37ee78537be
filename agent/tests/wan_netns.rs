//! Lab: the WAN-check engine against the kernel, in network namespaces.
//!
//! ```text
//!  edge (the prober) ── veth ── cpe (10.41.0.2, fd00:41::2; nothing on TCP :8291)
//! ```
//!
//! The engine runs on a thread that entered `edge`, so its raw sockets live there. A
//! real `ping` runs beside it on the same raw-socket traffic: its echoes and answers
//! reach our socket too, and must neither count nor confuse ours. Needs root, `ip`,
//! `ping` (Debian: iproute2, iputils-ping).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use outpost_agent::wan::{Pinger, tcp_probe_all};
use outpost_testkit::netns::{Netns, veth};

#[test]
#[ignore = "lab: needs root and netns"]
fn one_socket_per_family_answers_v4_and_v6_beside_another_pinger() {
    let edge = Netns::new("wan-edge");
    let cpe = Netns::new("wan-cpe");
    veth(
        &edge,
        "v-edge",
        Some("10.41.0.1/24"),
        &cpe,
        "v-cpe",
        Some("10.41.0.2/24"),
    );
    edge.addr("v-edge", "fd00:41::1/64");
    cpe.addr("v-cpe", "fd00:41::2/64");
    // Another pinger on the box, running through our sweeps.
    let mut other = edge
        .cmd("ping")
        .args(["-i", "0.01", "-c", "300", "10.41.0.2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (rtts, stats) = edge.within(|| {
        let mut p = Pinger::open(1 << 20).unwrap();
        let targets: Vec<IpAddr> = ["10.41.0.2", "fd00:41::2", "10.41.0.99", "fd00:41::99"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let groups = [1, 1, 2, 2];
        let mut last = None;
        // Several sweeps: a late answer to one must not count in the next.
        for _ in 0..5 {
            last = Some(p.sweep(&targets, &groups, 1000, 1000, Duration::from_millis(300)));
        }
        last.unwrap()
    });
    let _ = other.kill();
    let _ = other.wait();
    let up: Vec<bool> = rtts.iter().map(Option::is_some).collect();
    assert_eq!(up, vec![true, true, false, false], "{stats:?}");
    assert_eq!((stats.sent, stats.answered), (4, 2), "{stats:?}");
    assert!(
        stats.ignored > 0,
        "the other pinger's packets reached our socket and were ignored: {stats:?}"
    );

    // TCP: a closed port is refused (RST) and fails; nothing is left in TIME_WAIT.
    let results = edge.within(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async {
            // An open port on the CPE side is simulated by one on the edge itself.
            tokio::net::TcpListener::bind("10.41.0.1:8291")
                .await
                .unwrap()
        });
        let addrs: Vec<SocketAddr> = ["10.41.0.2:8291", "10.41.0.1:8291"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut out = Vec::new();
        for _ in 0..20 {
            out = rt.block_on(tcp_probe_all(&addrs, 4, Duration::from_millis(500)));
        }
        drop(listener);
        out
    });
    assert_eq!(
        results.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![false, true]
    );
    let ss = edge.stdout(&["ss", "-tan", "state", "time-wait"]);
    assert_eq!(
        ss.lines().skip(1).count(),
        0,
        "connect probes leave no TIME_WAIT: {ss}"
    );
}
