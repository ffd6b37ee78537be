//! The RADIUS benchmark (issues 4 and 14), side by side against the agent (the real
//! `outpost-agent` binary answering from its local store, controller unreachable) and
//! FreeRADIUS 3 (`files` module holding the same users, `detail` for accounting), each
//! pinned to one core, both driven by [`crate::radload`] from another core. Its lanes:
//!
//! - `pap`: PAP Access-Requests with Message-Authenticator for 100,000 subscribers,
//!   closed loop (the maximum rate, and requests per CPU-second);
//! - `acct`: Accounting-Requests (Start, Interim-Update, Stop of each session), closed
//!   loop: the agent answers each only once it is durable (group-committed, `fsync`ed),
//!   FreeRADIUS once its `detail` module wrote it to the file;
//! - `latency`: the same PAP and accounting requests paced at one fixed rate on both
//!   servers (by default half of FreeRADIUS's maximum of this run), p50/p99/p99.9 from
//!   each request's due time;
//! - `flood`: a paced stream of valid logins alone, then beside a paced flood of wrong
//!   passwords (10,000/s), on both: the valid logins' p99 with and without the flood.
//!
//! This module sets the two servers up and measures them; `benches/radius.rs` runs
//! them one after the other and prints the figures.
//!
//! The method follows `anchors/01_radius.sh`: FreeRADIUS gets its own raddb copy with
//! `recv_buff = 4194304` and `max_requests = 1048576`, without which it drops requests
//! at these rates for reasons that have nothing to do with its speed. Both servers
//! answer the same Access-Accept content: Framed-IP-Address, Session-Timeout,
//! Acct-Interim-Interval, Mikrotik-Rate-Limit and Class.
//!
//! FreeRADIUS's `reject_delay` is set to 0 (its default, 1 s, holds every reject a
//! second to slow password guessing: a policy, not work, and the agent has none), so the
//! flood's rejects are answered when they are decided, like the agent's.
//!
//! Server CPU time is the process's `utime + stime` from `/proc/<pid>/stat` over the
//! load window; resident memory is `VmRSS` after it.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use outpost_agent::config::{Config, Identity, RadiusConfig, SyncConfig};
use outpost_agent::store::Store;
use outpost_protocol::{NasKind, NasState, Rate, StateResponse, SubscriberState};
use outpost_testkit::fixtures;

use crate::radload::{self, LoadConfig, LoadReport, PacedLane, RequestKind};

/// The shared secret of the benchmark's NAS, on both servers.
pub const SECRET: &str = "benchsecret";
/// Every subscriber's plan: 50 Mbit/s down, 10 Mbit/s up.
const RATE: Rate = Rate {
    download_kbps: 50_000,
    upload_kbps: 10_000,
    burst_download_kbps: None,
    burst_upload_kbps: None,
};
/// Acct-Interim-Interval the site asks for.
const INTERIM_SECS: u32 = 300;
/// How long every subscriber has left; sent as Session-Timeout.
const VALIDITY_SECS: i64 = 30 * 24 * 3600;

