//! The `outpost-controller` binary: audit verification against tampering, operator
//! provisioning from stdin, first start, and refusing a database from a newer release.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{Fixture, Who};
use rusqlite::Connection;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_outpost-controller");

fn verify(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `serve` on port 0 over `dir`, its stdout piped for the lines it prints.
fn serve(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// A fixture with a few real audit entries made through the API.
async fn with_history() -> Fixture {
    let fx = Fixture::new();
    for (who, sub) in [
        (Who::A, fx.a.subscriber),
        (Who::B, fx.b.subscriber),
        (Who::A1, fx.a1.subscriber),
    ] {
        fx.patch_ok(
            who,
            &format!("/api/v1/subscribers/{sub}"),
            json!({ "notes": "paid cash" }),
        )
        .await;
    }
    fx
}

#[tokio::test]
async fn audit_verify_passes_an_intact_log() {
    let fx = with_history().await;
    let (code, out) = verify(fx.dir.path());
    assert_eq!(code, 0, "{out}");
    let n = fx.audit_tail().0;
    assert!(n >= 3);
    assert!(out.contains(&format!("intact: {n} entries")), "{out}");
}

#[tokio::test]
async fn the_log_refuses_update_and_delete() {
    let fx = with_history().await;
    let c = Connection::open(fx.dir.path().join("controller.db")).unwrap();
    let e = c
        .execute(
            "UPDATE audit_log SET actor_name = 'nobody' WHERE id = 2",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = c
        .execute("DELETE FROM audit_log WHERE id = 2", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

#[tokio::test]
async fn a_tampered_entry_is_caught_and_named() {
    let fx = with_history().await;
    let id = fx.query_i64("SELECT min(id) FROM audit_log WHERE after LIKE '%paid cash%'");
    {
        // Someone with the file drops the guard and rewrites history.
        let c = Connection::open(fx.dir.path().join("controller.db")).unwrap();
        c.execute_batch(&format!(
            "DROP TRIGGER audit_log_no_update;
             UPDATE audit_log SET after = replace(after, 'paid cash', 'paid nothing') WHERE id = {id};"
        ))
        .unwrap();
    }
    let (code, out) = verify(fx.dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("BROKEN at entry {id}")), "{out}");
}

#[tokio::test]
async fn a_deleted_or_rechained_entry_is_caught() {
    let fx = with_history().await;
    {
        let c = Connection::open(fx.dir.path().join("controller.db")).unwrap();
        c.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE id = 2;")
            .unwrap();
    }
    let (code, out) = verify(fx.dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 2 is missing"), "{out}");

    // An entry re-linked to something other than its predecessor.
    let fx = with_history().await;
    {
        let c = Connection::open(fx.dir.path().join("controller.db")).unwrap();
        c.execute_batch(
            "DROP TRIGGER audit_log_no_update;
             UPDATE audit_log SET prev_hash = hash WHERE id = 3;",
        )
        .unwrap();
    }
    let (code, out) = verify(fx.dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at entry 3"), "{out}");
}

#[test]
fn create_operator_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let run = |email: &str, password: &str| {
        let mut child = Command::new(BIN)
            .args(["user", "create-operator", "--email", email, "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run("noc@isp.example", "provisioned-password\n");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run("NOC@isp.example", "another-password\n");
    assert_eq!(code, 2, "duplicate email: {out}");
    assert!(out.contains("already exists"), "{out}");
    let (code, out) = run("ops@isp.example", "short\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("10 to 128"), "{out}");
    // The stored hash is argon2id and verifies with the password (newline trimmed).
    let state = outpost_controller::bootstrap::open(common::test_config(dir.path())).unwrap();
    let u = state
        .db
        .write_blocking(|tx| outpost_controller::db::user::get_by_email(tx, "noc@isp.example"))
        .unwrap()
        .unwrap();
    assert!(u.password_hash.starts_with("$argon2id$"));
    assert!(
        state
            .hasher
            .verify("provisioned-password", &u.password_hash)
    );
    assert_eq!(u.kind, outpost_controller::scope::UserKind::Operator);
}

#[test]
fn first_start_prints_a_one_time_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = serve(dir.path()).spawn().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let done = line.starts_with("listening on");
            lines.push(line);
            if done {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        lines
    };
    let first = start();
    let pw = first
        .iter()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .expect("password printed")
        .trim()
        .to_string();
    assert_eq!(pw.len(), 20);
    let second = start();
    assert!(
        !second.iter().any(|l| l.contains("password")),
        "printed again: {second:?}"
    );
    let state = outpost_controller::bootstrap::open(common::test_config(dir.path())).unwrap();
    let u = state
        .db
        .write_blocking(|tx| outpost_controller::db::user::get_by_email(tx, "admin@outpost.local"))
        .unwrap()
        .unwrap();
    assert!(state.hasher.verify(&pw, &u.password_hash));
    // The admin's creation is itself audited, and the chain holds.
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_database_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(outpost_controller::bootstrap::open(common::test_config(dir.path())).unwrap());
    let c = Connection::open(dir.path().join("controller.db")).unwrap();
    c.pragma_update(None, "user_version", 42).unwrap();
    drop(c);
    let out = serve(dir.path()).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("schema version 42") && err.contains("newer release"),
        "{err}"
    );
}

#[test]
fn demo_seed_builds_a_believable_installation() {
    let dir = tempfile::tempdir().unwrap();
    let state = outpost_controller::bootstrap::open(common::test_config(dir.path())).unwrap();
    let logins = outpost_controller::demo::seed_demo(&state)
        .unwrap()
        .expect("seeded");
    assert!(logins.len() >= 6);
    let n = |sql: &str| {
        state
            .db
            .write_blocking(|tx| Ok(tx.query_row(sql, [], |r| r.get::<_, i64>(0))?))
            .unwrap()
    };
    assert_eq!(n("SELECT count(*) FROM subscribers"), 200);
    assert_eq!(
        n("SELECT count(*) FROM subscribers WHERE plan_id IS NULL"),
        0
    );
    assert_eq!(n("SELECT count(*) FROM plans"), 4);
    // Only a stated few start past their expiry; a tenth expire within the week.
    let now = "unixepoch()";
    assert_eq!(
        n(&format!(
            "SELECT count(*) FROM subscribers WHERE expires_at < {now}"
        )),
        outpost_controller::demo::DEMO_EXPIRED as i64
    );
    assert_eq!(
        n(&format!(
            "SELECT count(*) FROM subscribers WHERE expires_at >= {now} AND expires_at < unixepoch() + 8 * 86400"
        )),
        20
    );
    assert!(n("SELECT min(balance) FROM tenants WHERE depth > 0") > 0);
    assert_eq!(n("SELECT count(*) FROM tenants WHERE depth = 1"), 2);
    assert_eq!(n("SELECT count(*) FROM tenants WHERE depth = 2"), 1);
    assert!(n("SELECT count(*) FROM users WHERE kind = 'manager'") >= 3);
    assert!(n("SELECT count(*) FROM sites") >= 3);
    assert!(n("SELECT count(*) FROM nas") >= 3);
    assert!(
        outpost_controller::demo::seed_demo(&state)
            .unwrap()
            .is_none(),
        "seeding twice"
    );
    assert!(matches!(
        outpost_controller::bootstrap::verify_audit(dir.path()).unwrap(),
        outpost_controller::db::audit::Verdict::Intact { .. }
    ));
    let (_, problems) = outpost_controller::bootstrap::verify_ledger(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn reset_password_prints_a_new_one_time_password_and_ends_sessions() {
    let fx = Fixture::new();
    let before = fx.query_i64("SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND user_id = (SELECT id FROM users WHERE email = 'a@fixture.test')");
    assert!(before > 0);
    let out = Command::new(BIN)
        .args([
            "user",
            "reset-password",
            "--email",
            "A@fixture.test",
            "--data-dir",
        ])
        .arg(fx.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .expect("password printed")
        .trim()
        .to_string();
    assert_eq!(pw.len(), 20);
    let hash: String = Connection::open(fx.dir.path().join("controller.db"))
        .unwrap()
        .query_row(
            "SELECT password_hash FROM users WHERE email = 'a@fixture.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(fx.state.hasher.verify(&pw, &hash));
    assert_eq!(fx.query_i64("SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND user_id = (SELECT id FROM users WHERE email = 'a@fixture.test')"), 0);
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM audit_log WHERE action = 'user.password_reset'"),
        1
    );
    let (code, out) = verify(fx.dir.path());
    assert_eq!(code, 0, "{out}");
    // An unknown email is an error, and nothing is written.
    let out = Command::new(BIN)
        .args([
            "user",
            "reset-password",
            "--email",
            "nobody@fixture.test",
            "--data-dir",
        ])
        .arg(fx.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn logs_carry_no_colour_codes_when_not_written_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "the command logged nothing to check");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
}

#[test]
fn serve_on_port_0_reports_the_bound_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.parse().expect("an ip:port after http://");
        }
    };
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the kernel's port, not the requested 0");
    let resp = reqwest::blocking::get(format!("http://{addr}/api/v1/openapi.json")).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let listening = lines
        .map_while(Result::ok)
        .filter(|l| l.contains("listening on"))
        .count();
    assert_eq!(listening, 0, "the address line is printed once");
}
