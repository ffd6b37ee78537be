//! The tunnel plane under N agents: the machinery of `benches/tunnel.rs` (method
//! there) and its smoke test.
//!
//! What is real: the controller (`outpost-controller serve` with a userspace `[tunnel]`,
//! its `wireguard-go` hub and one peer per agent), N enrolments through the public API,
//! and per agent its own key, overlay address and `wireguard-go` interface brought up
//! by the agent's own code (`outpost_agent::wg::Tunnel::up`) with the agent's
//! re-handshake while unreachable (`rekey_while_unreachable`). What is simulated: the
//! agents' processes. All N interfaces live in one namespace (`spokes`) and are driven
//! by one process; each agent is a task long-polling `/agent/v1/state` with its own
//! credential from its own overlay address (a source-address rule per agent routes it
//! through its own interface), backing off 1 s doubling to 60 s on failure as the
//! agent's sync loop does. No store, no enforcement, no acknowledgement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use outpost_protocol as proto;
use outpost_testkit::api::Api;
use outpost_testkit::netns::{Netns, unique, veth};
use outpost_testkit::process::{Proc, start_listening};

const CONTROLLER: &str = "192.0.2.1";
const API_PORT: u16 = 8443;
const TUNNEL_CONTROLLER: &str = "10.66.0.1";

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub agents: usize,
    /// Enrolling all N through the API (sites, tokens, enrolments).
    pub enrol: Duration,
    /// Bringing up the N agent interfaces until every agent had its first answer.
    pub first_sync: Duration,
    /// Long polls in flight: the fewest seen while holding.
    pub held_min: usize,
    pub hold: Duration,
    /// Controller process: CPU (% of one core) over the hold and RSS after it (KiB).
    pub controller_cpu_pct: f64,
    pub controller_rss_kib: u64,
    /// Its hub `wireguard-go`, the same.
    pub hub_cpu_pct: f64,
    pub hub_rss_kib: u64,
    /// Controller restart: from the new process's spawn, and from it listening, until
    /// every agent had an answer from it.
    pub resync_from_start: Duration,
    pub resync_from_listening: Duration,
    /// Failed polls in all (the controller's restart makes every held poll fail once).
    pub failed_polls: u64,
}

/// The controller and agent binaries of this build's profile (release under
/// `cargo bench`, debug under `cargo test`), built when missing.
pub fn controller_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("not run from a cargo target directory")?;
    let target = profile_dir.parent().context("no target directory")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "outpost-controller",
        "--bin",
        "outpost-controller",
    ])
    .arg("--target-dir")
    .arg(target);
    if release {
        cmd.arg("--release");
    }
    ensure!(
        cmd.status()?.success(),
        "building outpost-controller failed"
    );
    Ok(profile_dir.join("outpost-controller"))
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 of stat (utime, stime); `rest` starts at field 3.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn ticks_per_sec() -> f64 {
    100.0
}

struct Lab {
    ctl: Netns,
    spokes: Netns,
    dir: tempfile::TempDir,
    bin: PathBuf,
    hub: String,
}

impl Lab {
    fn controller(&self, listen: &str) -> (Proc, std::net::SocketAddr) {
        serve_hub(
            &self.ctl,
            &self.bin,
            self.dir.path(),
            &self.dir.path().join("data"),
            &self.hub,
            "10.66.0.0/22",
            listen,
        )
    }
}

/// Starts `bin serve` inside `ns` as the WireGuard plane's hub: a userspace interface
/// `iface` over `network` (the controller on its first address, the agent API on port
/// 8443), the public API on `listen`, endpoint 192.0.2.1:51820. Its config is written to
/// `dir/controller.toml`, its data kept in `data`. Returns it with its public address.
pub fn serve_hub(
    ns: &Netns,
    bin: &Path,
    dir: &Path,
    data: &Path,
    iface: &str,
    network: &str,
    listen: &str,
) -> (Proc, std::net::SocketAddr) {
    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\n[tunnel]\nbackend = \"userspace\"\ninterface = \"{iface}\"\n\
             network = \"{network}\"\nlisten_port = 51820\nendpoints = [\"{CONTROLLER}:51820\"]\n\
             api_port = {API_PORT}\n"
        ),
    )
    .unwrap();
    start_listening(
        ns.cmd(bin.to_str().unwrap())
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(data),
    )
}

