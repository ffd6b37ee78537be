//! Edge enforcement on the wire, in the netns lab ([`outpost_tests::lab`]): the real
//! controller and agent, real nftables in the BNG namespace, real ping, curl, dig and
//! TCP from subscriber namespaces.

use std::time::Duration;

use outpost_tests::lab::{EdgeLab, TcpSession, addr, available};

#[test]
#[ignore = "lab: needs root and netns"]
fn the_lab_routes_and_serves_before_any_enforcement() {
    available().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lab = EdgeLab::new(dir.path());
    for sub in [&lab.sub1, &lab.sub2] {
        assert!(
            sub.ping(addr::WEB),
            "{} cannot reach the web server",
            sub.name
        );
        assert_eq!(EdgeLab::resolve(sub), addr::WEB);
        let (code, body) = EdgeLab::http(sub, "http://www.example.test/");
        assert_eq!((code, body.as_str()), (200, "upstream page\n"));
    }
    let tcp = TcpSession::open(&lab.sub1);
    assert!(tcp.alive());
    assert!(tcp.wait_cut(Duration::from_millis(300)).is_none());
}
