//! Network namespaces for lab tests: each gets a name unique to this test process,
//! commands run inside with `ip netns exec`, and threads can enter one (`setns`) so the
//! sockets they open live there. Dropping a [`Netns`] kills every process still inside
//! and deletes it, with its links and nftables tables, also when the test panicked.
//! Needs root (Debian: iproute2).

use std::fs::File;
use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// A network namespace, deleted (with every process still inside) when dropped.
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A number unique within this test process, for names that must not collide.
pub fn unique() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl Netns {
    /// A fresh namespace named after the test process and `tag`, loopback up; fails the
    /// test when it cannot be made.
    pub fn new(tag: &str) -> Netns {
        Netns::try_new(tag).unwrap_or_else(|e| panic!("namespace {tag}: {e}"))
    }

    /// [`Netns::new`] for callers that report errors instead of panicking (benchmarks).
    pub fn try_new(tag: &str) -> io::Result<Netns> {
        let name = format!("op{}-{}-{tag}", std::process::id(), unique());
        checked(Command::new("ip").args(["netns", "add", &name]), &name)?;
        // From here on, Drop removes it whatever fails next.
        let ns = Netns { name };
        ns.try_run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `args` inside; fails the test with its stderr if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `args` inside; an error carrying its stderr if it fails.
    pub fn try_run(&self, args: &[&str]) -> io::Result<Output> {
        try_run_in(&self.name, args)
    }

    /// Runs `args` inside and says whether it succeeded (quietly).
    pub fn ok(&self, args: &[&str]) -> bool {
        self.cmd(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// stdout of `args` run inside (whether or not it succeeded: some tools, such as
    /// `iperf3 -J`, report their errors there).
    pub fn stdout(&self, args: &[&str]) -> String {
        let out = self
            .cmd(args[0])
            .args(&args[1..])
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One ICMP echo to `ip`, one second to answer (Debian: iputils-ping).
    pub fn ping(&self, ip: &str) -> bool {
        self.ok(&["ping", "-c", "1", "-W", "1", "-n", "-q", ip])
    }

    /// Enters the namespace on the calling thread: sockets it opens from now on, and
    /// threads and processes it starts, live there. Use it on a thread of its own.
    pub fn enter(&self) -> io::Result<()> {
        enter(&self.name)
    }

    /// Runs `f` on a new thread inside the namespace and returns what it returned;
    /// sockets it made stay in the namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within(&self.name, f)
    }

    /// The PIDs of the processes inside.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes first: a namespace with a process inside outlives `ip netns del`.
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Enters namespace `name` (one a [`Netns`] owns) on the calling thread.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` on a new thread inside namespace `name` and returns what it returned; a
/// panic in `f` is the caller's panic.
pub fn within<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_string();
    let joined = std::thread::spawn(move || {
        enter(&name).unwrap_or_else(|e| panic!("setns into {name}: {e}"));
        f()
    })
    .join();
    match joined {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `args` inside namespace `name`; fails the test with its stderr if it fails.
pub fn run_in(name: &str, args: &[&str]) -> Output {
    try_run_in(name, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_in`] for callers that report errors instead of panicking.
pub fn try_run_in(name: &str, args: &[&str]) -> io::Result<Output> {
    checked(
        Command::new("ip")
            .args(["netns", "exec", name])
            .args(args)
            .stdin(Stdio::null()),
        name,
    )
}

fn checked(cmd: &mut Command, ns: &str) -> io::Result<Output> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "in {ns}: {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up, with the addresses given
/// (`None` for a port that joins a bridge). IPv6 addresses skip duplicate address
/// detection, so they are usable at once.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_cidr: Option<&str>,
) {
    a.run(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if let Some(c) = cidr {
            ns.addr(ifname, c);
        }
        ns.run(&["ip", "link", "set", ifname, "up"]);
    }
}

impl Netns {
    /// Adds address `cidr` to `dev` (IPv6 without duplicate address detection).
    pub fn addr(&self, dev: &str, cidr: &str) {
        let mut args = vec!["ip", "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.run(&args);
    }
}

/// Whether this process can build namespaces (root and `ip netns`); the error says
/// what is missing.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("network namespaces need root".into());
    }
    crate::peer::find("ip")
        .map(drop)
        .ok_or_else(|| "ip is missing: install the Debian package iproute2".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lab tier: these make namespaces.
    #[test]
    #[ignore = "lab: needs root and netns"]
    fn a_namespace_and_its_processes_are_gone_after_drop_even_after_a_panic() {
        let name = std::panic::catch_unwind(|| {
            let ns = Netns::new("kit");
            let mut child = ns.cmd("sleep").arg("30").spawn().unwrap();
            crate::process::until("sleep is inside", || !ns.pids().is_empty());
            // Reaped by us once the namespace's Drop killed it.
            std::thread::spawn(move || child.wait());
            let name = ns.name.clone();
            std::panic::panic_any(name);
        })
        .unwrap_err()
        .downcast::<String>()
        .unwrap();
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }

    #[test]
    #[ignore = "lab: needs root and netns"]
    fn a_veth_pair_joins_two_namespaces_and_a_thread_can_enter_one() {
        let (a, b) = (Netns::new("kita"), Netns::new("kitb"));
        veth(&a, "a0", Some("10.9.0.1/24"), &b, "b0", Some("10.9.0.2/24"));
        // Socket bound inside `b`; connect from inside `a`.
        let listener = b.within(|| std::net::TcpListener::bind("10.9.0.2:7").unwrap());
        let port = listener.local_addr().unwrap().port();
        a.within(move || std::net::TcpStream::connect(("10.9.0.2", port)).unwrap());
        assert!(listener.accept().is_ok());
        // Not reachable from the test's own namespace.
        assert!(std::net::TcpListener::bind("10.9.0.2:0").is_err());
    }
}
