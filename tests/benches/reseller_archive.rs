//! Export and restore of one reseller with 50,000 subscribers: seconds for each step and
//! the archive's size. No peer runs beside it (the figure the issue names is absolute);
//! run it twice and read both.
//!
//! The installation is the panel bench's bulk-seeded tree (`panel_bench::seed`): four
//! resellers with two sub-resellers each; 200,000 subscribers spread over the twelve
//! tenants put 50,000 in the first reseller's subtree. It is exported (read, JSON, sign,
//! encrypt), then restored into a second installation that holds only the operator and
//! its base plan, so it comes back as a new reseller (dry run, then for real: every row
//! inserted, every PPP password sealed again, the change feed and search index kept by
//! their triggers), then restored again over itself (every row compared, none changed).
//! `ledger verify` and `audit verify` must hold after.
//!
//! `cargo bench -p outpost-tests --bench reseller_archive` (env SUBSCRIBERS: the total
//! seeded, default 200000).

use std::time::Instant;

use outpost_controller::backup::archive::{Body, Keys};
use outpost_controller::backup::reseller::{self, RestoreOptions};
use outpost_controller::db::plan::{self, NewPlan};
use outpost_controller::db::tenant;
use outpost_controller::scope::OPERATOR_TENANT;

fn main() -> anyhow::Result<()> {
    let total: usize = std::env::var("SUBSCRIBERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let t = Instant::now();
    let seeded = outpost_tests::panel_bench::seed(total)?;
    println!(
        "seeded {total} subscribers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let src = &seeded.state;
    let keys = Keys::load_or_create(&src.config.data_dir)?;
    let id = seeded.reseller_tenant;

    let t = Instant::now();
    let (secrets, signer) = (src.secrets.clone(), keys.signer());
    let body = src
        .db
        .write_blocking(|tx| reseller::export(tx, None, id, &secrets, &signer))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let read = t.elapsed();
    let plain = body.to_bytes();
    let archive = keys.seal(&plain);
    let export = t.elapsed();
    let subs = body.manifest.tables["subscribers"].rows;
    println!(
        "export of reseller {id} ({subs} subscribers, {} tenants): {:.2} s ({:.2} s reading), \
         archive {:.1} MiB ({:.1} MiB of JSON before encryption)",
        body.manifest.tables["tenants"].rows,
        export.as_secs_f64(),
        read.as_secs_f64(),
        archive.len() as f64 / 1048576.0,
        plain.len() as f64 / 1048576.0
    );

    // The second installation: the operator and its base plan (the rate card's plan).
    let dir = tempfile::tempdir()?;
    let cfg = outpost_controller::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let dst = outpost_controller::bootstrap::open(cfg)?;
    let cur = dst.currency.clone();
    dst.db
        .write_blocking(|tx| {
            let root = tenant::get(tx, OPERATOR_TENANT)?.expect("root");
            plan::create(
                tx,
                &root,
                &NewPlan {
                    name: "Home 20M".into(),
                    tenant_id: None,
                    parent_plan_id: None,
                    download_kbps: 20_000,
                    upload_kbps: 5_000,
                    burst_download_kbps: None,
                    burst_upload_kbps: None,
                    validity_days: Some(30),
                    validity_months: None,
                    quota_mb: None,
                    price: outpost_controller::money::NonNegativeAmount(cur.from_minor(2_001)),
                    wan_tcp_ports: None,
                },
                &cur,
            )
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let who = outpost_controller::bootstrap::system();
    let sha = "bench";
    let run = |what: &str, dry_run: bool| -> anyhow::Result<()> {
        let t = Instant::now();
        let body = Body::parse(&keys.open(&archive).map_err(|e| anyhow::anyhow!("{e}"))?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let opened = t.elapsed();
        let opts = RestoreOptions {
            dry_run,
            parent_id: None,
            max_depth: dst.config.tree.max_depth,
        };
        let secrets = dst.secrets.clone();
        let report = dst
            .db
            .write_blocking(|tx| reseller::restore(tx, None, &who, &body, sha, &secrets, &opts))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = &report.tables["subscribers"];
        anyhow::ensure!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        println!(
            "{what}: {:.2} s ({:.2} s decrypting, verifying, parsing); mode {}, subscribers: \
             {} inserted, {} updated, {} unchanged",
            t.elapsed().as_secs_f64(),
            opened.as_secs_f64(),
            report.mode,
            s.inserted,
            s.updated,
            s.unchanged
        );
        Ok(())
    };
    run("restore, dry run (new reseller)", true)?;
    run("restore (new reseller)", false)?;
    run("restore again over itself", false)?;
    let conn = outpost_controller::db::open_read_only(&dir.path().join("controller.db"))?;
    let (_, problems) = outpost_controller::db::ledger::verify(&conn)?;
    anyhow::ensure!(problems.is_empty(), "ledger: {problems:?}");
    let verdict = outpost_controller::db::audit::verify(&conn)?;
    anyhow::ensure!(
        matches!(
            verdict,
            outpost_controller::db::audit::Verdict::Intact { .. }
        ),
        "audit: {verdict:?}"
    );
    let n: i64 = conn.query_row("SELECT count(*) FROM subscribers", [], |r| r.get(0))?;
    println!("after: {n} subscribers on the second installation; ledger and audit verify");
    Ok(())
}
