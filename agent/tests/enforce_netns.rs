//! Lab: the [`Enforcer`] against the kernel's nftables, in network namespaces.
//!
//! ```text
//!  sub1 (10.1.1.2, fd00:1::2) ─┐                 ┌─ up (198.51.100.2, fd00:99::2): HTTP :80, TCP echo :7000,
//!                              ├─ bng (router) ──┤    a UDP "resolver" on :53 at each address
//!  sub2 (10.1.2.2, fd00:2::2) ─┘  Enforcer,      └─ resolvers 198.51.100.53, fd00:99::53
//!                                 portal :8081
//! ```
//!
//! The Enforcer runs in this process, on a thread that entered the `bng` namespace
//! (`setns`), so its netlink socket and its `nft` children live there. Servers and
//! clients likewise run on threads that entered their namespace. The "resolver" is a
//! stand-in that echoes datagrams: what matters is whether they get through, not DNS.
//! Needs root, `ip`, `nft`, `ping` (Debian: iproute2, nftables, iputils-ping).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use outpost_agent::enforce::netlink::Conn;
use outpost_agent::enforce::{EnforceConfig, Enforcer};
use outpost_testkit::netns::{Netns, enter, run_in as ns_run, veth, within as in_ns};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Work for the thread that holds the enforcer in the BNG's namespace.
type Job = Box<dyn FnOnce(&mut Option<Enforcer>) + Send>;

/// Removes the namespaces (and with them links and nft tables) even when a check fails.
struct Lab {
    namespaces: [Netns; 4],
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            namespaces: ["sub1", "sub2", "bng", "up"].map(Netns::new),
        };
        let [sub1, sub2, bng, up] = &lab.namespaces;
        veth(sub1, "eth0", None, bng, "sub1", None);
        veth(sub2, "eth0", None, bng, "sub2", None);
        veth(up, "eth0", None, bng, "upstream", None);
        for (ns, dev, cidrs) in [
            (sub1, "eth0", &["10.1.1.2/24", "fd00:1::2/64"][..]),
            (sub2, "eth0", &["10.1.2.2/24", "fd00:2::2/64"]),
            (bng, "sub1", &["10.1.1.1/24", "fd00:1::1/64"]),
            (bng, "sub2", &["10.1.2.1/24", "fd00:2::1/64"]),
            (bng, "upstream", &["198.51.100.1/24", "fd00:99::1/64"]),
            // 203.0.113.10 plays the payment portal (in `allow`), reached through `up`.
            (
                up,
                "eth0",
                &[
                    "203.0.113.10/24",
                    "198.51.100.2/24",
                    "198.51.100.53/24",
                    "fd00:99::2/64",
                    "fd00:99::53/64",
                ],
            ),
        ] {
            for cidr in cidrs {
                ns.addr(dev, cidr);
            }
        }
        for (ns, v4, v6) in [
            (sub1, "10.1.1.1", "fd00:1::1"),
            (sub2, "10.1.2.1", "fd00:2::1"),
        ] {
            ns.run(&["ip", "route", "add", "default", "via", v4]);
            ns.run(&["ip", "-6", "route", "add", "default", "via", v6]);
        }
        up.run(&["ip", "route", "add", "10.1.0.0/16", "via", "198.51.100.1"]);
        up.run(&["ip", "-6", "route", "add", "fd00::/16", "via", "fd00:99::1"]);
        bng.run(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        bng.run(&[
            "ip",
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "198.51.100.2",
        ]);
        lab
    }

    fn ns(&self, i: usize) -> &str {
        &self.namespaces[i].name
    }
}

/// A TCP server in `ns` on `[::]:port`; `reply` makes the answer to what was read.
fn serve_tcp(ns: &str, port: u16, reply: fn(&[u8]) -> Vec<u8>, once: bool) {
    let listener = in_ns(ns, move || TcpListener::bind(("::", port)).unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&reply(&buf[..n])).is_err() || once {
                        break;
                    }
                }
            });
        }
    });
}

