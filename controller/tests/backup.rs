//! Backups through the real `outpost-controller` binary: the whole instance online
//! (`backup`, `restore`), and one reseller's subtree as a signed, encrypted archive.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Fixture, Who};
use rusqlite::Connection;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_outpost-controller");

/// Runs the binary; exit code and stdout+stderr.
fn run(args: &[&str], paths: &[&Path]) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn backup(data: &Path, to: &Path, key_to: Option<&Path>) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.arg("backup")
        .arg("--data-dir")
        .arg(data)
        .arg("--to")
        .arg(to);
    if let Some(k) = key_to {
        c.arg("--key-to").arg(k);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn restore(data: &Path, from: &Path, key: Option<&Path>, overwrite: bool) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.arg("restore")
        .arg("--data-dir")
        .arg(data)
        .arg("--from")
        .arg(from);
    if let Some(k) = key {
        c.arg("--key").arg(k);
    }
    if overwrite {
        c.arg("--overwrite");
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Names and sizes of the files in `dir`, to show a refused restore wrote nothing.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_taken_under_writes_restores_whole_with_its_key() {
    let fx = Fixture::new();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("outpost.backup");
    let keyfile = out.path().join("controller.key.copy");
    // The controller keeps writing while the backup runs in another process.
    let writes = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let dir = fx.dir.path().to_path_buf();
        let (file2, key2) = (file.clone(), keyfile.clone());
        let proc = tokio::task::spawn_blocking(move || {
            let r = backup(&dir, &file2, Some(&key2));
            s.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            fx.patch_ok(
                Who::A,
                &format!("/api/v1/subscribers/{}", fx.a.subscriber),
                json!({ "notes": format!("edit {n}") }),
            )
            .await;
            n += 1;
        }
        let (code, text) = proc.await.unwrap();
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("integrity ok"), "{text}");
        (n, text)
    };
    let (writes, text) = writes;
    assert!(writes > 0);
    // It names the key it needs by fingerprint.
    let fp = outpost_controller::backup::instance::key_fingerprint(
        &std::fs::read(fx.dir.path().join("controller.key")).unwrap(),
    );
    assert!(text.contains(&format!("fingerprint {fp}")), "{text}");
    // A backup never overwrites a file.
    let (code, text) = backup(fx.dir.path(), &file, None);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("never overwrites"), "{text}");

    let fresh = tempfile::tempdir().unwrap();
    let (code, text) = restore(fresh.path(), &file, Some(&keyfile), false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the key opens its sealed secrets"), "{text}");
    assert_eq!(
        std::fs::read(fresh.path().join("controller.key")).unwrap(),
        std::fs::read(fx.dir.path().join("controller.key")).unwrap()
    );
    // The restored instance is the one backed up: same rows, intact chains.
    let db = fresh.path().join("controller.db");
    for sql in [
        "SELECT count(*) FROM subscribers",
        "SELECT count(*) FROM tenants",
        "SELECT count(*) FROM nas",
    ] {
        assert_eq!(count(&db, sql), fx.query_i64(sql), "{sql}");
    }
    let (code, text) = run(&["audit", "verify", "--data-dir"], &[fresh.path()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&["ledger", "verify", "--data-dir"], &[fresh.path()]);
    assert_eq!(code, 0, "{text}");
    // And it serves: its sealed secrets open with the restored key.
    let state = outpost_controller::bootstrap::open(common::test_config(fresh.path())).unwrap();
    let sealed: Vec<u8> = state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT password_sealed FROM subscribers WHERE username = 'sub-a'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(state.secrets.open(&sealed).unwrap(), "ppp-a");
}

#[tokio::test]
async fn restore_refuses_a_running_instance_and_an_existing_database_without_overwrite() {
    let fx = Fixture::new();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.db");
    let (code, text) = backup(fx.dir.path(), &file, None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("keep a copy of it apart"), "{text}");

    // The fixture's controller holds its database open: refused even with --overwrite.
    let before = listing(fx.dir.path());
    let (code, text) = restore(fx.dir.path(), &file, None, true);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("running controller"), "{text}");
    assert_eq!(listing(fx.dir.path()), before);

    // A stopped installation: refused without --overwrite, replaced (kept aside) with it.
    let stopped = tempfile::tempdir().unwrap();
    {
        let s = outpost_controller::bootstrap::open(common::test_config(stopped.path())).unwrap();
        drop(s);
    }
    std::fs::copy(fx.dir.path().join("controller.key"), out.path().join("key")).unwrap();
    let before = listing(stopped.path());
    let (code, text) = restore(stopped.path(), &file, Some(&out.path().join("key")), false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("pass --overwrite"), "{text}");
    assert_eq!(listing(stopped.path()), before);
    let (code, text) = restore(stopped.path(), &file, Some(&out.path().join("key")), true);
    assert_eq!(code, 0, "{text}");
    let names: Vec<String> = listing(stopped.path()).into_iter().map(|f| f.0).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("controller.db.replaced-")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("controller.key.replaced-")),
        "{names:?}"
    );
    assert_eq!(
        count(
            &stopped.path().join("controller.db"),
            "SELECT count(*) FROM subscribers"
        ),
        fx.query_i64("SELECT count(*) FROM subscribers")
    );
}

#[tokio::test]
async fn restore_refuses_a_wrong_key_a_damaged_file_and_a_newer_schema() {
    let fx = Fixture::new();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.db");
    let (code, text) = backup(fx.dir.path(), &file, None);
    assert_eq!(code, 0, "{text}");

    // Another installation's key: the sealed secrets do not open.
    let other = tempfile::tempdir().unwrap();
    drop(outpost_controller::bootstrap::open(common::test_config(other.path())).unwrap());
    std::fs::remove_file(other.path().join("controller.db")).unwrap();
    let _ = std::fs::remove_file(other.path().join("controller.db-wal"));
    let _ = std::fs::remove_file(other.path().join("controller.db-shm"));
    let before = listing(other.path());
    let (code, text) = restore(other.path(), &file, None, true);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("does not open the secrets"), "{text}");
    assert_eq!(listing(other.path()), before);
    // No key at all.
    let empty = tempfile::tempdir().unwrap();
    let (code, text) = restore(empty.path(), &file, None, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("has no controller.key"), "{text}");
    assert!(listing(empty.path()).is_empty());

    let key = fx.dir.path().join("controller.key");
    // Damaged pages: the integrity check fails.
    let damaged = out.path().join("damaged.db");
    let mut bytes = std::fs::read(&file).unwrap();
    // The b-tree page headers of pages 2..20 (the page size is the header's bytes 16-17).
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    for n in 1..20 {
        for b in &mut bytes[n * page..n * page + 12] {
            *b = 0x5a;
        }
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, text) = restore(empty.path(), &damaged, Some(&key), false);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("integrity") || text.contains("malformed"),
        "{text}"
    );
    assert!(listing(empty.path()).is_empty());
    // A newer release's schema.
    let newer = out.path().join("newer.db");
    std::fs::copy(&file, &newer).unwrap();
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let (code, text) = restore(empty.path(), &newer, Some(&key), false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("schema version 999"), "{text}");
    assert!(listing(empty.path()).is_empty());
}
