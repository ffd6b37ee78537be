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

// ---- one reseller's subtree ----

use axum::body::Body as HttpBody;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use common::assert_error;
use http_body_util::BodyExt;
use outpost_controller::backup::archive::{Body, Keys};
use serde_json::Value;
use tower::ServiceExt;

/// A raw call (bytes in, bytes out) as `who`.
async fn raw(
    fx: &Fixture,
    who: Who,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::USER_AGENT, "outpost-tests")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(s) = fx.secret(who) {
        req = req.header(header::AUTHORIZATION, format!("Bearer {s}"));
    }
    let mut req = req.body(HttpBody::from(body)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::new(
            common::CLIENT_IP.parse().unwrap(),
            40000,
        )));
    let resp = fx.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn export(fx: &Fixture, who: Who, id: i64) -> Vec<u8> {
    let (s, b) = raw(
        fx,
        who,
        Method::POST,
        &format!("/api/v1/resellers/{id}/export"),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    b
}

async fn restore_api(fx: &Fixture, who: Who, query: &str, archive: &[u8]) -> (StatusCode, Value) {
    let (s, b) = raw(
        fx,
        who,
        Method::POST,
        &format!("/api/v1/resellers/restore{query}"),
        archive.to_vec(),
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Every row count that a restore could change, to show one wrote nothing.
fn counts(fx: &Fixture) -> Vec<i64> {
    [
        "tenants",
        "users",
        "sites",
        "nas",
        "plans",
        "rate_cards",
        "subscribers",
        "ledger",
        "operations",
        "renewals",
        "audit_log",
        "restored_audit",
    ]
    .iter()
    .map(|t| fx.query_i64(&format!("SELECT count(*) FROM {t}")))
    .collect()
}

fn notes(fx: &Fixture, id: i64) -> String {
    fx.state
        .db
        .write_blocking(|tx| {
            Ok(
                tx.query_row("SELECT notes FROM subscribers WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap()
}

#[tokio::test]
async fn a_reseller_restores_its_own_subtree_after_a_dry_run() {
    let fx = Fixture::new();
    let archive = export(&fx, Who::A, fx.a.tenant).await;
    // The archive is the controller's: it opens, and holds A's subtree and nothing else.
    let keys = Keys::load_or_create(fx.dir.path()).unwrap();
    let body = Body::parse(&keys.open(&archive).unwrap()).unwrap();
    let m = &body.manifest;
    assert_eq!(m.root.id, fx.a.tenant);
    assert_eq!(m.tables["tenants"].rows, 2, "A and A1");
    assert_eq!(m.tables["subscribers"].rows, 2);
    assert!(m.tables["ledger"].rows > 0);
    let subs = &body.tables["subscribers"];
    let u = subs.col("username").unwrap();
    let mut names: Vec<&str> = subs.rows.iter().map(|r| r[u].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["sub-a", "sub-a1"]);
    assert_eq!(fx.audit_tail().1.unwrap().1, "reseller.export");

    // Damage after the export; a dry run shows the repair and writes nothing.
    for (who, id) in [(Who::A, fx.a.subscriber), (Who::A1, fx.a1.subscriber)] {
        fx.patch_ok(
            who,
            &format!("/api/v1/subscribers/{id}"),
            json!({ "notes": "vandalised" }),
        )
        .await;
    }
    let before = counts(&fx);
    let (s, report) = restore_api(&fx, Who::A, "?dry_run=true", &archive).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["mode"], "existing");
    assert_eq!(report["applied"], false);
    assert_eq!(report["tenant_id"], fx.a.tenant);
    assert_eq!(report["tables"]["subscribers"]["updated"], 2, "{report}");
    assert_eq!(report["conflicts"], json!([]));
    assert_eq!(counts(&fx), before);
    assert_eq!(notes(&fx, fx.a.subscriber), "vandalised");

    let (s, report) = restore_api(&fx, Who::A, "", &archive).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["applied"], true);
    assert_eq!(notes(&fx, fx.a.subscriber), "");
    assert_eq!(notes(&fx, fx.a1.subscriber), "");
    // A's own record is its parent's to change: left alone; the ledger is not replayed.
    assert_eq!(report["tables"]["tenants"]["skipped"], 1, "{report}");
    assert_eq!(report["tables"]["ledger"]["inserted"], 0, "{report}");
    assert!(report["tables"]["ledger"]["skipped"].as_u64().unwrap() > 0);
    let (_, last) = fx.audit_tail();
    assert_eq!(last.unwrap().1, "reseller.restore");
    let (code, text) = run(&["audit", "verify", "--data-dir"], &[fx.dir.path()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&["ledger", "verify", "--data-dir"], &[fx.dir.path()]);
    assert_eq!(code, 0, "{text}");
    // A second restore finds nothing to change.
    let (_, report) = restore_api(&fx, Who::A, "?dry_run=true", &archive).await;
    assert_eq!(report["tables"]["subscribers"]["updated"], 0, "{report}");
    assert_eq!(report["tables"]["subscribers"]["unchanged"], 2, "{report}");
}

#[tokio::test]
async fn exports_and_restores_stay_inside_the_callers_subtree() {
    let fx = Fixture::new();
    // B cannot export A; A1 cannot export its parent; a manager exports nothing.
    for (who, id) in [(Who::B, fx.a.tenant), (Who::A1, fx.a.tenant)] {
        let (s, _) = raw(
            &fx,
            who,
            Method::POST,
            &format!("/api/v1/resellers/{id}/export"),
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{who:?}");
    }
    let (s, _) = raw(
        &fx,
        Who::M,
        Method::POST,
        &format!("/api/v1/resellers/{}/export", fx.a.tenant),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = raw(
        &fx,
        Who::Anon,
        Method::POST,
        &format!("/api/v1/resellers/{}/export", fx.a.tenant),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = raw(
        &fx,
        Who::Op,
        Method::POST,
        "/api/v1/resellers/1/export",
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let archive = export(&fx, Who::A, fx.a.tenant).await;
    let before = counts(&fx);
    // B and A1 cannot restore A's archive (into A), dry run or not; a manager cannot restore.
    for who in [Who::B, Who::A1] {
        for q in ["?dry_run=true", ""] {
            let (s, v) = restore_api(&fx, who, q, &archive).await;
            assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
        }
    }
    let (s, v) = restore_api(&fx, Who::M, "", &archive).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "permission_denied");
    assert_eq!(counts(&fx), before);
}

#[tokio::test]
async fn an_altered_archive_is_refused_and_writes_nothing() {
    let fx = Fixture::new();
    let archive = export(&fx, Who::A, fx.a.tenant).await;
    fx.patch_ok(
        Who::A,
        &format!("/api/v1/subscribers/{}", fx.a.subscriber),
        json!({ "notes": "x" }),
    )
    .await;
    let before = counts(&fx);
    let keys = Keys::load_or_create(fx.dir.path()).unwrap();
    let body = keys.open(&archive).unwrap();
    // A row changed inside the archive.
    let forged = String::from_utf8(body.clone())
        .unwrap()
        .replace("Customer a1", "Customer zz");
    assert_ne!(forged.as_bytes(), body.as_slice());

    // One byte of the file flipped: age's authentication fails.
    let mut flipped = archive.clone();
    let at = flipped.len() - 40;
    flipped[at] ^= 1;
    // The change encrypted to this controller but not signed by it.
    let unsigned = keys.encrypt_raw(&[7u8; 64], forged.as_bytes());
    // Signed by another installation's key.
    let foreign = Keys::generate();
    let sig_elsewhere = keys.encrypt_raw(&foreign.sign(forged.as_bytes()), forged.as_bytes());
    // Signed by this controller, but the table no longer matches its manifest checksum.
    let bad_sum = keys.seal(forged.as_bytes());
    for (what, file, code) in [
        ("flipped byte", flipped, "archive_unreadable"),
        ("unsigned", unsigned, "archive_bad_signature"),
        ("foreign signature", sig_elsewhere, "archive_bad_signature"),
        ("checksum", bad_sum, "archive_bad_checksum"),
        ("not an archive", b"hello".to_vec(), "archive_unreadable"),
    ] {
        for q in ["?dry_run=true", ""] {
            let (s, v) = restore_api(&fx, Who::A, q, &file).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {v}");
            assert_eq!(common::error_code(&v), code, "{what}: {v}");
        }
    }
    assert_eq!(counts(&fx), before);
    assert_eq!(notes(&fx, fx.a.subscriber), "x");
}

/// `POST` that must create; the body.
async fn created(fx: &Fixture, path: &str, body: Value) -> Value {
    let (s, v) = fx.post(Who::Op, path, body).await;
    assert_eq!(s, StatusCode::CREATED, "{path}: {v}");
    v
}

/// A reseller with no reference outside itself (its own site, NAS, staff, subscribers and
/// balance from the operator), on a second installation given the archive keys.
#[tokio::test]
async fn a_reseller_comes_back_on_another_installation_under_its_owner() {
    let fx = Fixture::new();
    let c = created(
        &fx,
        "/api/v1/resellers",
        json!({ "name": "Reseller C", "rebrand_enabled": true }),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let site = created(
        &fx,
        "/api/v1/sites",
        json!({ "name": "site-c", "tenant_id": c }),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    created(&fx, "/api/v1/nas",
        json!({ "name": "nas-c", "site_id": site, "ip": "198.51.100.77", "secret": "c-radius", "kind": "mikrotik", "tenant_id": c }),
    )
    .await;
    for i in 0..5 {
        created(&fx, "/api/v1/subscribers",
            json!({ "username": format!("c-{i}"), "password": format!("c-pass-{i}"), "tenant_id": c, "site_id": site }),
        )
        .await;
    }
    created(&fx, "/api/v1/users",
        json!({ "email": "staff@c.test", "name": "C staff", "kind": "reseller", "tenant_id": c, "password": "c-staff-password-1" }),
    )
    .await;
    fx.money_ok(
        Who::Op,
        &format!("/api/v1/resellers/{c}/balance"),
        json!({ "amount": "75.00" }),
    )
    .await;
    let archive = export(&fx, Who::Op, c).await;

    // The second installation: its own controller.key, the first's archive keys.
    let other = tempfile::tempdir().unwrap();
    drop(outpost_controller::bootstrap::open(common::test_config(other.path())).unwrap());
    for k in ["archive.age", "archive.sign"] {
        std::fs::copy(fx.dir.path().join(k), other.path().join(k)).unwrap();
    }
    let file = other.path().join("c.archive");
    std::fs::write(&file, &archive).unwrap();
    let db = other.path().join("controller.db");
    let n_before = count(&db, "SELECT count(*) FROM audit_log");
    let (code, text) = run(
        &["reseller", "restore", "--dry-run", "--data-dir"],
        &[other.path(), Path::new("--from"), &file],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"mode\": \"new\""), "{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM subscribers"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM audit_log"), n_before);

    let (code, text) = run(
        &["reseller", "restore", "--data-dir"],
        &[other.path(), Path::new("--from"), &file],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM subscribers"), 5);
    assert_eq!(
        count(
            &db,
            "SELECT parent_id FROM tenants WHERE name = 'Reseller C'"
        ),
        1
    );
    assert_eq!(
        count(&db, "SELECT balance FROM tenants WHERE name = 'Reseller C'"),
        7500
    );
    assert!(
        count(&db, "SELECT count(*) FROM restored_audit") >= 8,
        "C's history came as a segment"
    );
    for check in [["ledger", "verify"], ["audit", "verify"]] {
        let (code, text) = run(&[check[0], check[1], "--data-dir"], &[other.path()]);
        assert_eq!(code, 0, "{text}");
    }
    let (_, text) = run(&["audit", "verify", "--data-dir"], &[other.path()]);
    assert!(text.contains("restored audit segments:"), "{text}");
    // Secrets were sealed again with this installation's key.
    let state = outpost_controller::bootstrap::open(common::test_config(other.path())).unwrap();
    let (pass, secret): (Vec<u8>, Vec<u8>) = state
        .db
        .write_blocking(|tx| {
            Ok((
                tx.query_row(
                    "SELECT password_sealed FROM subscribers WHERE username = 'c-3'",
                    [],
                    |r| r.get(0),
                )?,
                tx.query_row(
                    "SELECT secret_sealed FROM nas WHERE name = 'nas-c'",
                    [],
                    |r| r.get(0),
                )?,
            ))
        })
        .unwrap();
    assert_eq!(state.secrets.open(&pass).unwrap(), "c-pass-3");
    assert_eq!(state.secrets.open(&secret).unwrap(), "c-radius");
    drop(state);

    // A tampered segment row is caught by audit verify.
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TRIGGER restored_audit_no_update;
             UPDATE restored_audit SET actor_name = 'someone else' WHERE id = (SELECT max(id) FROM restored_audit);",
        )
        .unwrap();
    }
    let (code, text) = run(&["audit", "verify", "--data-dir"], &[other.path()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not match its hash"), "{text}");

    // A's archive references the operator's plans, which that installation lacks: the
    // dry run names each conflict, and the restore writes nothing.
    let a_file = other.path().join("a.archive");
    std::fs::write(&a_file, export(&fx, Who::A, fx.a.tenant).await).unwrap();
    let subs = count(&db, "SELECT count(*) FROM subscribers");
    let (code, text) = run(
        &["reseller", "restore", "--dry-run", "--data-dir"],
        &[other.path(), Path::new("--from"), &a_file],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("parent_plan_id is plans"), "{text}");
    let (code, text) = run(
        &["reseller", "restore", "--data-dir"],
        &[other.path(), Path::new("--from"), &a_file],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM subscribers"), subs);
}
