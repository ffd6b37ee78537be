//! RADIUS PAP Access-Requests for 100,000 subscribers, side by side: the agent against
//! FreeRADIUS 3 (`files`), each pinned to one core, both driven by our own load
//! generator pinned to another.
//!
//! `cargo bench -p outpost-tests --bench radius` (as root, with Debian's `freeradius`
//! installed). Environment: SUBSCRIBERS, REQUESTS, MAX_SECS, SOCKETS, WINDOW,
//! TIMEOUT_MS, RUNS, WARMUP, SERVER_CPU, GENERATOR_CPU, MESSAGE_AUTHENTICATOR (0/1),
//! AGENT_RUST_LOG, OUTPOST_AGENT_BIN; see `outpost_tests::radius_bench::BenchConfig`.
//!
//! Each run starts the server afresh, warms it up and measures it; the runs alternate
//! between the two servers so that whatever else the machine is doing falls on both.
//! Prints every run and the medians; the ratios are the figures. Nothing is asserted.

use outpost_tests::radius_bench::{
    self, AgentSite, BenchConfig, FreeRadiusSite, Measurement, median,
};

fn main() -> anyhow::Result<()> {
    let cfg = BenchConfig::from_env()?;
    // Built before pinning, so the build may use every core.
    let agent_binary = radius_bench::agent_binary()?;
    radius_bench::pin_this_process(cfg.generator_cpu)?;
    println!(
        "RADIUS PAP{}: {} subscribers, {} requests or {:?} per run, {} sockets x {} outstanding, \
         timeout {:?}; servers on CPU {}, generator on CPU {}; {} runs each",
        if cfg.message_authenticator {
            " + Message-Authenticator"
        } else {
            ""
        },
        cfg.subscribers,
        cfg.requests,
        cfg.max_duration,
        cfg.sockets,
        cfg.window,
        cfg.timeout,
        cfg.server_cpu,
        cfg.generator_cpu,
        cfg.runs,
    );
    let agent_site = AgentSite::prepare(&agent_binary, &cfg)?;
    let freeradius_site = FreeRadiusSite::prepare(&cfg)?;
    let (mut agent, mut freeradius) = (Vec::new(), Vec::new());
    for run in 1..=cfg.runs {
        let mut server = agent_site.start(&cfg)?;
        let m = radius_bench::measure(&mut server, &cfg)?;
        drop(server);
        print_run(run, "outpost-agent", &m);
        agent.push(m);

        let mut server = freeradius_site.start(&cfg)?;
        let m = radius_bench::measure(&mut server, &cfg)?;
        drop(server);
        print_run(run, "freeradius", &m);
        freeradius.push(m);
    }

    println!("\nmedians of {} runs:", cfg.runs);
    println!(
        "{:<14} {:>9} {:>9} {:>11} {:>6} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "server",
        "req/s",
        "CPU-s",
        "req/CPU-s",
        "core",
        "p50 ms",
        "p99 ms",
        "accepts",
        "rejects",
        "timeouts",
        "RSS MiB"
    );
    let a = Summary::of(&agent);
    let f = Summary::of(&freeradius);
    a.print("outpost-agent");
    f.print("freeradius");
    println!(
        "\nagent / FreeRADIUS: {:.2}x requests per second, {:.2}x requests per server CPU-second \
         (aim: at least 3x per CPU-second); p99 {:.2} ms vs {:.2} ms; agent RSS {:.1} MiB",
        a.per_second / f.per_second,
        a.per_cpu_second / f.per_cpu_second,
        a.p99_ms,
        f.p99_ms,
        a.rss_mib,
    );
    Ok(())
}

fn ms(d: Option<std::time::Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn print_run(run: usize, name: &str, m: &Measurement) {
    let l = &m.load;
    println!(
        "run {run} {name}: {} sent, {} accepts, {} rejects, {} other, {} timeouts, {} unmatched, {} UDP receive-buffer drops in {:.2} s \
         = {:.0} req/s; server {:.2} CPU-s ({:.0}% of a core) = {:.0} req/CPU-s; p50 {:.2} ms, p99 {:.2} ms; \
         generator {:.0}% of a core; server RSS {:.1} MiB",
        l.sent,
        l.accepts,
        l.rejects,
        l.other,
        l.timeouts,
        l.unmatched,
        m.udp_rcvbuf_drops,
        l.elapsed.as_secs_f64(),
        m.per_second(),
        m.server_cpu_secs,
        m.server_core_share() * 100.0,
        m.per_cpu_second(),
        ms(l.latency(0.5)),
        ms(l.latency(0.99)),
        m.generator_core_share() * 100.0,
        m.server_rss_kib as f64 / 1024.0,
    );
}

/// The median of each figure over a server's runs.
struct Summary {
    per_second: f64,
    cpu_secs: f64,
    per_cpu_second: f64,
    core_share: f64,
    p50_ms: f64,
    p99_ms: f64,
    accepts: f64,
    rejects: f64,
    timeouts: f64,
    rss_mib: f64,
}

impl Summary {
    fn of(runs: &[Measurement]) -> Self {
        let m = |f: fn(&Measurement) -> f64| median(runs.iter().map(f));
        Self {
            per_second: m(Measurement::per_second),
            cpu_secs: m(|r| r.server_cpu_secs),
            per_cpu_second: m(Measurement::per_cpu_second),
            core_share: m(Measurement::server_core_share),
            p50_ms: m(|r| ms(r.load.latency(0.5))),
            p99_ms: m(|r| ms(r.load.latency(0.99))),
            accepts: m(|r| r.load.accepts as f64),
            rejects: m(|r| r.load.rejects as f64),
            timeouts: m(|r| r.load.timeouts as f64),
            rss_mib: m(|r| r.server_rss_kib as f64 / 1024.0),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<14} {:>9.0} {:>9.2} {:>11.0} {:>5.0}% {:>8.2} {:>8.2} {:>9.0} {:>8.0} {:>9.0} {:>9.1}",
            self.per_second,
            self.cpu_secs,
            self.per_cpu_second,
            self.core_share * 100.0,
            self.p50_ms,
            self.p99_ms,
            self.accepts,
            self.rejects,
            self.timeouts,
            self.rss_mib,
        );
    }
}
