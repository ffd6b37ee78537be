//! FreeRADIUS's `radclient` (Debian: freeradius-utils) playing the NAS: one request
//! with the attributes given, and the reply it printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Guards against a hung radclient turning into a stuck CI job; never an assertion
/// about speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The program, on the test machine.
pub fn program() -> PathBuf {
    crate::peer::require("radclient", "freeradius-utils")
}

/// radclient aimed at one server with one shared secret.
#[derive(Debug, Clone)]
pub struct Radclient {
    /// `host:port`.
    pub server: String,
    /// The RADIUS shared secret.
    pub secret: String,
    /// Tries per request (`-r`).
    pub retries: u32,
    /// Seconds to wait for each try (`-t`).
    pub timeout_secs: u32,
    /// The network namespace to run in (a NAS inside the lab); `None`: this one.
    pub netns: Option<String>,
}

/// What radclient printed about one request.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The reply it received, when it received one.
    pub reply: Option<Reply>,
    pub stdout: String,
    pub stderr: String,
}

impl Sent {
    /// Everything it printed, for assertions on its wording (`Received Access-Accept`).
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// What radclient printed about the one packet it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `Access-Accept`, `Access-Reject`, `Accounting-Response`.
    pub code: String,
    /// `(name, value)` as radclient prints them, quotes removed.
    pub attributes: Vec<(String, String)>,
}

impl Reply {
    /// The first value of attribute `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Radclient {
    /// Three tries, two seconds each.
    pub fn new(server: impl ToString, secret: &str) -> Radclient {
        Radclient {
            server: server.to_string(),
            secret: secret.to_string(),
            retries: 3,
            timeout_secs: 2,
            netns: None,
        }
    }

    /// The same client run inside namespace `netns` (by name, see [`crate::netns`]).
    pub fn inside(mut self, netns: &str) -> Radclient {
        self.netns = Some(netns.to_string());
        self
    }

    /// The same client with `retries` tries of `timeout_secs` each.
    pub fn tries(mut self, retries: u32, timeout_secs: u32) -> Radclient {
        self.retries = retries;
        self.timeout_secs = timeout_secs;
        self
    }

    /// The arguments after the program name; the attributes go on its stdin.
    pub fn args(&self, kind: &str) -> Vec<String> {
        vec![
            "-x".into(),
            "-r".into(),
            self.retries.to_string(),
            "-t".into(),
            self.timeout_secs.to_string(),
            self.server.clone(),
            kind.into(),
            self.secret.clone(),
        ]
    }

    /// Sends one request of `kind` (`auth`, `acct`, …) with `attributes`, one
    /// `Name = value` a line, and waits for radclient to finish.
    pub fn send(&self, kind: &str, attributes: &str) -> Sent {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program());
                c
            }
            None => Command::new(program()),
        };
        let mut child = cmd
            .args(self.args(kind))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("radclient starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(attributes.as_bytes())
            .unwrap();
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(HANG_GUARD) {
            Ok(out) => out.expect("radclient's output"),
            Err(_) => {
                crate::process::stop_pid(pid, Duration::from_secs(1));
                panic!("radclient hung");
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        Sent {
            reply: parse(&stdout),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// [`Radclient::send`] off the async runtime's worker threads, for tests whose
    /// server runs in the same runtime.
    pub async fn send_async(&self, kind: &str, attributes: &str) -> Sent {
        let (me, kind, attributes) = (self.clone(), kind.to_string(), attributes.to_string());
        tokio::task::spawn_blocking(move || me.send(&kind, &attributes))
            .await
            .expect("radclient thread")
    }
}

/// The reply in radclient's `-x` output: the `Received …` line and the indented
/// attributes under it.
pub fn parse(stdout: &str) -> Option<Reply> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("Received "));
    let header = lines.next()?;
    let code = header.split_whitespace().nth(1)?.to_owned();
    let attributes = lines
        .take_while(|l| l.starts_with('\t') || l.starts_with(' '))
        .filter_map(|l| l.trim().split_once(" = "))
        .map(|(n, v)| (n.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    Some(Reply { code, attributes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_and_its_attributes_are_read_from_radclient_output() {
        let out = "Sent Access-Request Id 1 from 0.0.0.0:1 to 127.0.0.1:1812 length 40\n\
                   \tUser-Name = \"amina\"\n\
                   Received Access-Accept Id 1 from 127.0.0.1:1812 to 127.0.0.1:1 length 60\n\
                   \tMikrotik-Rate-Limit = \"2000k/10000k\"\n\
                   \tFramed-IP-Address = 100.64.0.9\n\
                   (0) done\n";
        let reply = parse(out).unwrap();
        assert_eq!(reply.code, "Access-Accept");
        assert_eq!(reply.get("Mikrotik-Rate-Limit"), Some("2000k/10000k"));
        assert_eq!(reply.get("Framed-IP-Address"), Some("100.64.0.9"));
        assert_eq!(reply.get("User-Name"), None, "sent, not received");
    }

    #[test]
    fn no_reply_when_nothing_was_received() {
        assert_eq!(
            parse("Sent Access-Request Id 1\n(0) No reply from server\n"),
            None
        );
    }
}