/// The benchmark's knobs. [`BenchConfig::from_env`] reads them from the environment.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Subscribers on both servers (`SUBSCRIBERS`, 100,000).
    pub subscribers: u64,
    /// Requests per measured run (`REQUESTS`, 200,000)...
    pub requests: u64,
    /// ...or this long, whichever ends first (`MAX_SECS`, 10).
    pub max_duration: Duration,
    /// Generator sockets (`SOCKETS`, 8).
    pub sockets: usize,
    /// Outstanding requests per socket (`WINDOW`, 32).
    pub window: usize,
    /// Per-request timeout (`TIMEOUT_MS`, 1000).
    pub timeout: Duration,
    /// Measured runs per server (`RUNS`, 3); the medians are the figures.
    pub runs: usize,
    /// Unmeasured requests after each start, so both servers are measured warm
    /// (`WARMUP`, 10,000).
    pub warmup: u64,
    /// The core the servers are pinned to (`SERVER_CPU`, 1).
    pub server_cpu: usize,
    /// The core the generator is pinned to (`GENERATOR_CPU`, 0).
    pub generator_cpu: usize,
    /// Requests carry Message-Authenticator and both servers require it
    /// (`MESSAGE_AUTHENTICATOR`, 1).
    pub message_authenticator: bool,
    /// `RUST_LOG` for the agent (`AGENT_RUST_LOG`); unset, the agent logs at its own
    /// default, as deployed.
    pub agent_log: Option<String>,
    /// Which lanes to run (`LANES`, comma-separated, `pap,acct,latency,flood`).
    pub lanes: Vec<String>,
    /// The fixed rate of the `latency` lane (`PACED_RATE`); unset, half of
    /// FreeRADIUS's median maximum of the same kind in this run (5,000/s when that
    /// lane did not run).
    pub paced_rate: Option<f64>,
    /// How long each paced run lasts (`PACED_SECS`, 5).
    pub paced_duration: Duration,
    /// Wrong passwords per second in the `flood` lane (`FLOOD_RATE`, 10,000).
    pub flood_rate: f64,
    /// Valid logins per second in the `flood` lane (`VALID_RATE`, 1,000).
    pub valid_rate: f64,
    /// The nice value both servers and the generator run at (`NICE`, 0). On a machine
    /// others are using, -20 keeps their work from taking turns on the measured cores
    /// (it shows as latency, and as the generator sending late); both servers get it.
    pub nice: i32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            subscribers: 100_000,
            requests: 200_000,
            max_duration: Duration::from_secs(10),
            sockets: 8,
            window: 32,
            timeout: Duration::from_secs(1),
            runs: 3,
            warmup: 10_000,
            server_cpu: 1,
            generator_cpu: 0,
            message_authenticator: true,
            agent_log: None,
            lanes: ["pap", "acct", "latency", "flood"]
                .map(String::from)
                .to_vec(),
            paced_rate: None,
            paced_duration: Duration::from_secs(5),
            flood_rate: 10_000.0,
            valid_rate: 1_000.0,
            nice: 0,
        }
    }
}

impl BenchConfig {
    /// The defaults, overridden by the environment variables named on each field.
    pub fn from_env() -> anyhow::Result<Self> {
        use crate::system::env_or as var;
        let d = Self::default();
        Ok(Self {
            subscribers: var("SUBSCRIBERS", d.subscribers)?,
            requests: var("REQUESTS", d.requests)?,
            max_duration: Duration::from_secs_f64(var("MAX_SECS", d.max_duration.as_secs_f64())?),
            sockets: var("SOCKETS", d.sockets)?,
            window: var("WINDOW", d.window)?,
            timeout: Duration::from_millis(var("TIMEOUT_MS", 1000)?),
            runs: var("RUNS", d.runs)?.max(1),
            warmup: var("WARMUP", d.warmup)?,
            server_cpu: var("SERVER_CPU", d.server_cpu)?,
            generator_cpu: var("GENERATOR_CPU", d.generator_cpu)?,
            message_authenticator: var::<u8>("MESSAGE_AUTHENTICATOR", 1)? != 0,
            // Empty counts as unset: an empty RUST_LOG would turn the agent's logs off.
            agent_log: std::env::var("AGENT_RUST_LOG")
                .ok()
                .filter(|v| !v.is_empty()),
            lanes: match std::env::var("LANES") {
                Ok(v) => v
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
                Err(_) => d.lanes,
            },
            paced_rate: match std::env::var("PACED_RATE") {
                Ok(v) => Some(v.parse().context("PACED_RATE")?),
                Err(_) => None,
            },
            paced_duration: Duration::from_secs_f64(var(
                "PACED_SECS",
                d.paced_duration.as_secs_f64(),
            )?),
            flood_rate: var("FLOOD_RATE", d.flood_rate)?,
            valid_rate: var("VALID_RATE", d.valid_rate)?,
            nice: var("NICE", d.nice)?,
        })
    }

    /// Whether lane `name` is to run.
    pub fn runs_lane(&self, name: &str) -> bool {
        self.lanes.iter().any(|l| l == name)
    }

    /// The measured accounting load against `target` (an accounting socket): the same
    /// sockets, window and budget as [`BenchConfig::load`].
    pub fn accounting_load(&self, target: SocketAddr) -> LoadConfig {
        LoadConfig {
            kind: RequestKind::Accounting,
            ..self.load(target)
        }
    }

