//! Processes a test starts: killed when the test ends, passing or not; started by
//! waiting for the line that says they are ready; stopped the way an operator stops
//! them. And the one polling helper the tests wait with.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any one wait may take before the test fails. Generous: it only bounds a
/// broken run; times are printed, never asserted.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// What a server prints once it accepts connections, followed by the bound address
/// (`listening on http://127.0.0.1:41234`), so a test can give it port 0.
pub const LISTENING: &str = "listening on http://";

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Proc {
    /// `kill -9`, the way a crash or an OOM kill ends a process.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = kill(self.pid_t(), Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < grace {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    fn pid_t(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops a process that is not our child (one started inside a namespace by a shell,
/// found by PID): SIGTERM, then SIGKILL once `grace` has passed without it exiting.
pub fn stop_pid(pid: u32, grace: Duration) {
    let pid = Pid::from_raw(pid as i32);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    let started = Instant::now();
    // A signal 0 that fails means the process is gone.
    while kill(pid, None).is_ok() && !is_zombie(pid) {
        if started.elapsed() >= grace {
            let _ = kill(pid, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Starts a process and waits for a line of its stdout starting with `ready`. Its
/// stderr (the logs) goes to `outpost-system-<first word of ready>.log` in the temp dir,
/// for whoever reads a failing run.
pub fn start(cmd: &mut Command, ready: &str) -> Proc {
    let wanted = ready.to_string();
    let (proc, ()) = start_until_line(cmd, ready, move |line| {
        line.starts_with(&wanted).then_some(())
    });
    proc
}

/// Starts a server that prints [`LISTENING`] and the address it bound; returns it with
/// that address.
pub fn start_listening(cmd: &mut Command) -> (Proc, SocketAddr) {
    start_until_line(cmd, "listening", listening_addr)
}

/// Starts a process and waits (up to [`DEADLINE`]) for a line of its stdout that `ready`
/// maps to `Some`. `log` names its stderr's file, `outpost-system-<log>.log`.
pub fn start_until_line<T: Send + 'static>(
    cmd: &mut Command,
    log: &str,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (Proc, T) {
    let name = log.split_whitespace().next().unwrap_or("p");
    let log = std::env::temp_dir().join(format!("outpost-system-{name}.log"));
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
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = ready(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut proc = Proc(child);
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => (proc, v),
        Err(_) => {
            proc.kill9();
            panic!("process did not print its {name:?} line in time");
        }
    }
}

/// The address in a `listening on http://ADDR` line, if `line` is one.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(LISTENING)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_bound_address() {
        assert_eq!(
            listening_addr("listening on http://127.0.0.1:41234"),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on http://[::1]:8080\n"),
            Some("[::1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn other_lines_are_not_taken_for_it() {
        for line in [
            "Listening on 127.0.0.1:8080",
            "listening on http://localhost:8080",
            "listening on http://127.0.0.1",
            "first start: admin password is x",
            "",
        ] {
            assert_eq!(listening_addr(line), None, "{line:?}");
        }
    }

    #[test]
    fn a_started_server_reports_its_address() {
        let (mut proc, addr) = start_listening(Command::new("sh").args([
            "-c",
            "echo booting; echo 'listening on http://127.0.0.1:9'; sleep 30",
        ]));
        assert_eq!(addr, "127.0.0.1:9".parse().unwrap());
        proc.stop(Duration::from_secs(5));
        assert!(proc.0.try_wait().unwrap().is_some(), "stopped");
    }

    #[test]
    fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        let mut proc = start(
            Command::new("sh").args(["-c", "trap '' TERM; echo up; while :; do sleep 1; done"]),
            "up",
        );
        let started = Instant::now();
        proc.stop(Duration::from_millis(300));
        assert!(proc.0.try_wait().unwrap().is_some(), "killed");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn stop_pid_ends_a_process_that_is_not_our_child() {
        // The shell prints the PID of a background sleep it then waits for.
        let (mut shell, pid) = start_until_line(
            Command::new("sh").args(["-c", "sleep 30 & echo $!; wait"]),
            "stop-pid",
            |l| l.trim().parse::<u32>().ok(),
        );
        stop_pid(pid, Duration::from_secs(5));
        until("the shell sees its child gone", || {
            matches!(shell.0.try_wait(), Ok(Some(_)))
        });
        shell.kill9();
    }

    #[test]
    fn until_returns_once_the_condition_holds_and_fails_after_its_deadline() {
        let mut n = 0;
        until("the third poll", || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        let timed_out = std::panic::catch_unwind(|| {
            until_within("never", Duration::from_millis(100), || false)
        });
        assert!(timed_out.is_err());
    }
}
