//! Where a renewal transaction's time goes: the renewal transaction (with its
//! idempotency record) run N times directly on the writer, B renewals per
//! transaction each in its own savepoint (as the writer thread batches them), timing
//! the statements apart from BEGIN + COMMIT. A profiling aid, not a benchmark.
//!
//! `cargo run --release -p outpost-tests --example renewal_probe` (env: N, BATCH as
//! `1,8,64`, RAW=0 to skip the raw SQLite line).
use std::time::{Duration, Instant};

use outpost_controller::billing::{self, By};
use outpost_controller::db::subscriber;
use outpost_controller::scope::Scope;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let batches: Vec<usize> = std::env::var("BATCH")
        .ok()
        .map(|b| b.split(",").map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 32, 64]);
    for batch in batches {
        let seeded = outpost_tests::renewals::seed(1)?;
        let (state, sub) = (&seeded.state, seeded.subscribers[0]);
        let who = outpost_controller::bootstrap::system();
        let scope = Scope::Subtree {
            tenant_id: 2,
            path: "/1/2/".into(),
        };
        let mut inside = Duration::ZERO;
        let started = Instant::now();
        let mut i = 0;
        while i < n {
            state
                .db
                .write_blocking(|tx| {
                    for _ in 0..batch {
                        let t = Instant::now();
                        tx.execute_batch("SAVEPOINT r")?;
                        let key = format!("direct-{i}");
                        let row = subscriber::get_visible(tx, &scope, sub)?;
                        let by = By {
                            who: &who,
                            user_id: None,
                            scope: scope.clone(),
                            idempotency_key: Some(&key),
                        };
                        let r =
                            billing::renew(tx, &by, &row, None, 1, false, None, &state.currency)?;
                        let body = serde_json::to_string(&r).unwrap();
                        outpost_controller::db::ledger::remember(tx, 1, &key, "h", 200, &body)?;
                        tx.execute_batch("RELEASE r")?;
                        inside += t.elapsed();
                        i += 1;
                    }
                    Ok(())
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let total = started.elapsed();
        println!(
            "batch {batch:>3}: {:.0} renewals/s; per renewal {:.0} µs, of which statements {:.0} µs, begin+commit {:.0} µs",
            n as f64 / total.as_secs_f64(),
            total.as_micros() as f64 / n as f64,
            inside.as_micros() as f64 / n as f64,
            (total - inside).as_micros() as f64 / n as f64
        );
    }
    if std::env::var("RAW").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let r = outpost_tests::renewals::raw_sqlite(n)?;
    println!(
        "raw: {:.0} tx/s ({:.0} µs)",
        r.per_second(),
        1e6 / r.per_second()
    );
    Ok(())
}
