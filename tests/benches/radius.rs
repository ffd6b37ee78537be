//! RADIUS side by side, the agent against FreeRADIUS 3 (`files`, `detail`), each pinned
//! to one core, both driven by our own load generator pinned to another. The lanes
//! (`LANES`, default all four; see `outpost_tests::radius_bench`):
//!
//! - `pap`: PAP Access-Requests for 100,000 subscribers, closed loop;
//! - `acct`: Accounting Start/Interim-Update/Stop, closed loop, each answered once
//!   durable (agent: group commit with `fsync`; FreeRADIUS: written to `detail`);
//! - `latency`: PAP and accounting each paced at one fixed rate on both servers (half of
//!   FreeRADIUS's maximum of the same kind in the same run unless PACED_RATE is set),
//!   latency from each request's due time;
//! - `flood`: paced valid logins (VALID_RATE, 1,000/s) alone, then beside paced wrong
//!   passwords (FLOOD_RATE, 10,000/s).
//!
//! `cargo bench -p outpost-tests --bench radius` (as root, with Debian's `freeradius`
//! installed). Environment: LANES, SUBSCRIBERS, REQUESTS, MAX_SECS, SOCKETS, WINDOW,
//! TIMEOUT_MS, RUNS, WARMUP, SERVER_CPU, GENERATOR_CPU, MESSAGE_AUTHENTICATOR (0/1),
//! PACED_RATE, PACED_SECS, FLOOD_RATE, VALID_RATE, NICE, AGENT_RUST_LOG, OUTPOST_AGENT_BIN;
//! see `outpost_tests::radius_bench::BenchConfig`.
//!
//! Each run starts each server afresh, warms it up and runs every lane on it; the runs
//! alternate between the two servers (FreeRADIUS first, so its maxima set the paced
//! rate both servers then face) so that whatever else the machine is doing falls on
//! both. Prints every run and the medians; the ratios are the figures. Nothing is
//! asserted.

use std::time::Duration;

use outpost_tests::radius_bench::{
    self, AgentSite, BenchConfig, FreeRadiusSite, Measurement, PacedMeasurement, RunningServer,
    median,
};
use outpost_tests::radload::RequestKind;

/// What one server did in one run, lane by lane.
#[derive(Default)]
struct Run {
    pap: Option<Measurement>,
    acct: Option<Measurement>,
    /// PAP then accounting, paced.
    latency: Option<(PacedMeasurement, PacedMeasurement)>,
    /// The valid logins alone, then with the flood beside them.
    flood: Option<(PacedMeasurement, PacedMeasurement)>,
}

/// The paced rates of one run.
#[derive(Clone, Copy)]
struct Rates {
    pap: f64,
    acct: f64,
}

fn main() -> anyhow::Result<()> {
    let cfg = BenchConfig::from_env()?;
    // Built before pinning, so the build may use every core.
    let agent_binary = radius_bench::agent_binary()?;
    radius_bench::pin_this_process(cfg.generator_cpu)?;
    radius_bench::renice_this_thread(cfg.nice)?;
    println!(
        "RADIUS lanes {:?}: {} subscribers; closed loop {} requests or {:?} per run, {} sockets x {} outstanding{}, \
         timeout {:?}; paced runs {:?}, flood {}/s wrong passwords beside {}/s valid; \
         servers on CPU {}, generator on CPU {}, nice {}; {} runs each",
        cfg.lanes,
        cfg.subscribers,
        cfg.requests,
        cfg.max_duration,
        cfg.sockets,
        cfg.window,
        if cfg.message_authenticator {
            ", Access-Requests with Message-Authenticator"
        } else {
            ""
        },
        cfg.timeout,
        cfg.paced_duration,
        cfg.flood_rate,
        cfg.valid_rate,
        cfg.server_cpu,
        cfg.generator_cpu,
        cfg.nice,
        cfg.runs,
    );
    let agent_site = AgentSite::prepare(&agent_binary, &cfg)?;
    let freeradius_site = FreeRadiusSite::prepare(&cfg)?;
    let (mut agent, mut freeradius) = (Vec::new(), Vec::new());
    for run in 1..=cfg.runs {
        let mut server = freeradius_site.start(&cfg)?;
        let mut fr = Run::default();
        closed_lanes(&mut server, &cfg, run, &mut fr)?;
        let rates = Rates {
            pap: cfg
                .paced_rate
                .or(fr.pap.as_ref().map(|m| (m.per_second() / 2.0).round()))
                .unwrap_or(5_000.0),
            acct: cfg
                .paced_rate
                .or(fr.acct.as_ref().map(|m| (m.per_second() / 2.0).round()))
                .unwrap_or(5_000.0),
        };
        paced_lanes(&mut server, &cfg, run, rates, &mut fr)?;
        drop(server);
        freeradius.push(fr);

        let mut server = agent_site.start(&cfg)?;
        let mut ours = Run::default();
        closed_lanes(&mut server, &cfg, run, &mut ours)?;
        paced_lanes(&mut server, &cfg, run, rates, &mut ours)?;
        drop(server);
        agent.push(ours);
    }
    summarize(&cfg, &agent, &freeradius);
    Ok(())
}

