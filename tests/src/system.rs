//! Pieces the whole-system tests share: the real binaries, processes that die with the
//! test, polling with a deadline, and the controller's first operator login.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one wait in a system test may take before the test fails. Generous:
/// it only bounds a broken run; times are printed, never asserted.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Builds `outpost-controller` and `outpost-agent` (fast when fresh) and returns their
/// paths, next to the running test binary's target dir.
pub fn binaries() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "outpost-controller",
            "-p",
            "outpost-agent",
            "--bins",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the binaries failed");
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    (dir.join("outpost-controller"), dir.join("outpost-agent"))
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Proc {
    /// `kill -9`, the way a crash or an OOM kill ends a process.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process and waits for a line of its stdout starting with `ready`. Its
/// stderr (the logs) goes to `outpost-system-<first word of ready>.log` in the temp dir,
/// for whoever reads a failing run.
pub fn start(cmd: &mut Command, ready: &str) -> Proc {
    let log = std::env::temp_dir().join(format!(
        "outpost-system-{}.log",
        ready.split_whitespace().next().unwrap_or("p")
    ));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("process starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with(&wanted) {
                let _ = tx.send(());
            }
        }
    });
    let mut proc = Proc(child);
    if rx.recv_timeout(DEADLINE).is_err() {
        proc.kill9();
        panic!("process did not print {ready:?} in time");
    }
    proc
}

/// Polls until `f` holds; returns how long it took. Fails the test after [`DEADLINE`].
pub fn until(what: &str, f: impl FnMut() -> bool) -> Duration {
    until_within(what, DEADLINE, f)
}

/// [`until`] with its own deadline, for waits that are long by design (an expiry, a
/// verify interval, a backoff).
pub fn until_within(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Creates an operator login with the controller's CLI (the password on stdin).
pub fn create_operator(controller_bin: &Path, data: &Path, email: &str, password: &str) {
    let mut p = Command::new(controller_bin)
        .args(["user", "create-operator", "--email", email, "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(p.wait().unwrap().success(), "create-operator failed");
}

/// RFC 3339 UTC for a time, the format the API takes.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // Days from civil (Howard Hinnant's algorithm), to avoid a date dependency here.
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A benchmark knob: environment variable `name` parsed as `T`, or `default` when unset.
/// A set but unparsable value is an error naming it, not a silent default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not a valid value")),
        Err(_) => Ok(default),
    }
}
