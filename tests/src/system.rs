//! Pieces the whole-system tests share besides the test kit (`outpost-testkit`): the
//! real binaries, the controller's first operator login, times as the API takes them,
//! benchmark knobs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Runs `outpost-agent enroll` through `cmd` (the agent binary, possibly inside a
/// namespace) against the controller at `base`, with the agent's state in `state`, its
/// RADIUS on `auth`/`acct` and `extra` options (e.g. the tunnel's); enrolling must
/// succeed. Returns the config it wrote.
pub fn enroll(
    mut cmd: Command,
    base: &str,
    token: &str,
    state: &Path,
    (auth, acct): (&str, &str),
    extra: &[&str],
) -> PathBuf {
    cmd.args([
        "enroll",
        "--controller",
        base,
        "--token",
        token,
        "--state-dir",
    ])
    .arg(state)
    .args(["--auth-listen", auth, "--acct-listen", acct])
    .args(extra);
    run_ok(&mut cmd, "enroll");
    state.join("agent.toml")
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

/// Runs `cmd` to its end; fails the test with `what` and its stderr if it fails.
pub fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