fn closed_lanes(
    server: &mut RunningServer,
    cfg: &BenchConfig,
    run: usize,
    into: &mut Run,
) -> anyhow::Result<()> {
    if cfg.runs_lane("pap") {
        let m = radius_bench::measure(server, cfg)?;
        print_run(run, server.name, "pap", &m);
        into.pap = Some(m);
    }
    if cfg.runs_lane("acct") {
        let m = radius_bench::measure_accounting(server, cfg)?;
        print_run(run, server.name, "acct", &m);
        into.acct = Some(m);
    }
    Ok(())
}

fn paced_lanes(
    server: &mut RunningServer,
    cfg: &BenchConfig,
    run: usize,
    rates: Rates,
    into: &mut Run,
) -> anyhow::Result<()> {
    if cfg.runs_lane("latency") {
        let pap = radius_bench::measure_paced(
            server,
            &[cfg.paced(server.auth, RequestKind::Pap, rates.pap)],
        )?;
        print_paced(
            run,
            server.name,
            &format!("latency pap {}/s", rates.pap),
            &pap,
        );
        let acct = radius_bench::measure_paced(
            server,
            &[cfg.paced(server.acct, RequestKind::Accounting, rates.acct)],
        )?;
        print_paced(
            run,
            server.name,
            &format!("latency acct {}/s", rates.acct),
            &acct,
        );
        into.latency = Some((pap, acct));
    }
    if cfg.runs_lane("flood") {
        let valid = cfg.paced(server.auth, RequestKind::Pap, cfg.valid_rate);
        let flood = cfg.paced(server.auth, RequestKind::WrongPassword, cfg.flood_rate);
        let alone = radius_bench::measure_paced(server, std::slice::from_ref(&valid))?;
        print_paced(
            run,
            server.name,
            &format!("valid {}/s alone", cfg.valid_rate),
            &alone,
        );
        let flooded = radius_bench::measure_paced(server, &[valid, flood])?;
        print_paced(
            run,
            server.name,
            &format!(
                "valid {}/s + wrong passwords {}/s",
                cfg.valid_rate, cfg.flood_rate
            ),
            &flooded,
        );
        into.flood = Some((alone, flooded));
    }
    Ok(())
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn print_run(run: usize, name: &str, lane: &str, m: &Measurement) {
    let l = &m.load;
    println!(
        "run {run} {name} {lane}: {} sent, {} accepts, {} rejects, {} acct responses, {} other, {} timeouts, {} unmatched, \
         {} UDP receive-buffer drops in {:.2} s = {:.0} req/s; server {:.2} CPU-s ({:.0}% of a core) = {:.0} req/CPU-s; \
         p50 {:.2} ms, p99 {:.2} ms; generator {:.0}% of a core; server RSS {:.1} MiB",
        l.sent,
        l.accepts,
        l.rejects,
        l.accounting_responses,
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

fn print_paced(run: usize, name: &str, what: &str, m: &PacedMeasurement) {
    for (i, l) in m.lanes.iter().enumerate() {
        println!(
            "run {run} {name} {what} [lane {i}]: {} sent, {} answered ({} accepts, {} rejects, {} acct responses), \
             {} timeouts, {} unmatched; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms from due time; \
             generator late p99 {:.3} ms",
            l.sent,
            l.answered(),
            l.accepts,
            l.rejects,
            l.accounting_responses,
            l.timeouts,
            l.unmatched,
            ms(l.latency(0.5)),
            ms(l.latency(0.99)),
            ms(l.latency(0.999)),
            ms(l.lateness(0.99)),
        );
    }
    println!(
        "run {run} {name} {what}: server {:.2} CPU-s over {:.2} s ({:.0}% of a core), {} UDP receive-buffer drops",
        m.server_cpu_secs,
        m.wall.as_secs_f64(),
        m.server_cpu_secs / m.wall.as_secs_f64() * 100.0,
        m.udp_rcvbuf_drops,
    );
}

/// Medians of a closed-loop lane.
struct Closed {
    per_second: f64,
    cpu_secs: f64,
    per_cpu_second: f64,
    core_share: f64,
    p50_ms: f64,
    p99_ms: f64,
    answered: f64,
    timeouts: f64,
}

impl Closed {
    fn of<'a>(runs: impl Iterator<Item = &'a Measurement> + Clone) -> Self {
        let m = |f: fn(&Measurement) -> f64| median(runs.clone().map(f));
        Self {
            per_second: m(Measurement::per_second),
            cpu_secs: m(|r| r.server_cpu_secs),
            per_cpu_second: m(Measurement::per_cpu_second),
            core_share: m(Measurement::server_core_share),
            p50_ms: m(|r| ms(r.load.latency(0.5))),
            p99_ms: m(|r| ms(r.load.latency(0.99))),
            answered: m(|r| r.load.answered() as f64),
            timeouts: m(|r| r.load.timeouts as f64),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<14} {:>9.0} {:>9.2} {:>11.0} {:>5.0}% {:>8.2} {:>8.2} {:>9.0} {:>9.0}",
            self.per_second,
            self.cpu_secs,
            self.per_cpu_second,
            self.core_share * 100.0,
            self.p50_ms,
            self.p99_ms,
            self.answered,
            self.timeouts,
        );
    }
}

/// Medians of one paced lane.
struct Paced {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    late_p99_ms: f64,
    timeouts: f64,
    cpu_share: f64,
}

impl Paced {
    fn of<'a>(runs: impl Iterator<Item = &'a PacedMeasurement> + Clone, lane: usize) -> Self {
        let m = |f: &dyn Fn(&PacedMeasurement) -> f64| median(runs.clone().map(f));
        Self {
            p50_ms: m(&|r| ms(r.lanes[lane].latency(0.5))),
            p99_ms: m(&|r| ms(r.lanes[lane].latency(0.99))),
            p999_ms: m(&|r| ms(r.lanes[lane].latency(0.999))),
            late_p99_ms: m(&|r| ms(r.lanes[lane].lateness(0.99))),
            timeouts: m(&|r| r.lanes[lane].timeouts as f64),
            cpu_share: m(&|r| r.server_cpu_secs / r.wall.as_secs_f64()),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<40} {:>8.3} {:>8.3} {:>9.3} {:>9.3} {:>9.0} {:>5.0}%",
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.late_p99_ms,
            self.timeouts,
            self.cpu_share * 100.0,
        );
    }
}