    /// A paced lane of `kind` requests at `rate` per second for
    /// [`BenchConfig::paced_duration`] against `target`, over `sockets` sockets.
    pub fn paced(&self, target: SocketAddr, kind: RequestKind, rate: f64) -> PacedLane {
        // Enough sockets that a second's worth fits in their windows at 255 each.
        let sockets = ((rate / 255.0).ceil() as usize).clamp(2, 64);
        PacedLane {
            load: LoadConfig {
                kind,
                requests: u64::MAX,
                max_duration: self.paced_duration,
                sockets,
                window: 255,
                timeout: self.timeout,
                message_authenticator: self.message_authenticator,
                ..LoadConfig::new(target, SECRET, self.subscribers)
            },
            rate,
        }
    }

    /// The measured load against `target`.
    pub fn load(&self, target: SocketAddr) -> LoadConfig {
        LoadConfig {
            requests: self.requests,
            max_duration: self.max_duration,
            sockets: self.sockets,
            window: self.window,
            timeout: self.timeout,
            message_authenticator: self.message_authenticator,
            ..LoadConfig::new(target, SECRET, self.subscribers)
        }
    }
}

// ---------------------------------------------------------------- the subscribers

/// Subscriber `k`'s static address: 10.64.0.0 onwards, so every one is distinct.
fn static_ipv4(k: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 64 + (k >> 16) as u8, (k >> 8) as u8, k as u8)
}

/// Subscriber `k` as the agent's store holds it: active, on [`RATE`], with a static
/// address and one session allowed, expiring 30 days after `now`.
pub fn subscriber(k: u64, now: i64) -> SubscriberState {
    SubscriberState {
        expires_at: Some(now + VALIDITY_SECS),
        static_ipv4: Some(static_ipv4(k).to_string()),
        rate: Some(RATE),
        ..fixtures::subscriber(k as i64 + 1, &radload::username(k), &radload::password(k))
    }
}

/// The benchmark's NAS: a MikroTik at 127.0.0.1.
pub fn nas(require_message_authenticator: bool) -> NasState {
    NasState {
        require_message_authenticator,
        ..fixtures::nas(1, "127.0.0.1", SECRET, NasKind::Mikrotik)
    }
}

/// The site snapshot the agent's store is loaded with: `subscribers` subscribers and
/// [`nas`].
pub fn snapshot(subscribers: u64, require_message_authenticator: bool) -> StateResponse {
    let now = fixtures::unix_now();
    StateResponse {
        settings: Some(fixtures::settings(INTERIM_SECS)),
        ..fixtures::snapshot(
            1,
            (0..subscribers).map(|k| subscriber(k, now)).collect(),
            vec![nas(require_message_authenticator)],
        )
    }
}

/// Subscriber `k` as a FreeRADIUS `users` entry answering what the agent answers for
/// [`subscriber`]`(k, _)`.
pub fn freeradius_user(k: u64) -> String {
    format!(
        "{user} Cleartext-Password := \"{password}\"\n\
         \tFramed-IP-Address = {ip},\n\
         \tSession-Timeout = {VALIDITY_SECS},\n\
         \tAcct-Interim-Interval = {INTERIM_SECS},\n\
         \tMikrotik-Rate-Limit = \"{rate}\",\n\
         \tClass = \"{class}\"\n\n",
        user = radload::username(k),
        password = radload::password(k),
        ip = static_ipv4(k),
        rate = outpost_agent::radius::access::mikrotik_rate_limit(&RATE),
        class = format_args!("outpost:subscriber:{}", k + 1),
    )
}

// ---------------------------------------------------------------- processes

/// A server process the benchmark started. Dropping it kills it (by its pid, through
/// its [`Child`]) and reaps it, also when the benchmark panics.
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    /// Where its output goes; quoted when it dies early.
    log: PathBuf,
}

