//! The netns lab: a topology of network namespaces joined by veth links, built per test
//! and torn down when the test ends, even when it fails (every piece is a guard).
//!
//! [`EdgeLab`] is a site in miniature:
//!
//! ```text
//!  sub1 100.64.0.2 ─┐                                          ┌ up 203.0.113.10 (HTTP :80, TCP echo :9000)
//!                   ├─ br0 100.64.0.1 [bng] 203.0.113.1 ───────┤    203.0.113.53 (DNS, dnsmasq)
//!  sub2 100.64.0.3 ─┤        │ 198.51.100.2
//!  sub3 100.64.0.4 ─┘        │
//!                            └──────────── ctl 198.51.100.1 (outpost-controller)
//! ```
//!
//! Subscribers are IPoE hosts with static addresses behind the BNG's bridge; the BNG
//! routes (no NAT) and runs the agent; `up` is the internet; `ctl` the controller.
//! Nothing here reaches outside the namespaces the lab made.

use std::path::Path;
use std::process::Stdio;

pub use outpost_testkit::netns::{Netns, veth};
use outpost_testkit::peer;
use outpost_testkit::process::{DEADLINE, Proc, start};

/// Whether this process can build the lab: root, `ip netns`, and every tool the lab
/// runs, each named with its Debian package when missing.
pub fn available() -> Result<(), String> {
    outpost_testkit::netns::available()?;
    for (tool, package) in [
        ("nft", "nftables"),
        ("dnsmasq", "dnsmasq-base"),
        ("curl", "curl"),
        ("dig", "bind9-dnsutils"),
        ("python3", "python3"),
    ] {
        if peer::find(tool).is_none() {
            return Err(format!(
                "{tool} is missing: install the Debian package {package}"
            ));
        }
    }
    Ok(())
}

/// Addresses of the [`EdgeLab`].
pub mod addr {
    pub const SUB1: &str = "100.64.0.2";
    pub const SUB2: &str = "100.64.0.3";
    /// A subscriber whose address comes from the NAS (reported in accounting).
    pub const SUB3: &str = "100.64.0.4";
    pub const BNG_SUB: &str = "100.64.0.1";
    pub const WEB: &str = "203.0.113.10";
    pub const DNS: &str = "203.0.113.53";
    pub const BNG_UP: &str = "203.0.113.1";
    pub const CTL: &str = "198.51.100.1";
    pub const BNG_CTL: &str = "198.51.100.2";
}

/// The site in miniature (see the module doc). Dropping it kills every process and
/// deletes every namespace (and with them every link and nftables table).
pub struct EdgeLab {
    pub sub1: Netns,
    pub sub2: Netns,
    pub sub3: Netns,
    pub bng: Netns,
    pub up: Netns,
    pub ctl: Netns,
    /// Web server, TCP echo and DNS in `up`; dropped before the namespaces.
    pub services: Vec<Proc>,
}

impl EdgeLab {
    /// Builds the namespaces, links, addresses and routes, and starts the upstream
    /// services: an HTTP server answering "upstream page", a TCP echo on :9000, and
    /// dnsmasq answering `www.example.test` with the web server's address.
    /// Checks the lab can be built ([`available`]; fails the test saying what is
    /// missing), then builds it with a fresh work directory, returned with it (drop the
    /// lab first).
    pub fn start() -> (tempfile::TempDir, EdgeLab) {
        available().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lab = EdgeLab::new(dir.path());
        (dir, lab)
    }

    pub fn new(work: &Path) -> EdgeLab {
        let lab = EdgeLab {
            sub1: Netns::new("sub1"),
            sub2: Netns::new("sub2"),
            sub3: Netns::new("sub3"),
            bng: Netns::new("bng"),
            up: Netns::new("up"),
            ctl: Netns::new("ctl"),
            services: Vec::new(),
        };
        lab.bng.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        lab.bng
            .run(&["ip", "addr", "add", "100.64.0.1/24", "dev", "br0"]);
        lab.bng.run(&["ip", "link", "set", "br0", "up"]);
        for (sub, ip, port) in [
            (&lab.sub1, addr::SUB1, "s1"),
            (&lab.sub2, addr::SUB2, "s2"),
            (&lab.sub3, addr::SUB3, "s3"),
        ] {
            veth(sub, "eth0", Some(&format!("{ip}/24")), &lab.bng, port, None);
            lab.bng.run(&["ip", "link", "set", port, "master", "br0"]);
            sub.run(&["ip", "route", "add", "default", "via", addr::BNG_SUB]);
        }
        veth(
            &lab.bng,
            "up0",
            Some("203.0.113.1/24"),
            &lab.up,
            "eth0",
            Some("203.0.113.10/24"),
        );
        lab.up
            .run(&["ip", "addr", "add", "203.0.113.53/24", "dev", "eth0"]);
        lab.up
            .run(&["ip", "route", "add", "100.64.0.0/24", "via", addr::BNG_UP]);
        veth(
            &lab.bng,
            "ctl0",
            Some("198.51.100.2/30"),
            &lab.ctl,
            "eth0",
            Some("198.51.100.1/30"),
        );
        lab.bng.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut lab = lab;
        lab.start_upstream(work);
        lab
    }

