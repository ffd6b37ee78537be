//! The WireGuard management plane end to end, with real processes and real
//! `wireguard-go` in namespaces: `outpost-controller serve` with a `[tunnel]` in `ctl`,
//! two agents in namespaces of their own, joined to it by veth links on a bridge.
//!
//! - enrol → tunnel up → first sync inside it, and a subscriber change reaches the agent
//!   through the tunnel; `outpost-agent status` and the site view show the tunnel;
//! - the agent API answers 404 on the public listener and inside the tunnel only from
//!   the credential's own tunnel address: another agent's credential is 403, and
//!   sending from another agent's tunnel address does not get through at all;
//! - the controller stopped (its interface goes with it), an agent restarted meanwhile
//!   has its tunnel back from its state dir; the controller started again restores
//!   both peers from its database and both agents are back in sync without enrolling;
//! - re-enrolling a site removes its old peer from the controller's interface.
//!
//! Figures are printed, never asserted: enrol command → first sync in the tunnel, and
//! change → applied at the agent over 100 changes (p50/p99). Deadlines only bound a
//! broken run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outpost_testkit::api::Api;
use outpost_testkit::netns::{Netns, unique, veth};
use outpost_testkit::process::{Proc, start, until, until_within};
use outpost_tests::system::{binaries, create_operator, enroll};
use outpost_tests::tunnel_bench::serve_hub;
use serde_json::{Value, json};

const CONTROLLER: &str = "192.0.2.1";
const API_PORT: u16 = 8443;
const TUNNEL_CONTROLLER: &str = "10.66.0.1";

/// A WireGuard interface name unique on the host: `/var/run/wireguard` is shared by
/// every namespace, and tests run in parallel.
fn iface(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id() % 100_000, unique())
}

struct Lab {
    ctl: Netns,
    agents: [Netns; 2],
    dir: tempfile::TempDir,
    controller_bin: PathBuf,
    agent_bin: PathBuf,
    ctl_iface: String,
    /// Every interface name handed out, to clean up after.
    ifaces: std::sync::Mutex<Vec<String>>,
}

impl Lab {
    fn new() -> Lab {
        let (controller_bin, agent_bin) = binaries();
        let ctl = Netns::new("wgc");
        let agents = [Netns::new("wga1"), Netns::new("wga2")];
        ctl.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        ctl.addr("br0", &format!("{CONTROLLER}/24"));
        ctl.run(&["ip", "link", "set", "br0", "up"]);
        for (i, a) in agents.iter().enumerate() {
            let port = format!("c{i}");
            veth(
                &ctl,
                &port,
                None,
                a,
                "e0",
                Some(&format!("192.0.2.{}/24", 11 + i)),
            );
            ctl.run(&["ip", "link", "set", &port, "master", "br0"]);
        }
        let ctl_iface = iface("wc");
        Lab {
            ctl,
            agents,
            dir: tempfile::tempdir().unwrap(),
            controller_bin,
            agent_bin,
            ctl_iface: ctl_iface.clone(),
            ifaces: std::sync::Mutex::new(vec![ctl_iface]),
        }
    }

    /// A new interface name, removed from /var/run/wireguard when the lab ends.
    fn iface(&self, tag: &str) -> String {
        let name = iface(tag);
        self.ifaces.lock().unwrap().push(name.clone());
        name
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    /// Starts the controller with its tunnel; returns it with its public address.
    fn controller(&self, listen: &str) -> (Proc, std::net::SocketAddr) {
        serve_hub(
            &self.ctl,
            &self.controller_bin,
            self.dir.path(),
            &self.data(),
            &self.ctl_iface,
            "10.66.0.0/24",
            listen,
        )
    }

    /// The lab with its controller started (on an address the OS picks) and its first
    /// operator logged in through it; needs `wireguard-go` and `wg`.
    fn started() -> (Lab, Proc, std::net::SocketAddr, Api) {
        outpost_testkit::peer::require("wireguard-go", "wireguard-go");
        outpost_testkit::peer::require("wg", "wireguard-tools");
        let lab = Lab::new();
        let (ctl, addr) = lab.controller(&format!("{CONTROLLER}:0"));
        create_operator(
            &lab.controller_bin,
            &lab.data(),
            "noc@isp.test",
            "tunnel-lab-pass",
        );
        let base = format!("http://{addr}");
        // The client's own thread is started inside `ctl`, so its sockets live there.
        let api = lab
            .ctl
            .within(move || Api::login(&base, "noc@isp.test", "tunnel-lab-pass", "tunnel lab"));
        (lab, ctl, addr, api)
    }

    /// Runs `outpost-agent rotate-key` for agent `i`, in its namespace.
    fn rotate_key(&self, i: usize) -> std::process::Output {
        self.agents[i]
            .cmd(self.agent_bin.to_str().unwrap())
            .args(["rotate-key", "--config"])
            .arg(self.state_dir(i).join("agent.toml"))
            .output()
            .unwrap()
    }

    fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent{i}"))
    }