impl ServerProcess {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time it has used so far, user + system, all threads.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Its resident memory now, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// Fails, quoting the end of its log, if it has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server under test, listening.
pub struct RunningServer {
    /// `outpost-agent` or `freeradius`.
    pub name: &'static str,
    /// Its auth socket.
    pub auth: SocketAddr,
    /// Its accounting socket.
    pub acct: SocketAddr,
    /// The process.
    pub process: ServerProcess,
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            // Linux has used 100 on every mainstream architecture for decades.
            .unwrap_or(100.0)
    })
}

/// `utime + stime` of the process whose `stat` file is `path`, in seconds.
fn process_cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may hold spaces: count from after it.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: no command name"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("{path}: too few fields"))?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// Sets the nice value of the calling thread (and of the threads it starts after) to
/// `nice`; the generator runs on the thread that calls this.
pub fn renice_this_thread(nice: i32) -> anyhow::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
        .unwrap_or_else(std::process::id);
    let status = Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &tid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running renice (util-linux)")?;
    ensure!(
        status.success(),
        "renice to {nice} failed (needs root below 0)"
    );
    Ok(())
}

/// The command that starts a server: `nice -n N taskset -c CPU program`.
fn server_command(cfg: &BenchConfig, program: &Path) -> Command {
    let mut command = Command::new("nice");
    command
        .args(["-n", &cfg.nice.to_string(), "taskset", "-c"])
        .arg(cfg.server_cpu.to_string())
        .arg(program);
    command
}

/// Pins every thread of this process to `cpu`. Threads and processes started later
/// inherit it, so call it before starting the generator's runtime; the servers are
/// started under `taskset` of their own.
pub fn pin_this_process(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    ensure!(
        status.success(),
        "taskset could not pin the benchmark to CPU {cpu}"
    );
    Ok(())
}

/// Sends single requests for subscriber 0 until one is accepted: the server is then up
/// and has its users loaded.
fn wait_until_answering(
    server: &mut RunningServer,
    cfg: &BenchConfig,
    within: Duration,
) -> anyhow::Result<()> {
    let probe = LoadConfig {
        users: 1,
        requests: 1,
        sockets: 1,
        window: 1,
        timeout: Duration::from_millis(300),
        message_authenticator: cfg.message_authenticator,
        ..LoadConfig::new(server.auth, SECRET, 1)
    };
    let started = Instant::now();
    loop {
        server.process.ensure_running()?;
        let report = radload::run_blocking(&probe)?;
        if report.accepts == 1 {
            return Ok(());
        }
        ensure!(
            started.elapsed() < within,
            "{} did not accept a request within {within:?} ({report:?})",
            server.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the warm-up load against a server that has just answered its first request.
fn warm_up(server: &RunningServer, cfg: &BenchConfig) -> anyhow::Result<()> {
    if cfg.warmup > 0 {
        let load = LoadConfig {
            requests: cfg.warmup,
            ..cfg.load(server.auth)
        };
        radload::run_blocking(&load)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the agent

/// The real `outpost-agent` binary, built in release next to this benchmark (or the
/// one `OUTPOST_AGENT_BIN` names).
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("OUTPOST_AGENT_BIN") {
        return Ok(PathBuf::from(path));
    }
    // A benchmark runs as <target>/release/deps/<name>-<hash>.
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the benchmark does not run from a cargo target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A plain `cargo bench` builds only libraries of other packages, not their binaries.
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "outpost-agent",
            "--bin",
            "outpost-agent",
        ])
        .arg("--target-dir")
        .arg(target)
        .status()
        .context("running cargo to build outpost-agent")?;
    ensure!(status.success(), "building outpost-agent failed");
    Ok(target.join("release").join("outpost-agent"))
}

/// An agent state directory (store with the benchmark's subscribers, identity, config)
/// from which [`AgentSite::start`] runs the binary; removed when dropped.
pub struct AgentSite {
    binary: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl AgentSite {
    /// Writes the store, an identity and a config whose controller is a closed local
    /// port, so the agent answers from its store as it does when the controller is away.
    pub fn prepare(binary: &Path, cfg: &BenchConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("outpost-radius-bench-agent")
            .tempdir()?;
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir)?;
        {
            let store = Store::open(
                &state_dir.join("agent.db"),
                SyncConfig::default().max_outbox,
            )?;
            store.apply(&snapshot(cfg.subscribers, cfg.message_authenticator))?;
        }
        Identity {
            agent_id: 1,
            site_id: 1,
            credential: "offline-benchmark".into(),
            wireguard_private_key: String::new(),
            tunnel: None,
            tunnel_interface: None,
            rotation: None,
            former_tunnel_addresses: vec![],
        }
        .save(&state_dir)?;
        // Bound and released: nothing listens there while the agent runs.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.path().join("agent.toml");
        Config {
            state_dir,
            controller_url: format!("http://{closed}"),
            radius: RadiusConfig {
                auth_listen: "127.0.0.1:0".parse()?,
                acct_listen: "127.0.0.1:0".parse()?,
                ..RadiusConfig::default()
            },
            sync: SyncConfig::default(),
            enforce: None,
            edge: Default::default(),
            shaping: None,
            wan: None,
            metrics: None,
            tunnel: None,
        }
        .save(&config)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            config,
            dir,
        })
    }

    /// Starts `outpost-agent run` pinned to the server core and waits until it accepts.
    pub fn start(&self, cfg: &BenchConfig) -> anyhow::Result<RunningServer> {
        let log = self.dir.path().join("agent.log");
        let mut command = server_command(cfg, &self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        if let Some(filter) = &cfg.agent_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let mut process = ServerProcess {
            name: "outpost-agent",
            child,
            log,
        };
        // The agent says where it listens on stdout; a thread reads it (and keeps
        // draining it, so the agent never blocks on a full pipe).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("RADIUS auth on ")
                    && let Some((auth, acct)) = rest.split_once(", accounting on ")
                {
                    let _ = tx.send((auth.to_string(), acct.to_string()));
                }
            }
        });
        let (auth, acct) = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok((auth, acct)) => {
                    let parse = |addr: &str| {
                        addr.parse::<SocketAddr>()
                            .with_context(|| format!("agent address {addr:?}"))
                    };
                    break (parse(&auth)?, parse(&acct)?);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => process.ensure_running()?,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    process.ensure_running()?;
                    bail!("outpost-agent closed its stdout without saying where it listens");
                }
            }
        };
        let mut server = RunningServer {
            name: "outpost-agent",
            auth,
            acct,
            process,
        };
        wait_until_answering(&mut server, cfg, Duration::from_secs(60))?;
        warm_up(&server, cfg)?;
        Ok(server)
    }
}

