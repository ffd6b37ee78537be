//! Running under systemd, without systemd (plain tier, no root):
//!
//! - `configs/outpost-controller.service` and `configs/outpost-agent.service` pass
//!   `systemd-analyze verify` (Debian `systemd`) with their ExecStart pointed at the
//!   binaries just built, with no warning about them, and keep what the README promises
//!   (Type=notify, a watchdog, StateDirectory, the hardening, the agent's capabilities).
//! - The real binaries speak the sd-notify protocol: each is started with
//!   `NOTIFY_SOCKET` naming a unix datagram socket this test owns (systemd is not PID 1
//!   here, so this is the notify protocol itself, with the test in systemd's place).
//!   READY=1 arrives only once the process answers: `/readyz` says 200 the moment it
//!   arrives, and for the agent a real `radclient` (Debian `freeradius-utils`) gets its
//!   Access-Accept; with `WATCHDOG_USEC` set, WATCHDOG=1 pings follow.
//!
//! No assertion depends on timing; waits have deadlines only against hangs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_protocol::NasKind;
use outpost_testkit::fixtures::{self, subscriber};
use outpost_testkit::process::Proc;
use outpost_testkit::radclient::Radclient;

const HANG_GUARD: Duration = Duration::from_secs(60);

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The unit as shipped, with `/usr/bin/NAME` replaced by the built binary.
fn unit_with_binary(name: &str, bin: &Path) -> String {
    let text = std::fs::read_to_string(configs().join(format!("{name}.service"))).unwrap();
    let installed = format!("ExecStart=/usr/bin/{name} ");
    assert!(
        text.contains(&installed),
        "{name}.service runs /usr/bin/{name}, where an operator installs it"
    );
    text.replace(&installed, &format!("ExecStart={} ", bin.display()))
}

fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(d: &'a [(String, String)], key: &str) -> Option<&'a str> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_keep_their_promises() {
    let analyze = outpost_testkit::peer::require("systemd-analyze", "systemd");
    let (controller, agent) = outpost_tests::system::binaries();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, bin) in [
        ("outpost-controller", &controller),
        ("outpost-agent", &agent),
    ] {
        let path = dir.path().join(format!("{name}.service"));
        std::fs::write(&path, unit_with_binary(name, bin)).unwrap();
        paths.push(path);
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // verify also loads the units ours pull in (network-online.target, …) and prints
    // what it thinks of the host's other units (e.g. a distribution unit's deprecated
    // directive); those lines name that unit's own file under /lib, /usr/lib or /etc.
    // Every other line is about ours, and fails the test.
    let ours: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let foreign = ["/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/"]
                .iter()
                .any(|p| l.starts_with(p));
            !foreign || l.contains("outpost-")
        })
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify (exit {:?}):\n{}",
        out.status.code(),
        ours.join("\n")
    );

    for (name, caps) in [
        ("outpost-controller", "CAP_NET_ADMIN"),
        ("outpost-agent", "CAP_NET_ADMIN CAP_NET_RAW"),
    ] {
        let unit = std::fs::read_to_string(configs().join(format!("{name}.service"))).unwrap();
        let d = directives(&unit);
        for (key, want) in [
            ("Type", "notify"),
            ("WatchdogSec", "30s"),
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectHome", "yes"),
            // Exactly these: no CAP_NET_BIND_SERVICE (every port is above 1024), no
            // CAP_SYS_ADMIN.
            ("CapabilityBoundingSet", caps),
            ("AmbientCapabilities", caps),
        ] {
            assert_eq!(get(&d, key), Some(want), "{name}: {key}");
        }
        assert!(
            get(&d, "StateDirectory").is_some_and(|s| s.starts_with("outpost")),
            "{name}: StateDirectory"
        );
        assert!(
            get(&d, "ExecStart").is_some_and(|s| s.contains("/etc/outpost/")),
            "{name}: the config is read from /etc/outpost"
        );
    }
}

/// A unix datagram socket in systemd's place.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message (its `KEY=value` lines), waiting up to the hang guard.
    fn next(&self, started: Instant) -> Vec<String> {
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    return String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string)
                        .collect();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(started.elapsed() < HANG_GUARD, "no sd-notify message came");
                }
                Err(e) => panic!("reading the notify socket: {e}"),
            }
        }
    }

    /// Waits for a message holding `line`; returns the messages seen before it.
    fn wait_for(&self, line: &str) -> Vec<Vec<String>> {
        let started = Instant::now();
        let mut before = Vec::new();
        loop {
            let m = self.next(started);
            if m.iter().any(|l| l == line) {
                return before;
            }
            before.push(m);
        }
    }
}