fn summarize(cfg: &BenchConfig, agent: &[Run], freeradius: &[Run]) {
    println!("\nmedians of {} runs:", cfg.runs);
    for (lane, pick, aim) in [
        (
            "pap",
            (|r: &Run| r.pap.as_ref()) as fn(&Run) -> Option<&Measurement>,
            "at least 3x",
        ),
        ("acct", |r: &Run| r.acct.as_ref(), "at least 2x"),
    ] {
        if !cfg.runs_lane(lane) {
            continue;
        }
        println!(
            "\n{lane}: {:<9} {:>9} {:>9} {:>11} {:>6} {:>8} {:>8} {:>9} {:>9}",
            "server",
            "req/s",
            "CPU-s",
            "req/CPU-s",
            "core",
            "p50 ms",
            "p99 ms",
            "answered",
            "timeouts"
        );
        let a = Closed::of(agent.iter().filter_map(pick));
        let f = Closed::of(freeradius.iter().filter_map(pick));
        a.print("outpost-agent");
        f.print("freeradius");
        println!(
            "{lane}: agent / FreeRADIUS: {:.2}x requests per second, {:.2}x requests per server CPU-second \
             (aim: {aim} per CPU-second); p99 {:.2} ms vs {:.2} ms",
            a.per_second / f.per_second,
            a.per_cpu_second / f.per_cpu_second,
            a.p99_ms,
            f.p99_ms,
        );
    }
    let header = |title: &str| {
        println!(
            "\n{title:<40} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6}",
            "p50 ms", "p99 ms", "p99.9 ms", "late p99", "timeouts", "core"
        )
    };
    if cfg.runs_lane("latency") {
        header("latency at a fixed rate (from due time)");
        for (kind, pick) in [
            (
                "pap",
                (|r: &Run| r.latency.as_ref().map(|l| &l.0))
                    as fn(&Run) -> Option<&PacedMeasurement>,
            ),
            ("acct", |r: &Run| r.latency.as_ref().map(|l| &l.1)),
        ] {
            Paced::of(agent.iter().filter_map(pick), 0).print(&format!("{kind} outpost-agent"));
            Paced::of(freeradius.iter().filter_map(pick), 0).print(&format!("{kind} freeradius"));
        }
        println!("(aim: agent p99 under 2 ms)");
    }
    if cfg.runs_lane("flood") {
        header("valid logins' latency (from due time)");
        for (name, runs) in [("outpost-agent", agent), ("freeradius", freeradius)] {
            let alone: fn(&Run) -> Option<&PacedMeasurement> = |r| r.flood.as_ref().map(|f| &f.0);
            let flooded: fn(&Run) -> Option<&PacedMeasurement> = |r| r.flood.as_ref().map(|f| &f.1);
            Paced::of(runs.iter().filter_map(alone), 0).print(&format!("{name} alone"));
            Paced::of(runs.iter().filter_map(flooded), 0)
                .print(&format!("{name} beside the flood"));
            Paced::of(runs.iter().filter_map(flooded), 1)
                .print(&format!("{name} the flood's own rejects"));
        }
    }
}