// ---------------------------------------------------------------- FreeRADIUS

/// A FreeRADIUS configuration directory of its own (a copy of the Debian raddb) from
/// which [`FreeRadiusSite::start`] runs `freeradius -f`; removed when dropped.
pub struct FreeRadiusSite {
    raddb: PathBuf,
    auth: SocketAddr,
    acct: SocketAddr,
    dir: tempfile::TempDir,
}

/// Where Debian's `freeradius` package keeps its configuration.
const DEBIAN_RADDB: &str = "/etc/freeradius/3.0";
/// The listen socket's receive buffer (see the module docs).
const FREERADIUS_RECV_BUFF: u32 = 4_194_304;
/// FreeRADIUS counts finished requests for `cleanup_delay` against this limit.
const FREERADIUS_MAX_REQUESTS: u32 = 1_048_576;

impl FreeRadiusSite {
    /// Copies the Debian raddb and configures it: the `files` module with the
    /// benchmark's users, one auth listener, one client (the NAS).
    pub fn prepare(cfg: &BenchConfig) -> anyhow::Result<Self> {
        let installed = Command::new("freeradius")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(
            installed && Path::new(DEBIAN_RADDB).is_dir(),
            "FreeRADIUS 3 is not installed: apt-get install freeradius"
        );
        let dir = tempfile::Builder::new()
            .prefix("outpost-radius-bench-fr")
            .tempdir()?;
        let w = dir.path();
        let raddb = w.join("raddb");
        let status = Command::new("cp")
            .arg("-a")
            .arg(DEBIAN_RADDB)
            .arg(&raddb)
            .status()?;
        ensure!(status.success(), "copying {DEBIAN_RADDB} failed");
        for sub in ["sites-enabled", "mods-enabled"] {
            for entry in std::fs::read_dir(raddb.join(sub))? {
                std::fs::remove_file(entry?.path())?;
            }
        }
        for module in ["always", "pap", "chap"] {
            std::os::unix::fs::symlink(
                format!("../mods-available/{module}"),
                raddb.join("mods-enabled").join(module),
            )?;
        }
        for sub in ["log", "run"] {
            std::fs::create_dir(w.join(sub))?;
        }

        let conf_path = raddb.join("radiusd.conf");
        let conf = std::fs::read_to_string(&conf_path)?;
        let conf: Vec<String> = conf
            .lines()
            .map(|line| {
                let setting = |key: &str, value: &Path| {
                    line.starts_with(&format!("{key} = "))
                        .then(|| format!("{key} = {}", value.display()))
                };
                setting("raddbdir", &raddb)
                    .or_else(|| setting("logdir", &w.join("log")))
                    .or_else(|| setting("run_dir", &w.join("run")))
                    .or_else(|| {
                        line.starts_with("max_requests = ")
                            .then(|| format!("max_requests = {FREERADIUS_MAX_REQUESTS}"))
                    })
                    // See the module docs.
                    .or_else(|| {
                        line.trim()
                            .starts_with("reject_delay = ")
                            .then(|| "\treject_delay = 0".to_string())
                    })
                    // Runs as whoever runs the benchmark, owning its files.
                    .or_else(|| {
                        matches!(line.trim(), "user = freerad" | "group = freerad")
                            .then(|| format!("#{line}"))
                    })
                    .unwrap_or_else(|| line.to_string())
            })
            .collect();
        std::fs::write(&conf_path, conf.join("\n") + "\n")?;

        let free_port = || -> anyhow::Result<SocketAddr> {
            Ok((
                Ipv4Addr::LOCALHOST,
                UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port(),
            )
                .into())
        };
        let auth = free_port()?;
        let mut acct = free_port()?;
        while acct == auth {
            acct = free_port()?;
        }
        // Accounting is written to a `detail` file, as in anchors/01_radius.sh.
        std::fs::create_dir(w.join("acct"))?;
        std::fs::write(
            raddb.join("mods-enabled").join("detail"),
            format!(
                "detail {{\n\tfilename = {}\n\tescape_filenames = no\n\tpermissions = 0600\n\theader = \"%t\"\n}}\n",
                w.join("acct").join("detail").display()
            ),
        )?;
        let require = if cfg.message_authenticator {
            "yes"
        } else {
            "no"
        };
        std::fs::write(
            raddb.join("clients.conf"),
            format!(
                "client bench {{\n\tipaddr = 127.0.0.1\n\tsecret = {SECRET}\n\
                 \trequire_message_authenticator = {require}\n}}\n"
            ),
        )?;
        let users = w.join("users");
        std::fs::write(
            raddb.join("mods-enabled").join("files"),
            format!(
                "files {{\n\tfilename = {}\n\tacctusersfile = {}\n\tpreproxy_usersfile = {}\n}}\n",
                users.display(),
                w.join("acct_users").display(),
                w.join("preproxy_users").display()
            ),
        )?;
        std::fs::write(w.join("acct_users"), "")?;
        std::fs::write(w.join("preproxy_users"), "")?;
        let mut text = String::with_capacity(cfg.subscribers as usize * 180);
        for k in 0..cfg.subscribers {
            text.push_str(&freeradius_user(k));
        }
        std::fs::write(&users, text)?;
        std::fs::write(
            raddb.join("sites-enabled").join("bench"),
            format!(
                "server bench {{
\tlisten {{
\t\ttype = auth
\t\tipaddr = 127.0.0.1
\t\tport = {port}
\t\trecv_buff = {FREERADIUS_RECV_BUFF}
\t}}
\tauthorize {{
\t\tfiles
\t\tpap
\t\tchap
\t}}
\tauthenticate {{
\t\tAuth-Type PAP {{
\t\t\tpap
\t\t}}
\t\tAuth-Type CHAP {{
\t\t\tchap
\t\t}}
\t}}
\tpost-auth {{
\t\tok
\t}}
\tlisten {{
\t\ttype = acct
\t\tipaddr = 127.0.0.1
\t\tport = {acct_port}
\t\trecv_buff = {FREERADIUS_RECV_BUFF}
\t}}
\tpreacct {{
\t\tok
\t}}
\taccounting {{
\t\tdetail
\t}}
}}
",
                port = auth.port(),
                acct_port = acct.port(),
            ),
        )?;
        Ok(Self {
            raddb,
            auth,
            acct,
            dir,
        })
    }

    /// Starts `freeradius -f` pinned to the server core and waits until it accepts
    /// (loading 100,000 users takes it a few seconds).
    pub fn start(&self, cfg: &BenchConfig) -> anyhow::Result<RunningServer> {
        let log = self.dir.path().join("log").join("radius.log");
        let child = server_command(cfg, Path::new("freeradius"))
            .arg("-f")
            .arg("-d")
            .arg(&self.raddb)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting freeradius")?;
        let mut server = RunningServer {
            name: "freeradius",
            auth: self.auth,
            acct: self.acct,
            process: ServerProcess {
                name: "freeradius",
                child,
                log,
            },
        };
        wait_until_answering(&mut server, cfg, Duration::from_secs(120))?;
        warm_up(&server, cfg)?;
        Ok(server)
    }
}