/// Starts `cmd` with the notify socket and a watchdog of 300 ms, collecting its stdout
/// lines on a channel.
fn start(
    mut cmd: Command,
    notify: &Notify,
    log: &str,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let log = std::fs::File::create(std::env::temp_dir().join(log)).unwrap();
    let mut child = cmd
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Proc(child), rx)
}

/// The first line already printed for which `f` says `Some`.
fn printed<T>(lines: &std::sync::mpsc::Receiver<String>, f: impl Fn(&str) -> Option<T>) -> T {
    loop {
        let line = lines
            .recv_timeout(HANG_GUARD)
            .expect("the process printed the line");
        if let Some(v) = f(&line) {
            return v;
        }
    }
}

fn http_get(url: &str) -> (u16, String) {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .timeout(HANG_GUARD)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

#[test]
fn the_controller_says_ready_only_once_it_answers_and_pings_the_watchdog() {
    let (controller, _) = outpost_tests::system::binaries();
    let data = tempfile::tempdir().unwrap();
    let notify = Notify::new();
    let mut cmd = Command::new(controller);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let (mut proc, lines) = start(cmd, &notify, "outpost-ops-controller.log");

    let before = notify.wait_for("READY=1");
    assert!(
        before.iter().flatten().all(|l| l != "WATCHDOG=1"),
        "no watchdog ping before READY: {before:?}"
    );
    // READY=1 came: the listener must answer, and say ready, now.
    let addr: SocketAddr = printed(&lines, outpost_testkit::process::listening_addr);
    let (status, body) = http_get(&format!("http://{addr}/readyz"));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(&format!("http://{addr}/healthz"));
    assert_eq!(status, 200);
    for _ in 0..2 {
        notify.wait_for("WATCHDOG=1");
    }
    proc.stop(Duration::from_secs(5));
}

#[test]
fn the_agent_says_ready_only_once_radius_answers_and_pings_the_watchdog() {
    let (_, agent) = outpost_tests::system::binaries();
    let state = tempfile::tempdir().unwrap();
    const SECRET: &str = "notify-secret";
    outpost_agent::store::Store::open(&state.path().join("agent.db"), 1000)
        .unwrap()
        .apply(&fixtures::snapshot(
            2,
            vec![subscriber(1, "amina", "pa55word")],
            vec![fixtures::nas(1, "127.0.0.1", SECRET, NasKind::Generic)],
        ))
        .unwrap();
    std::fs::write(
        state.path().join("identity.json"),
        r#"{"agent_id":1,"site_id":1,"credential":"c","wireguard_private_key":""}"#,
    )
    .unwrap();
    let config = state.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n\
             # Nothing listens there: the agent runs from its store.\n\
             controller_url = \"http://127.0.0.1:9\"\n\
             [radius]\nauth_listen = \"127.0.0.1:0\"\nacct_listen = \"127.0.0.1:0\"\n\
             [edge]\ncoa_bind = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            state.path().display().to_string()
        ),
    )
    .unwrap();
    let notify = Notify::new();
    let mut cmd = Command::new(agent);
    cmd.arg("run").arg("--config").arg(&config);
    let (mut proc, lines) = start(cmd, &notify, "outpost-ops-agent.log");

    let before = notify.wait_for("READY=1");
    assert!(
        before.iter().flatten().all(|l| l != "WATCHDOG=1"),
        "no watchdog ping before READY: {before:?}"
    );
    let auth: SocketAddr = printed(&lines, |l| {
        l.strip_prefix("RADIUS auth on ")
            .and_then(|r| r.split(',').next())
            .and_then(|a| a.parse().ok())
    });
    let metrics: SocketAddr = printed(&lines, |l| {
        l.strip_prefix("metrics on http://")
            .and_then(|r| r.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
    });
    // One try: it must answer the first time, READY having been said.
    let sent = Radclient::new(auth, SECRET)
        .tries(1, 5)
        .send("auth", "User-Name = amina\nUser-Password = pa55word\n");
    assert_eq!(
        sent.reply.as_ref().map(|r| r.code.as_str()),
        Some("Access-Accept"),
        "{}",
        sent.text()
    );
    let (status, body) = http_get(&format!("http://{metrics}/readyz"));
    assert_eq!(status, 200, "{body}");
    let (status, text) = http_get(&format!("http://{metrics}/metrics"));
    assert_eq!(status, 200);
    let e = outpost_testkit::prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        e.value(
            "outpost_agent_radius_requests_total",
            &[("code", "access_accept"), ("reason", "accepted")]
        ),
        Some(1.0),
        "{text}"
    );
    for _ in 0..2 {
        notify.wait_for("WATCHDOG=1");
    }
    proc.stop(Duration::from_secs(5));
}