    fn start_upstream(&mut self, work: &Path) {
        let www = work.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "upstream page\n").unwrap();
        let http = format!(
            "import http.server, functools, sys\n\
             h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={www:?})\n\
             s = http.server.ThreadingHTTPServer(({web:?}, 80), h)\n\
             print('serving', flush=True)\n\
             s.serve_forever()\n",
            www = www.display().to_string(),
            web = addr::WEB
        );
        self.services
            .push(start(self.up.cmd("python3").args(["-c", &http]), "serving"));
        let echo = format!(
            "import socket, threading\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(({web:?}, 9000)); s.listen(16)\n\
             print('echoing', flush=True)\n\
             def serve(c):\n\
             \x20   while True:\n\
             \x20       d = c.recv(4096)\n\
             \x20       if not d: break\n\
             \x20       c.sendall(d)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   threading.Thread(target=serve, args=(c,), daemon=True).start()\n",
            web = addr::WEB
        );
        self.services
            .push(start(self.up.cmd("python3").args(["-c", &echo]), "echoing"));
        // dnsmasq says nothing on stdout; a wrapper prints once it answers.
        let dns = format!(
            "dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
             --listen-address={dns} --bind-interfaces --address=/www.example.test/{web} \
             --pid-file={pid} --log-facility=- & \
             for i in $(seq 100); do dig +short +time=1 +tries=1 @{dns} www.example.test | grep -q . && break; sleep 0.1; done; \
             echo answering; wait",
            dns = addr::DNS,
            web = addr::WEB,
            pid = work.join("dnsmasq.pid").display()
        );
        self.services
            .push(start(self.up.cmd("sh").args(["-c", &dns]), "answering"));
    }

    /// A DNS query from `from` to the lab's resolver; the answer's first line.
    pub fn resolve(from: &Netns) -> String {
        from.stdout(&[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            "@203.0.113.53",
            "www.example.test",
        ])
        .trim()
        .to_string()
    }

    /// `curl http://www.example.test/` (through the lab's resolver) from `from`:
    /// (HTTP status, body). Status 0 when nothing answered.
    pub fn http(from: &Netns, url: &str) -> (u16, String) {
        let out = from.stdout(&[
            "curl",
            "-s",
            "-m",
            "3",
            "--resolve",
            "www.example.test:80:203.0.113.10",
            "-w",
            "\n%{http_code}",
            url,
        ]);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for EdgeLab {
    fn drop(&mut self) {
        self.services.clear();
    }
}

/// A long-lived TCP connection from a subscriber to the upstream echo server, driven by
/// a small client inside the subscriber's namespace: it echoes a line every 100 ms and
/// prints `cut` and exits when the connection fails (a reset, or 2 s without an echo).
pub struct TcpSession {
    proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
}

impl TcpSession {
    /// Opens it; returns once the first echo came back.
    pub fn open(from: &Netns) -> TcpSession {
        let script = format!(
            "import socket, time, sys\n\
             c = socket.create_connection(({web:?}, 9000), timeout=2)\n\
             c.settimeout(2)\n\
             print('open', flush=True)\n\
             try:\n\
             \x20   while True:\n\
             \x20       c.sendall(b'x\\n')\n\
             \x20       if not c.recv(16): raise OSError('closed')\n\
             \x20       print('alive', flush=True)\n\
             \x20       time.sleep(0.1)\n\
             except OSError as e:\n\
             \x20   print('cut', type(e).__name__, e, flush=True)\n",
            web = addr::WEB
        );
        let mut child = from
            .cmd("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let s = TcpSession {
            proc: Proc(child),
            lines: rx,
        };
        let first = s.lines.recv_timeout(DEADLINE).expect("connection opens");
        assert_eq!(first, "open");
        s
    }

    /// Waits until the client reports the connection cut; returns its report.
    pub fn wait_cut(&self, within: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("cut") => return Some(l),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Whether it is still echoing (an echo arrived in the last second).
    pub fn alive(&self) -> bool {
        while self.lines.try_recv().is_ok() {}
        matches!(
            self.lines.recv_timeout(std::time::Duration::from_secs(1)),
            Ok(l) if l == "alive"
        )
    }

    /// The client's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}