// ---------------------------------------------------------------- measuring

/// One measured run against one server.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What the generator saw.
    pub load: LoadReport,
    /// CPU time the server used during the run.
    pub server_cpu_secs: f64,
    /// CPU time the generator (this process) used during the run: near a whole core
    /// with the server below one, the generator is the limit.
    pub generator_cpu_secs: f64,
    /// The server's resident memory after the run, KiB.
    pub server_rss_kib: u64,
    /// Datagrams the kernel dropped during the run because a UDP socket's receive
    /// buffer was full (`Udp: RcvbufErrors` of `/proc/net/snmp`). The counter is for the
    /// whole network namespace, but on loopback under this load it is the server's
    /// socket: this is what turns into timeouts.
    pub udp_rcvbuf_drops: u64,
}

impl Measurement {
    /// Answered requests per second.
    pub fn per_second(&self) -> f64 {
        self.load.per_second()
    }

    /// Answered requests per second of server CPU time: the figure that does not
    /// depend on how hard the generator could push.
    pub fn per_cpu_second(&self) -> f64 {
        if self.server_cpu_secs > 0.0 {
            self.load.answered() as f64 / self.server_cpu_secs
        } else {
            0.0
        }
    }

    /// The server's CPU time as a share of one core over the run.
    pub fn server_core_share(&self) -> f64 {
        self.server_cpu_secs / self.load.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The generator's CPU time as a share of one core over the run.
    pub fn generator_core_share(&self) -> f64 {
        self.generator_cpu_secs / self.load.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Runs the measured PAP load against `server`, reading its CPU time around it.
pub fn measure(server: &mut RunningServer, cfg: &BenchConfig) -> anyhow::Result<Measurement> {
    measure_load(server, &cfg.load(server.auth))
}

/// Runs the measured accounting load against `server`'s accounting socket.
pub fn measure_accounting(
    server: &mut RunningServer,
    cfg: &BenchConfig,
) -> anyhow::Result<Measurement> {
    measure_load(server, &cfg.accounting_load(server.acct))
}

/// Runs `load` (closed loop) against `server`, reading its CPU time around it.
pub fn measure_load(server: &mut RunningServer, load: &LoadConfig) -> anyhow::Result<Measurement> {
    server.process.ensure_running()?;
    let drops_before = udp_rcvbuf_errors()?;
    let (server_before, generator_before) = (
        server.process.cpu_seconds()?,
        process_cpu_seconds("/proc/self/stat")?,
    );
    let report = radload::run_blocking(load)?;
    let (server_after, generator_after) = (
        server.process.cpu_seconds()?,
        process_cpu_seconds("/proc/self/stat")?,
    );
    server.process.ensure_running()?;
    Ok(Measurement {
        load: report,
        server_cpu_secs: server_after - server_before,
        generator_cpu_secs: generator_after - generator_before,
        server_rss_kib: server.process.rss_kib()?,
        udp_rcvbuf_drops: udp_rcvbuf_errors()?.saturating_sub(drops_before),
    })
}

/// One paced run against one server: each lane's report and the server's CPU time.
#[derive(Debug, Clone)]
pub struct PacedMeasurement {
    /// What each lane saw, in the order given.
    pub lanes: Vec<LoadReport>,
    /// CPU time the server used during the run.
    pub server_cpu_secs: f64,
    /// Wall time of the run.
    pub wall: Duration,
    /// See [`Measurement::udp_rcvbuf_drops`].
    pub udp_rcvbuf_drops: u64,
}

/// Runs `lanes` together, paced, against `server`.
pub fn measure_paced(
    server: &mut RunningServer,
    lanes: &[PacedLane],
) -> anyhow::Result<PacedMeasurement> {
    server.process.ensure_running()?;
    let drops_before = udp_rcvbuf_errors()?;
    let cpu_before = server.process.cpu_seconds()?;
    let started = Instant::now();
    let reports = radload::run_paced(lanes)?;
    let wall = started.elapsed();
    let cpu_after = server.process.cpu_seconds()?;
    server.process.ensure_running()?;
    Ok(PacedMeasurement {
        lanes: reports,
        server_cpu_secs: cpu_after - cpu_before,
        wall,
        udp_rcvbuf_drops: udp_rcvbuf_errors()?.saturating_sub(drops_before),
    })
}

/// `Udp: RcvbufErrors` from `/proc/net/snmp`.
fn udp_rcvbuf_errors() -> anyhow::Result<u64> {
    snmp_counter(
        &std::fs::read_to_string("/proc/net/snmp")?,
        "Udp",
        "RcvbufErrors",
    )
}

/// A counter from `/proc/net/snmp` text: each protocol has a line of names followed by a
/// line of values.
fn snmp_counter(snmp: &str, protocol: &str, name: &str) -> anyhow::Result<u64> {
    let prefix = format!("{protocol}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no {protocol} counters in /proc/net/snmp");
    };
    let column = names
        .split_whitespace()
        .position(|n| n == name)
        .with_context(|| format!("no {protocol} {name} in /proc/net/snmp"))?;
    Ok(values
        .split_whitespace()
        .nth(column)
        .with_context(|| format!("no value for {protocol} {name}"))?
        .parse()?)
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_servers_hold_the_same_subscriber() {
        let agent = subscriber(70_000, 0);
        assert_eq!(agent.username, "user70000");
        assert_eq!(agent.password, "pass70000");
        assert_eq!(agent.static_ipv4.as_deref(), Some("10.65.17.112"));
        assert_eq!(
            freeradius_user(70_000),
            "user70000 Cleartext-Password := \"pass70000\"\n\
             \tFramed-IP-Address = 10.65.17.112,\n\
             \tSession-Timeout = 2592000,\n\
             \tAcct-Interim-Interval = 300,\n\
             \tMikrotik-Rate-Limit = \"10000k/50000k\",\n\
             \tClass = \"outpost:subscriber:70001\"\n\n"
        );
        assert_eq!(
            outpost_agent::radius::access::class(&agent),
            "outpost:subscriber:70001"
        );
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        std::fs::write(
            &path,
            "42 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0\n",
        )
        .unwrap();
        let secs = process_cpu_seconds(path.to_str().unwrap()).unwrap();
        assert!((secs - 300.0 / clock_ticks()).abs() < 1e-9, "{secs}");
    }

    #[test]
    fn snmp_counters_are_found_by_name() {
        let snmp = "Tcp: RtoAlgorithm RtoMin\nTcp: 1 200\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 2 7 9 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(snmp_counter(snmp, "Udp", "RcvbufErrors").unwrap(), 5);
        assert_eq!(snmp_counter(snmp, "UdpLite", "RcvbufErrors").unwrap(), 0);
        assert!(snmp_counter(snmp, "Udp", "Nonsense").is_err());
        assert!(snmp_counter(snmp, "Icmp", "InErrors").is_err());
    }

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0]), 4.0);
        assert_eq!(median([]), 0.0);
    }
}
