//! Renewals per second through the HTTP API with 64 concurrent clients on the default
//! SQLite, and, in the same run, the raw SQLite rate of the same transaction shape.
//!
//! `cargo bench -p outpost-tests --bench renewals` (env: CLIENTS, PER_CLIENT, RUNS).
//! Prints each run and the medians; the ratio is the figure: HTTP renewals per second
//! over raw SQLite transactions per second, measured one after the other in each run
//! (the machine's load moves both), and the median of those per-run ratios.

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let clients = env("CLIENTS", 64);
    let per_client = env("PER_CLIENT", 100);
    let runs = env("RUNS", 3);
    let rt = tokio::runtime::Runtime::new()?;
    let (mut http, mut raw, mut direct, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let h = rt.block_on(outpost_tests::renewals::http_renewals(clients, per_client))?;
        assert_eq!(
            h.ledger_rows as usize, h.renewals,
            "every renewal in the ledger once"
        );
        let r = outpost_tests::renewals::raw_sqlite(h.renewals)?;
        let d = outpost_tests::renewals::direct_renewals(h.renewals)?;
        println!(
            "run {}: HTTP {} renewals, {} clients: {:.0}/s in {} commits ({:.1} renewals per commit)  |  \
             same renewal transaction, no HTTP: {:.0}/s  |  raw SQLite {} tx: {:.0}/s  |  HTTP/raw {:.3}",
            i + 1,
            h.renewals,
            h.clients,
            h.per_second(),
            h.batches,
            h.writes as f64 / h.batches.max(1) as f64,
            d.per_second(),
            r.transactions,
            r.per_second(),
            h.per_second() / r.per_second()
        );
        ratios.push(h.per_second() / r.per_second());
        http.push(h.per_second());
        raw.push(r.per_second());
        direct.push(d.per_second());
    }
    let (h, r, d) = (median(http), median(raw), median(direct));
    println!(
        "median: HTTP renewals {h:.0}/s, renewal transaction alone {d:.0}/s, raw SQLite update+insert {r:.0} tx/s; \
         ratio HTTP/raw = {:.3} (median of the runs' ratios {:.3}), transaction/raw = {:.3}",
        h / r,
        median(ratios),
        d / r
    );
    Ok(())
}