fn http(body: &'static str) -> fn(&[u8]) -> Vec<u8> {
    match body {
        "upstream" => |_| b"HTTP/1.0 200 OK\r\n\r\nupstream".to_vec(),
        _ => |_| b"HTTP/1.0 200 OK\r\n\r\nsuspended".to_vec(),
    }
}

/// Bound to one address, as a DNS server is, so replies leave from the address asked.
fn serve_udp_echo(ns: &str, addr: &'static str) {
    let sock = in_ns(ns, move || UdpSocket::bind((addr, 53)).unwrap());
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

fn http_get(ns: &str, to: &str) -> std::io::Result<String> {
    let to: SocketAddr = SocketAddr::new(to.parse().unwrap(), 80);
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
    })
}

fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q", to])
        .output()
        .expect("ping runs (Debian: iputils-ping)")
        .status
        .success()
}

fn udp_query(ns: &str, to: &str) -> bool {
    let to = SocketAddr::new(to.parse().unwrap(), 53);
    in_ns(ns, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s.send_to(b"query", to).unwrap();
        let mut buf = [0u8; 64];
        matches!(s.recv_from(&mut buf), Ok((5, _)))
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tables(ns: &str) -> String {
    String::from_utf8(ns_run(ns, &["nft", "list", "tables"]).stdout).unwrap()
}

fn config() -> EnforceConfig {
    EnforceConfig {
        resolvers: vec![ip("198.51.100.53"), ip("fd00:99::53")],
        allow: vec!["203.0.113.0/24".parse().unwrap()],
        subscriber_interfaces: vec!["sub1".into(), "sub2".into()],
        ..EnforceConfig::default()
    }
}

#[test]
#[ignore = "lab: needs root and netns"]
fn blocks_redirects_and_survives_restart() {
    let lab = Lab::new();
    let (sub1, sub2, bng, up) = (
        lab.ns(0).to_string(),
        lab.ns(1).to_string(),
        lab.ns(2).to_string(),
        lab.ns(3).to_string(),
    );
    serve_tcp(&up, 80, http("upstream"), true);
    serve_tcp(&up, 7000, |b| b.to_vec(), false);
    serve_tcp(&bng, 8081, http("suspended"), true);
    for a in ["198.51.100.2", "198.51.100.53", "fd00:99::2", "fd00:99::53"] {
        serve_udp_echo(&up, a);
    }
    // Someone else's tables in the same namespace, one with our table's name in another family.
    ns_run(
        &bng,
        &[
            "nft",
            "add table inet foreign; add chain inet foreign c { type filter hook forward priority 0; policy accept; }; add table ip outpost",
        ],
    );

    // Before anything: everyone reaches everything.
    assert!(ping(&sub1, "198.51.100.2"));
    assert_eq!(http_get(&sub1, "198.51.100.2").unwrap(), "upstream");

    let s1: Vec<IpAddr> = vec![ip("10.1.1.2"), ip("fd00:1::2")];
    let bng2 = bng.clone();
    let s1c = s1.clone();
    // An open connection from sub1, made before the block.
    let mut open = in_ns(&sub1, || {
        let mut s =
            TcpStream::connect_timeout(&"198.51.100.2:7000".parse().unwrap(), TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s
    });

    // Start the agent side: a thread living in bng, driven over a channel.
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let worker = thread::spawn(move || {
        enter(&bng2).unwrap();
        let mut enforcer: Option<Enforcer> = None;
        for job in rx {
            job(&mut enforcer);
        }
    });
    let on_bng = |f: Job| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        tx.send(Box::new(move |e: &mut Option<Enforcer>| {
            f(e);
            done_tx.send(()).unwrap();
        }))
        .unwrap();
        done_rx.recv().expect("bng worker panicked");
    };

    // Block sub1 (v4 and v6) by a full reconcile, as at the agent's start.
    on_bng(Box::new(move |e| {
        let mut en = Enforcer::new(config()).unwrap();
        let r = en.full(&s1c.iter().copied().collect()).unwrap();
        assert!(r.skeleton_written);
        assert_eq!(r.blocked, 2);
        en.verify(&s1c, &[ip("10.1.2.2")]).unwrap();
        // A second full over a current table writes nothing but elements.
        assert!(
            !en.full(&s1c.iter().copied().collect())
                .unwrap()
                .skeleton_written
        );
        *e = Some(en);
    }));

    // The open flow is cut: sub1's next segment gets a reset from the BNG.
    open.write_all(b"again").unwrap();
    let mut buf = [0u8; 16];
    let cut = open.read(&mut buf);
    assert!(
        matches!(&cut, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{cut:?}"
    );

    assert!(!ping(&sub1, "198.51.100.2"), "blocked ping got through");
    assert!(!ping(&sub1, "fd00:99::2"), "blocked ping6 got through");
    assert!(
        udp_query(&sub1, "198.51.100.53"),
        "resolver unreachable while blocked"
    );
    assert!(
        udp_query(&sub1, "fd00:99::53"),
        "v6 resolver unreachable while blocked"
    );
    assert!(
        !udp_query(&sub1, "198.51.100.2"),
        "port 53 at a non-resolver got through"
    );
    assert_eq!(http_get(&sub1, "198.51.100.2").unwrap(), "suspended");
    assert_eq!(http_get(&sub1, "fd00:99::2").unwrap(), "suspended");
    // The payment portal (an `allow` network) is reached as it is, HTTP included.
    assert!(
        ping(&sub1, "203.0.113.10"),
        "allowed network unreachable while blocked"
    );
    assert_eq!(http_get(&sub1, "203.0.113.10").unwrap(), "upstream");
    let tcp_other = in_ns(&sub1, || {
        TcpStream::connect_timeout(&"198.51.100.2:7000".parse().unwrap(), TIMEOUT)
    });
    assert!(tcp_other.is_err(), "new TCP to a non-HTTP port got through");
    // The other subscriber is untouched.
    assert!(ping(&sub2, "198.51.100.2"));
    assert!(ping(&sub2, "fd00:99::2"));
    assert_eq!(http_get(&sub2, "198.51.100.2").unwrap(), "upstream");
    assert!(udp_query(&sub2, "198.51.100.2"));

    // Unblock by an incremental change: everything comes back.
    let s1c = s1.clone();
    on_bng(Box::new(move |e| {
        let en = e.as_mut().unwrap();
        let r = en.change(&[], &s1c).unwrap();
        assert_eq!((r.removed, r.blocked), (2, 0));
        en.verify(&[], &s1c).unwrap();
        assert!(en.enforced().is_empty());
        // Removing what is not there is not an error (the kernel drifted): it converges.
        en.change(&[ip("10.1.2.77")], &[ip("10.1.1.2")]).unwrap();
        en.change(&[], &[ip("10.1.2.77")]).unwrap();
        assert!(en.change(&[ip("10.9.9.9")], &[ip("10.9.9.9")]).is_err());
    }));
    assert!(ping(&sub1, "198.51.100.2"));
    assert!(ping(&sub1, "fd00:99::2"));
    assert_eq!(http_get(&sub1, "198.51.100.2").unwrap(), "upstream");
    assert!(udp_query(&sub1, "198.51.100.2"));

    // Block again incrementally, then "crash": the enforcer goes away without a word.
    let s1c = s1.clone();
    on_bng(Box::new(move |e| {
        let mut en = e.take().unwrap();
        en.change(&s1c, &[]).unwrap();
        drop(en);
    }));
    assert!(
        !ping(&sub1, "198.51.100.2"),
        "the table went away with the enforcer"
    );

    // Restart: a new enforcer (with a changed portal port, so the skeleton is rewritten
    // too) reconciles a bigger set while a poller watches sub1's address.
    let stop = Arc::new(AtomicBool::new(false));
    let (polls, absent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (stop, polls, absent, bng) = (stop.clone(), polls.clone(), absent.clone(), bng.clone());
        thread::spawn(move || {
            enter(&bng).unwrap();
            let conn = Conn::open().unwrap();
            while !stop.load(Ordering::SeqCst) {
                let found = conn
                    .contains("outpost", |_| "blocked4", &[ip("10.1.1.2")])
                    .unwrap();
                polls.fetch_add(1, Ordering::SeqCst);
                if !found[0] {
                    absent.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let s1c = s1.clone();
    let polls2 = polls.clone();
    on_bng(Box::new(move |e| {
        while polls2.load(Ordering::SeqCst) < 10 {
            thread::sleep(Duration::from_millis(1));
        }
        let mut blocked: BTreeSet<IpAddr> = s1c.iter().copied().collect();
        blocked.extend((0..20_000u32).map(|i| IpAddr::from((0x0a40_0000 + i).to_be_bytes())));
        let mut en = Enforcer::new(EnforceConfig {
            portal_port: 8082,
            ..config()
        })
        .unwrap();
        assert!(en.full(&blocked).unwrap().skeleton_written);
        for _ in 0..3 {
            en.full(&blocked).unwrap();
        }
        // And back to the real config: another rewrite, same elements.
        let mut en = Enforcer::new(config()).unwrap();
        assert!(en.full(&blocked).unwrap().skeleton_written);
        en.verify(&s1c, &[ip("10.1.2.2")]).unwrap();
        *e = Some(en);
    }));
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    eprintln!(
        "restart: {} polls of the blocked element during the re-apply",
        polls.load(Ordering::SeqCst)
    );
    assert!(polls.load(Ordering::SeqCst) > 10);
    assert_eq!(
        absent.load(Ordering::SeqCst),
        0,
        "sub1 was unblocked during the restart ({} polls)",
        polls.load(Ordering::SeqCst)
    );
    assert!(!ping(&sub1, "198.51.100.2"));
    assert_eq!(http_get(&sub1, "198.51.100.2").unwrap(), "suspended");

    // A full reconcile to fewer addresses unblocks the rest.
    on_bng(Box::new(|e| {
        let en = e.as_mut().unwrap();
        let r = en.full(&[ip("10.64.0.1")].into_iter().collect()).unwrap();
        assert_eq!(r.blocked, 1);
        en.verify(
            &[ip("10.64.0.1")],
            &[ip("10.1.1.2"), ip("fd00:1::2"), ip("10.64.0.2")],
        )
        .unwrap();
    }));
    assert!(ping(&sub1, "198.51.100.2"));

    // Someone deletes an element behind our back: verify names it, full puts it back.
    ns_run(
        &bng,
        &["nft", "delete element inet outpost blocked4 { 10.64.0.1 }"],
    );
    on_bng(Box::new(|e| {
        let en = e.as_mut().unwrap();
        let err = en.verify(&[ip("10.64.0.1")], &[]).unwrap_err();
        assert!(err.to_string().contains("10.64.0.1"), "{err}");
        en.full(&en.enforced().clone()).unwrap();
        en.verify(&[ip("10.64.0.1")], &[]).unwrap();
    }));

    // Someone deletes a chain behind our back: verify notices, full repairs.
    ns_run(&bng, &["nft", "flush chain inet outpost blocked_in4"]);
    on_bng(Box::new(|e| {
        let en = e.as_mut().unwrap();
        assert!(en.verify(&[], &[]).is_err());
        assert!(en.full(&en.enforced().clone()).unwrap().skeleton_written);
        en.verify(&[ip("10.64.0.1")], &[]).unwrap();
    }));

    // clear removes our table and nothing else.
    let before = tables(&bng);
    assert!(
        before.contains("table inet outpost")
            && before.contains("table inet foreign")
            && before.contains("table ip outpost"),
        "{before}"
    );
    on_bng(Box::new(|e| {
        drop(e.take());
        Enforcer::clear("outpost").unwrap();
        // Clearing what is gone already is fine.
        Enforcer::clear("outpost").unwrap();
    }));
    let after = tables(&bng);
    assert!(!after.contains("table inet outpost"), "{after}");
    assert!(
        after.contains("table inet foreign") && after.contains("table ip outpost"),
        "{after}"
    );
    drop(tx);
    worker.join().unwrap();
}