    /// `outpost-agent enroll` in agent `i`'s namespace.
    fn enroll(&self, i: usize, base: &str, token: &str, iface: &str) {
        let cmd = self.agents[i].cmd(self.agent_bin.to_str().unwrap());
        let tunnel = ["--tunnel-interface", iface, "--tunnel-backend", "userspace"];
        let radius = ("127.0.0.1:0", "127.0.0.1:0");
        enroll(cmd, base, token, &self.state_dir(i), radius, &tunnel);
    }

    fn run_agent(&self, i: usize) -> Proc {
        start(
            self.agents[i]
                .cmd(self.agent_bin.to_str().unwrap())
                .arg("run")
                .arg("--config")
                .arg(self.state_dir(i).join("agent.toml")),
            "RADIUS auth on",
        )
    }

    fn agent_status(&self, i: usize) -> String {
        let out = self.agents[i]
            .cmd(self.agent_bin.to_str().unwrap())
            .arg("status")
            .arg("--config")
            .arg(self.state_dir(i).join("agent.toml"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn identity(&self, i: usize) -> Value {
        let text = std::fs::read_to_string(self.state_dir(i).join("identity.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The public keys of the controller interface's peers (`wg`, wireguard-tools).
    fn controller_peers(&self) -> Vec<String> {
        self.ctl
            .stdout(&["wg", "show", &self.ctl_iface, "peers"])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces' Drop kills wireguard-go with SIGKILL, which leaves its socket
        // file in the host-wide /var/run/wireguard.
        for name in self.ifaces.lock().unwrap().iter() {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

/// The revision agent `state`'s store holds, read from its SQLite file.
fn store_revision(db: &rusqlite::Connection) -> u64 {
    db.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
        r.get::<_, String>(0)
    })
    .ok()
    .and_then(|v| v.parse().ok())
    .unwrap_or(0)
}

fn open_store(state: &Path) -> rusqlite::Connection {
    let path = state.join("agent.db");
    until("the agent's store exists", || path.exists());
    rusqlite::Connection::open(path).unwrap()
}

/// An HTTP call from inside namespace `ns` (reqwest on a thread there), optionally
/// from a given local address; its status, or the transport error.
fn call_from(
    ns: &Netns,
    url: String,
    credential: String,
    local: Option<std::net::IpAddr>,
) -> Result<u16, String> {
    ns.within(move || {
        let http = reqwest::blocking::Client::builder()
            .local_address(local)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        http.get(url)
            .bearer_auth(credential)
            .header(
                outpost_protocol::PROTOCOL_HEADER,
                outpost_protocol::PROTOCOL_VERSION.to_string(),
            )
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "lab: needs root and netns"]
fn the_agent_api_lives_in_the_tunnel_and_survives_restarts_and_reenrolment() {
    let (lab, mut ctl, addr, api) = Lab::started();
    let base = format!("http://{addr}");
    let sites: Vec<i64> = (0..2)
        .map(|i| {
            api.post("/api/v1/sites", json!({ "name": format!("Tower {i}") }))["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let subs: Vec<i64> = sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            api.post(
                "/api/v1/subscribers",
                json!({ "username": format!("sub{i}"), "password": "pw-123", "site_id": site }),
            )["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let token = |site: i64| {
        api.post(
            &format!("/api/v1/sites/{site}/enrollment-tokens"),
            json!({}),
        )["secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let agent_view = |site: i64| api.get(&format!("/api/v1/sites/{site}/agent"));
    let in_sync = |site: i64| agent_view(site)["in_sync"] == true;
    let agent_ifaces = [lab.iface("wa"), lab.iface("wa")];

    // Enrol → tunnel up → first sync inside it.
    let mut agents = Vec::new();
    for i in 0..2 {
        let started = Instant::now();
        lab.enroll(i, &base, &token(sites[i]), &agent_ifaces[i]);
        let cfg = std::fs::read_to_string(lab.state_dir(i).join("agent.toml")).unwrap();
        assert!(
            cfg.contains(&format!(
                "controller_url = \"http://{TUNNEL_CONTROLLER}:{API_PORT}\""
            )),
            "the agent reaches the controller only inside the tunnel: {cfg}"
        );
        agents.push(lab.run_agent(i));
        let store = open_store(&lab.state_dir(i));
        until("the first snapshot applied", || store_revision(&store) > 0);
        println!(
            "agent {i}: enrol command start → first sync in the tunnel: {:?}",
            started.elapsed()
        );
        until("agent in sync", || in_sync(sites[i]));
    }
    assert_eq!(lab.controller_peers().len(), 2);

    // A change reaches the agent through the tunnel.
    let store0 = open_store(&lab.state_dir(0));
    let before = store_revision(&store0);
    api.patch(
        &format!("/api/v1/subscribers/{}", subs[0]),
        json!({ "status": "suspended" }),
    );
    until("the change applied at agent 0", || {
        store_revision(&store0) > before
    });
    until("agent 0 in sync", || in_sync(sites[0]));

    // What the agent and the controller show of the tunnel.
    let status = lab.agent_status(0);
    println!("{status}");
    assert!(status.contains("tunnel:            up on"), "{status}");
    assert!(status.contains("s ago"), "a handshake: {status}");
    assert!(status.contains("(reachable)"), "{status}");
    let view = agent_view(sites[0]);
    let identity0 = lab.identity(0);
    assert_eq!(
        format!("{}/32", view["tunnel_address"].as_str().unwrap()),
        identity0["tunnel"]["address"].as_str().unwrap()
    );
    let t = &view["tunnel"];
    assert!(t["last_handshake_at"].is_string(), "{view}");
    assert!(
        t["endpoint"].as_str().unwrap().starts_with("192.0.2.11:"),
        "{view}"
    );
    assert!(t["rx_bytes"].as_u64().unwrap() > 0 && t["tx_bytes"].as_u64().unwrap() > 0);

    // The agent API: not on the public listener, in the tunnel only from the
    // credential's own address.
    let cred = |i: usize| lab.identity(i)["credential"].as_str().unwrap().to_string();
    let tunnel_state = format!("http://{TUNNEL_CONTROLLER}:{API_PORT}/agent/v1/state?since=0");
    assert_eq!(
        call_from(
            &lab.agents[0],
            format!("{base}/agent/v1/state?since=0"),
            cred(0),
            None
        ),
        Ok(404)
    );
    assert_eq!(
        call_from(&lab.agents[0], tunnel_state.clone(), cred(0), None),
        Ok(200)
    );
    assert_eq!(
        call_from(&lab.agents[0], tunnel_state.clone(), cred(1), None),
        Ok(403),
        "another agent's credential"
    );
    // Sending from agent 1's tunnel address: WireGuard drops it (not agent 0's allowed IP).
    let addr1 = lab.identity(1)["tunnel"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    lab.agents[0].run(&["ip", "addr", "add", &addr1, "dev", &agent_ifaces[0]]);
    let spoofed = call_from(
        &lab.agents[0],
        tunnel_state.clone(),
        cred(0),
        Some(addr1.trim_end_matches("/32").parse().unwrap()),
    );
    assert!(
        spoofed.is_err(),
        "a spoofed source got an answer: {spoofed:?}"
    );
    lab.agents[0].run(&["ip", "addr", "del", &addr1, "dev", &agent_ifaces[0]]);

    // Change → applied at the agent, 100 times.
    let mut took = Vec::new();
    for n in 0..100 {
        let before = store_revision(&store0);
        let started = Instant::now();
        api.patch(
            &format!("/api/v1/subscribers/{}", subs[0]),
            json!({ "status": if n % 2 == 0 { "active" } else { "suspended" } }),
        );
        while store_revision(&store0) <= before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "change {n} never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "change → applied at the agent through the tunnel, 100 changes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );

    // The controller stops: its interface goes with it.
    ctl.stop(Duration::from_secs(10));
    assert!(
        !lab.ctl.ok(&["ip", "link", "show", &lab.ctl_iface]),
        "the controller's interface outlived it"
    );
    // Agent 1 restarted while the controller is down: its tunnel is back from its state
    // dir (up, the controller's peer configured; no handshake possible yet).
    agents[1].stop(Duration::from_secs(10));
    agents[1] = lab.run_agent(1);
    let status = lab.agent_status(1);
    assert!(status.contains("tunnel:            up on"), "{status}");
    assert!(status.contains("UNREACHABLE"), "{status}");

    // Back on the same address: both peers restored, both agents in sync again.
    let restarted = Instant::now();
    let (ctl2, _) = lab.controller(&addr.to_string());
    ctl = ctl2;
    assert_eq!(lab.controller_peers().len(), 2, "every peer restored");
    for sub in &subs {
        api.patch(
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "status": "active" }),
        );
    }
    // Bounded by the agents' backoff (up to 60 s between tries), not by the tunnel.
    for site in &sites {
        until_within(
            "agent back in sync after the restart",
            Duration::from_secs(90),
            || in_sync(*site),
        );
    }
    println!(
        "controller restart → both agents in sync (with a change each): {:?}",
        restarted.elapsed()
    );

    // Re-enrolment of site 0: its old peer is gone, the new one serves it.
    let old_key = lab.identity(0)["tunnel"]["controller_public_key"].clone();
    let old_peer = {
        let private = lab.identity(0)["wireguard_private_key"]
            .as_str()
            .unwrap()
            .to_string();
        outpost_wg::public_key(&private).unwrap()
    };
    assert!(lab.controller_peers().contains(&old_peer));
    agents[0].stop(Duration::from_secs(10));
    lab.enroll(0, &base, &token(sites[0]), &agent_ifaces[0]);
    let new_peer =
        outpost_wg::public_key(lab.identity(0)["wireguard_private_key"].as_str().unwrap()).unwrap();
    let peers = lab.controller_peers();
    assert!(
        !peers.contains(&old_peer),
        "the old peer is gone: {peers:?}"
    );
    assert!(peers.contains(&new_peer), "{peers:?}");
    assert_eq!(peers.len(), 2);
    assert_eq!(lab.identity(0)["tunnel"]["controller_public_key"], old_key);
    agents[0] = lab.run_agent(0);
    api.patch(
        &format!("/api/v1/subscribers/{}", subs[0]),
        json!({ "status": "suspended" }),
    );
    until("the re-enrolled agent in sync", || in_sync(sites[0]));

    drop(agents);
    ctl.stop(Duration::from_secs(10));
}

/// `outpost-agent run` with its stderr (the log) in `log`, to read what it did.
fn run_agent_logged(lab: &Lab, i: usize, log: &Path) -> Proc {
    use std::io::BufRead;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = lab.agents[i]
        .cmd(lab.agent_bin.to_str().unwrap())
        .arg("run")
        .arg("--config")
        .arg(lab.state_dir(i).join("agent.toml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(file)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("RADIUS auth on") {
                let _ = tx.send(());
            }
        }
    });
    let mut proc = Proc(child);
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        proc.kill9();
        panic!(
            "the agent did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    proc
}

fn public_key_of(identity: &Value) -> String {
    outpost_wg::public_key(identity["wireguard_private_key"].as_str().unwrap()).unwrap()
}

/// Key rotation, make before break, with real `wireguard-go` on both ends:
///
/// - `outpost-agent rotate-key` while the agent's long poll is in flight, and a change
///   made while the rotation is under way: no call of the agent fails (its log has no
///   failed sync or event delivery), the old key is gone from the controller's
///   interface (`wg show`) and the agent's old interface is down, the new key holds
///   the new address, an audit entry records it, and a change after it still reaches
///   the agent;
/// - a second rotation interrupted after the controller accepted the new key (agent
///   stopped, controller restarted meanwhile) ends with only the newest key on the
///   interface and the agent in sync.
#[test]
#[ignore = "lab: needs root and netns"]
fn a_key_rotation_is_make_before_break_with_a_long_poll_in_flight() {
    let (lab, mut ctl, addr, api) = Lab::started();
    let base = format!("http://{addr}");
    let site = api.post("/api/v1/sites", json!({ "name": "Tower R" }))["id"]
        .as_i64()
        .unwrap();
    let sub = api.post(
        "/api/v1/subscribers",
        json!({ "username": "rot0", "password": "pw-123", "site_id": site }),
    )["id"]
        .as_i64()
        .unwrap();
    let token = api.post(
        &format!("/api/v1/sites/{site}/enrollment-tokens"),
        json!({}),
    )["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let base_iface = lab.iface("wr");
    let alt_iface = outpost_agent::wg::alternate_name(&base_iface);
    lab.ifaces.lock().unwrap().push(alt_iface.clone());
    lab.enroll(0, &base, &token, &base_iface);
    let log = lab.dir.path().join("agent0.log");
    let mut agent = run_agent_logged(&lab, 0, &log);
    let in_sync = || api.get(&format!("/api/v1/sites/{site}/agent"))["in_sync"] == true;
    until("agent in sync", in_sync);
    let store = open_store(&lab.state_dir(0));
    let failures = || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .filter(|l| l.contains("sync failed") || l.contains("event delivery failed"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let change = |status: &str| {
        let before = store_revision(&store);
        api.patch(
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "status": status }),
        );
        until("the change applied at the agent", || {
            store_revision(&store) > before
        });
    };

    let old = lab.identity(0);
    let old_key = public_key_of(&old);
    let old_address = old["tunnel"]["address"].as_str().unwrap().to_string();
    assert_eq!(lab.controller_peers(), vec![old_key.clone()]);
    // In sync and idle: the agent's long poll (30 s) is in flight now.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let out = lab.rotate_key(0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second request while one is under way is refused.
    let again = lab.rotate_key(0);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already under way"));
    // Make: both keys on the controller's interface, each with its own address.
    until("the controller has the new key's peer too", || {
        lab.controller_peers().len() == 2
    });
    let status = lab.agent_status(0);
    println!("{status}");
    assert!(status.contains("key rotation:"), "{status}");
    // A change while both keys are up reaches the agent (through the old one: the long
    // poll in flight returns with it).
    change("suspended");
    until_within("the rotation done", Duration::from_secs(90), || {
        lab.identity(0)["rotation"].is_null()
    });
    println!("rotate-key → old key removed: {:?}", started.elapsed());
    let new = lab.identity(0);
    let new_key = public_key_of(&new);
    let new_address = new["tunnel"]["address"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    assert_ne!(new_address, old_address);
    // The old address is remembered, so a metrics listener written with it follows.
    assert_eq!(
        new["former_tunnel_addresses"],
        serde_json::json!([old_address])
    );
    assert_eq!(new["tunnel_interface"], json!(alt_iface));
    // Break: only the new key on the controller's interface, with the new address; the
    // agent's old interface is down.
    assert_eq!(lab.controller_peers(), vec![new_key.clone()]);
    let allowed = lab
        .ctl
        .stdout(&["wg", "show", &lab.ctl_iface, "allowed-ips"]);
    assert!(
        allowed.contains(&new_key) && allowed.contains(&new_address),
        "{allowed}"
    );
    assert!(!lab.agents[0].ok(&["ip", "link", "show", &base_iface]));
    let status = lab.agent_status(0);
    assert!(status.contains(&format!("up on {alt_iface}")), "{status}");
    assert!(!status.contains("key rotation:"), "{status}");
    // Sync still works, through the new key.
    change("active");
    until("agent in sync after the rotation", in_sync);
    assert_eq!(
        failures(),
        Vec::<String>::new(),
        "a call failed during the rotation"
    );
    let audit = api.get("/api/v1/audit?action=agent.rotate_key");
    let e = &audit["items"][0];
    assert_eq!(e["after"]["old_public_key"], json!(old_key), "{audit}");
    assert_eq!(e["after"]["public_key"], json!(new_key), "{audit}");
    let view = api.get(&format!("/api/v1/sites/{site}/agent"));
    assert_eq!(
        format!("{}/32", view["tunnel_address"].as_str().unwrap()),
        new_address
    );
    assert_eq!(view["wireguard_public_key"], json!(new_key));

    // A second rotation, interrupted once the controller accepted the key: the agent
    // stops, the controller restarts, the agent starts again; it ends working, on the
    // newest key only.
    let out = lab.rotate_key(0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("the controller accepted the second key", || {
        lab.identity(0)["rotation"]["tunnel"].is_object()
    });
    agent.stop(Duration::from_secs(10));
    ctl.stop(Duration::from_secs(10));
    let (ctl2, _) = lab.controller(&addr.to_string());
    ctl = ctl2;
    assert_eq!(
        lab.controller_peers().len(),
        2,
        "both keys restored mid-rotation"
    );
    agent = run_agent_logged(&lab, 0, &log);
    until_within("the second rotation done", Duration::from_secs(120), || {
        lab.identity(0)["rotation"].is_null()
    });
    let newest = lab.identity(0);
    let newest_key = public_key_of(&newest);
    assert!(newest_key != new_key && newest_key != old_key);
    assert_eq!(
        newest["tunnel_interface"],
        Value::Null,
        "back on [tunnel]'s name"
    );
    assert_eq!(lab.controller_peers(), vec![newest_key]);
    change("suspended");
    until_within(
        "agent in sync after the second rotation",
        Duration::from_secs(90),
        in_sync,
    );

    agent.stop(Duration::from_secs(10));
    ctl.stop(Duration::from_secs(10));
}