/// Per agent: when its last answer came (ms since `epoch`), 0 before any.
struct Shared {
    epoch: Instant,
    last_ok: Vec<AtomicU64>,
    in_flight: AtomicUsize,
    failed: AtomicU64,
}

async fn poll_loop(
    i: usize,
    http: reqwest::Client,
    credential: String,
    wait: u32,
    shared: Arc<Shared>,
    link: Arc<outpost_agent::sync::Link>,
) {
    let url = format!(
        "http://{TUNNEL_CONTROLLER}:{API_PORT}{}",
        proto::paths::STATE
    );
    let mut since = 0u64;
    let mut backoff = Duration::from_secs(1);
    loop {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = async {
            http.get(format!("{url}?since={since}&wait={wait}"))
                .bearer_auth(&credential)
                .header(proto::PROTOCOL_HEADER, proto::PROTOCOL_VERSION.to_string())
                .timeout(Duration::from_secs(wait as u64 + 15))
                .send()
                .await?
                .error_for_status()?
                .json::<proto::StateResponse>()
                .await
        }
        .await;
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok(resp) => {
                since = resp.revision;
                let ms = shared.epoch.elapsed().as_millis() as u64;
                shared.last_ok[i].store(ms.max(1), Ordering::Relaxed);
                link.reachable.store(true, Ordering::Relaxed);
                backoff = Duration::from_secs(1);
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                link.reachable.store(false, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

fn all_since(shared: &Shared, ms: u64) -> bool {
    shared
        .last_ok
        .iter()
        .all(|t| t.load(Ordering::Relaxed) > ms)
}

async fn until_all(shared: &Shared, ms: u64, deadline: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while !all_since(shared, ms) {
        if started.elapsed() > deadline {
            let n = shared
                .last_ok
                .iter()
                .filter(|t| t.load(Ordering::Relaxed) > ms)
                .count();
            bail!(
                "only {n} of {} agents answered within {deadline:?}",
                shared.last_ok.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One run with `n` agents, holding their long polls (`wait` s each) for `hold`.
pub fn run(n: usize, hold: Duration, wait: u32) -> anyhow::Result<Figures> {
    ensure!((1..=1000).contains(&n), "1 to 1000 agents");
    let bin = controller_binary()?;
    // Every wireguard-go watches its socket with an inotify instance of its own, and
    // the default limit (128 per user) stops the 128th.
    let limit = "/proc/sys/fs/inotify/max_user_instances";
    let have: usize = std::fs::read_to_string(limit)?.trim().parse()?;
    if have < n + 64 {
        std::fs::write(limit, (n + 64).to_string())
            .context("raising fs.inotify.max_user_instances")?;
        eprintln!(
            "raised fs.inotify.max_user_instances from {have} to {}",
            n + 64
        );
    }
    let ctl = Netns::new("tbc");
    let spokes = Netns::new("tbs");
    veth(
        &ctl,
        "e0",
        Some(&format!("{CONTROLLER}/24")),
        &spokes,
        "e0",
        Some("192.0.2.2/24"),
    );
    let tag = format!("{}x{}", std::process::id() % 100_000, unique());
    let lab = Lab {
        ctl,
        spokes,
        dir: tempfile::tempdir()?,
        bin,
        hub: format!("tbh{tag}"),
    };
    let (mut ctl_proc, addr) = lab.controller(&format!("{CONTROLLER}:0"));
    let base = format!("http://{addr}");
    crate::system::create_operator(
        &lab.bin,
        &lab.dir.path().join("data"),
        "noc@isp.test",
        "tunnel-bench-pass",
    );
    let enrolled = Instant::now();
    let enrolments: Vec<(proto::EnrollResponse, String)> = {
        let base = base.clone();
        lab.ctl.within(move || -> anyhow::Result<_> {
            let api = Api::login(&base, "noc@isp.test", "tunnel-bench-pass", "tunnel bench");
            let http = reqwest::blocking::Client::new();
            (0..n)
                .map(|i| {
                    let site = api.post(
                        "/api/v1/sites",
                        serde_json::json!({ "name": format!("Tower {i}") }),
                    )["id"]
                        .as_i64()
                        .context("site id")?;
                    let token = api.post(
                        &format!("/api/v1/sites/{site}/enrollment-tokens"),
                        serde_json::json!({}),
                    )["secret"]
                        .as_str()
                        .context("token")?
                        .to_string();
                    let private = outpost_wg::generate_private_key();
                    let resp: proto::EnrollResponse = http
                        .post(format!("{base}{}", proto::paths::ENROLL))
                        .json(&proto::EnrollRequest {
                            token,
                            wireguard_public_key: outpost_wg::public_key(&private)?,
                            hostname: format!("bench-{i}"),
                            agent_version: "bench".into(),
                            protocol_version: proto::PROTOCOL_VERSION,
                        })
                        .send()?
                        .error_for_status()?
                        .json()?;
                    Ok((resp, private))
                })
                .collect()
        })?
    };
    let enrol = enrolled.elapsed();
    // The same command again, for the restart (inside `spokes`' thread).
    let mut restart = lab.ctl.cmd(lab.bin.to_str().unwrap());
    restart
        .args(["serve", "--config"])
        .arg(lab.dir.path().join("controller.toml"))
        .arg("--data-dir")
        .arg(lab.dir.path().join("data"));
    let result = lab
        .spokes
        .within(move || -> anyhow::Result<(Figures, Proc)> {
            // Its threads are started from this one, so they are inside `spokes` too.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let shared = Arc::new(Shared {
                epoch: Instant::now(),
                last_ok: (0..n).map(|_| AtomicU64::new(0)).collect(),
                in_flight: AtomicUsize::new(0),
                failed: AtomicU64::new(0),
            });
            let started = Instant::now();
            let mut tunnels = Vec::new();
            for (i, (resp, private)) in enrolments.iter().enumerate() {
                let params = resp
                    .tunnel
                    .clone()
                    .context("the controller runs a tunnel")?;
                let id = outpost_agent::config::Identity {
                    agent_id: resp.agent_id,
                    site_id: resp.site_id,
                    credential: resp.credential.clone(),
                    wireguard_private_key: private.clone(),
                    tunnel: Some(params.clone()),
                    tunnel_interface: None,
                    rotation: None,
                    former_tunnel_addresses: vec![],
                };
                let cfg = outpost_agent::wg::TunnelConfig {
                    interface: format!("tb{i}x{tag}"),
                    backend: outpost_wg::Backend::Userspace,
                };
                let t = Arc::new(
                    outpost_agent::wg::Tunnel::up(&cfg, &id).map_err(anyhow::Error::from)?,
                );
                // This agent's calls leave through its own interface whatever the main
                // table says: a rule for its source address.
                let address = params.address.trim_end_matches("/32").to_string();
                let table = (1000 + i).to_string();
                for args in [
                    vec!["rule", "add", "from", &address, "table", &table],
                    vec![
                        "route",
                        "replace",
                        TUNNEL_CONTROLLER,
                        "dev",
                        &cfg.interface,
                        "table",
                        &table,
                    ],
                ] {
                    let ok = Command::new("ip").args(&args).status()?.success();
                    ensure!(ok, "ip {}", args.join(" "));
                }
                tunnels.push((t, address, resp.credential.clone()));
            }
            let agents = &tunnels;
            let figures = rt.block_on(async move {
                for (i, (t, address, credential)) in agents.iter().enumerate() {
                    let link = Arc::new(outpost_agent::sync::Link::default());
                    tokio::spawn(outpost_agent::wg::rekey_while_unreachable(
                        t.clone(),
                        link.clone(),
                    ));
                    let http = reqwest::Client::builder()
                        .local_address(Some(address.parse()?))
                        .connect_timeout(Duration::from_secs(5))
                        .build()?;
                    tokio::spawn(poll_loop(
                        i,
                        http,
                        credential.clone(),
                        wait,
                        shared.clone(),
                        link,
                    ));
                }
                until_all(&shared, 0, Duration::from_secs(120 + n as u64)).await?;
                let first_sync = started.elapsed();
                // Every agent is back in its long poll.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let pid = ctl_proc.pid();
                let hub = children(pid)
                    .into_iter()
                    .next()
                    .context("the hub's wireguard-go")?;
                let (c0, h0, t0) = (cpu_ticks(pid), cpu_ticks(hub), Instant::now());
                let mut held_min = usize::MAX;
                while t0.elapsed() < hold {
                    held_min = held_min.min(shared.in_flight.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let secs = t0.elapsed().as_secs_f64();
                let pct = |a: u64, b: u64| (b - a) as f64 / ticks_per_sec() / secs * 100.0;
                let (controller_cpu_pct, hub_cpu_pct) =
                    (pct(c0, cpu_ticks(pid)), pct(h0, cpu_ticks(hub)));
                let (controller_rss_kib, hub_rss_kib) = (rss_kib(pid), rss_kib(hub));
                let failed_before = shared.failed.load(Ordering::Relaxed);

                // The controller restarts on the same address; its interface goes and comes.
                tokio::task::block_in_place(|| ctl_proc.stop(Duration::from_secs(10)));
                let spawned = Instant::now();
                let mark = shared.epoch.elapsed().as_millis() as u64;
                let (p, _) = tokio::task::block_in_place(|| start_listening(&mut restart));
                ctl_proc = p;
                let listening = Instant::now();
                until_all(&shared, mark, Duration::from_secs(300)).await?;
                let f = Figures {
                    agents: n,
                    enrol,
                    first_sync,
                    held_min,
                    hold,
                    controller_cpu_pct,
                    controller_rss_kib,
                    hub_cpu_pct,
                    hub_rss_kib,
                    resync_from_start: spawned.elapsed(),
                    resync_from_listening: listening.elapsed(),
                    failed_polls: shared.failed.load(Ordering::Relaxed) - failed_before,
                };
                Ok::<_, anyhow::Error>((f, ctl_proc))
            });
            // The interfaces go down before the namespaces do.
            drop(rt);
            drop(tunnels);
            figures
        });
    let (figures, mut ctl_proc) = result?;
    ctl_proc.stop(Duration::from_secs(10));
    Ok(figures)
}

/// The figures as the benchmark prints them.
pub fn report(f: &Figures) -> String {
    format!(
        "agents:                         {}\n\
         enrol all (API):                {:.1?}\n\
         tunnels up → all first answers: {:.1?}\n\
         long polls held (fewest seen):  {} over {:?}\n\
         controller CPU / RSS:           {:.1} % of a core / {:.1} MiB\n\
         hub wireguard-go CPU / RSS:     {:.1} % of a core / {:.1} MiB\n\
         restart → all resynced:         {:.2?} from spawn, {:.2?} from listening\n\
         failed polls (the restart):     {}\n",
        f.agents,
        f.enrol,
        f.first_sync,
        f.held_min,
        f.hold,
        f.controller_cpu_pct,
        f.controller_rss_kib as f64 / 1024.0,
        f.hub_cpu_pct,
        f.hub_rss_kib as f64 / 1024.0,
        f.resync_from_start,
        f.resync_from_listening,
        f.failed_polls,
    )
}
