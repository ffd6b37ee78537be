//! Shaping 20 000 subscribers: the agent's `Shaper` (rtnetlink) against `tc -batch` of
//! the same plan, on the same kernel in one run.
//!
//! `cargo bench -p outpost-tests --bench shape` as root (Debian: iproute2). Environment:
//! SIZES ("1000,5000,20000" subscribers), RUNS (2 full applies per size and method),
//! CHANGES (20 re-rates per method, at the largest size); see
//! `outpost_tests::shape_bench::BenchConfig`.
//!
//! # Method
//! Each full apply gets a fresh namespace holding a veth `sub0` (up, peer down) and
//! builds the whole tree the agent builds (download on `sub0`, upload on the IFB
//! `ifbsh0`, 64 shard qdiscs, u32 hash tables, one class and two filters per subscriber
//! and direction, the ingress redirect):
//! - **ours**: `Shaper::full` (IFB set up with `ip`, the qdiscs looked at, then every
//!   operation as an rtnetlink message, ACKs checked), timed around the call; then a
//!   second `Shaper::full` of the same set over that tree (the agent's restart: the old
//!   tree is deleted first);
//! - **tc -batch**: the IFB made beforehand, then `tc -batch` of `batch_full` (the text of
//!   the same operations: what the agent ran before), started from a thread inside the
//!   namespace, timed to its exit.
//!
//! Both are verified after each apply (`tc class show` counts every subscriber's class
//! on both devices), outside the timing. At the largest size, CHANGES single re-rates
//! each way: `Shaper::upsert` of one subscriber with a new download rate (one
//! RTM_NEWTCLASS change), verified with `tc class show`; and one `tc class change`
//! process. CPU seconds of each full apply are reported beside the wall time (user +
//! system from `/proc`: the kernel builds the tree inside the sender's syscalls, so
//! this is the work itself, less exposed to a busy machine than wall time). Medians
//! are reported, with every sample; nothing is asserted here
//! (`tests/tests/shape_bench_smoke.rs` keeps the machinery correct).

use outpost_tests::shape_bench::{self, BenchConfig};

fn main() -> anyhow::Result<()> {
    let cfg = BenchConfig::from_env()?;
    println!("shaping benchmark: {cfg:?}");
    let r = shape_bench::run_all(&cfg)?;
    println!("{}", r.table());
    println!("ratios (tc -batch / ours):");
    for n in &cfg.sizes {
        if let (Some(t), Some(o), Some(over)) = (
            r.get(&format!("tc -batch of the same plan, {n},")),
            r.get(&format!("ours: Shaper::full of {n}, fresh")),
            r.get(&format!("ours: Shaper::full of {n} over")),
        ) {
            println!(
                "  full apply of {n:>6}: {:.2}x (ours {:.2} s, tc -batch {:.2} s; ours over its own tree {:.2} s)",
                t.median() / o.median(),
                o.median(),
                t.median(),
                over.median()
            );
        }
    }
    for n in &cfg.sizes {
        if let (Some(t), Some(o)) = (
            r.get(&format!("CPU: tc -batch of {n} ")),
            r.get(&format!("CPU: ours, Shaper::full of {n} ")),
        ) {
            println!(
                "  CPU seconds of a full apply of {n:>6}: {:.2}x (ours {:.2} s, tc -batch {:.2} s)",
                t.median() / o.median(),
                o.median(),
                t.median()
            );
        }
    }
    if let (Some(o), Some(t)) = (r.get("ours: upsert"), r.get("tc class change")) {
        println!(
            "  one re-rate: {:.1}x (ours {:.3} ms, tc class change {:.3} ms)",
            t.median() / o.median(),
            o.median() * 1e3,
            t.median() * 1e3
        );
    }
    Ok(())
}
