//! The outbox's throughput and delivery latency against a local provider, beside the
//! provider's own rate with no outbox, in one run.
//!
//! `cargo bench -p outpost-tests --bench messages` (env: MESSAGES, RATE, LATENCY_MESSAGES,
//! RUNS). Prints each run and the medians; the throughput ratio is the figure.

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
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
    use outpost_tests::messages_bench as mb;
    let n = env("MESSAGES", 5000usize);
    let rate = env("RATE", 100.0f64);
    let ln = env("LATENCY_MESSAGES", 1000usize);
    let runs = env("RUNS", 3usize);
    let batch = outpost_controller::messaging::outbox::WorkerConfig::default().batch;
    let rt = tokio::runtime::Runtime::new()?;
    let (mut outbox, mut direct, mut p99s, mut p50s) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let o = rt.block_on(mb::outbox_throughput(n))?;
        assert_eq!(o.sent as usize, n, "every message sent once");
        let d = rt.block_on(mb::direct_throughput(n, batch))?;
        let l = rt.block_on(mb::latency(ln, rate))?;
        println!(
            "run {}: outbox {} messages: {:.0}/s ({} requests)  |  same posts, no outbox, {batch} in flight: {:.0}/s  |  \
             latency enqueue→received at {:.0}/s, {} messages: p50 {} ms, p99 {} ms, max {} ms",
            i + 1,
            o.messages,
            o.per_second(),
            o.requests,
            d.per_second(),
            l.rate,
            l.messages,
            l.p50,
            l.p99,
            l.max
        );
        outbox.push(o.per_second());
        direct.push(d.per_second());
        p99s.push(l.p99 as f64);
        p50s.push(l.p50 as f64);
    }
    let (o, d) = (median(outbox), median(direct));
    println!(
        "median: outbox {o:.0} messages/s, direct posts {d:.0}/s, ratio outbox/direct = {:.3}; \
         latency p50 {:.0} ms, p99 {:.0} ms",
        o / d,
        median(p50s),
        median(p99s)
    );
    Ok(())
}
