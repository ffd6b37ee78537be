//! The panel's subscriber list over a million subscribers: p50/p99 per case, as the
//! operator and as a reseller, and the database's size.
//!
//! `cargo bench -p outpost-tests --bench panel` (env: SUBSCRIBERS, default 1000000;
//! SAMPLES, default 200). The figure: p99 under 100 ms for each case. Then the
//! subscriber portal's home page over the same database (issue 13: its p95), as one
//! subscriber logged in through the portal's form sees it.

use outpost_tests::panel_bench;
use outpost_tests::system::env_or;

fn main() -> anyhow::Result<()> {
    let n: usize = env_or("SUBSCRIBERS", 1_000_000)?;
    let samples: usize = env_or("SAMPLES", 200)?;
    let started = std::time::Instant::now();
    let seeded = panel_bench::seed(n)?;
    println!(
        "seeded {n} subscribers in {:.1} s; database {:.1} MiB",
        started.elapsed().as_secs_f64(),
        seeded.db_bytes() as f64 / 1_048_576.0
    );
    println!(
        "of which the search's trigram index: {:.1} MiB",
        seeded.search_index_bytes()? as f64 / 1_048_576.0
    );
    let rt = tokio::runtime::Runtime::new()?;
    let cases = rt.block_on(panel_bench::run(&seeded, samples, 5))?;
    println!(
        "{:<9} {:<28} {:>9} {:>9} {:>9} {:>5}",
        "who", "case", "p50 ms", "p99 ms", "max ms", "rows"
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    for c in &cases {
        println!(
            "{:<9} {:<28} {:>9.1} {:>9.1} {:>9.1} {:>5}",
            c.who,
            c.name,
            ms(c.p50),
            ms(c.p99),
            ms(c.max),
            c.rows
        );
    }
    let over: Vec<_> = cases.iter().filter(|c| c.p99.as_millis() >= 100).collect();
    println!(
        "cases with p99 >= 100 ms: {} of {}",
        over.len(),
        cases.len()
    );
    let p = rt.block_on(panel_bench::portal(&seeded, samples, 5))?;
    println!(
        "portal home page ({}, {samples} samples): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.username,
        ms(p.p50),
        ms(p.p95),
        ms(p.p99),
        ms(p.max)
    );
    Ok(())
}
