//! The WireGuard management plane under many agents: controller CPU and memory while
//! every agent holds a long poll through the tunnel, and the time for all of them to
//! resync after a controller restart.
//!
//! `cargo bench -p outpost-tests --bench tunnel` as root (Debian: wireguard-go,
//! iproute2). Environment: AGENTS (200), HOLD_SECS (30), WAIT_SECS (30, the agents'
//! default long-poll wait).
//!
//! # Method
//! Two namespaces joined by a veth: `ctl` runs the real `outpost-controller serve`
//! (this build's profile) with a userspace `[tunnel]` (its hub `wireguard-go`); AGENTS
//! sites are created and enrolled through the public API, each with its own WireGuard
//! key. In `spokes`, each agent gets its own real `wireguard-go` interface, brought up
//! by the agent's code (`outpost_agent::wg::Tunnel::up`, with its re-handshake while
//! the controller is unreachable), and a task long-polling `/agent/v1/state` with its
//! own credential from its own overlay address (a per-agent source rule sends it out
//! of its own interface). The agents' processes are simulated (one process, no store,
//! no acknowledgement); the polls, keys, peers and tunnels are real. Once all have had
//! their first answer, CPU (utime + stime from /proc) and RSS (VmRSS) of the controller
//! and of its hub are read over HOLD_SECS while the polls are held (the fewest in
//! flight is printed). Then the controller is stopped (SIGTERM) and started again on
//! the same data; the time until every agent has had an answer from the new process is
//! measured from its spawn and from its `listening` line. Agents back off 1 s doubling
//! to 60 s on failure, as the agent's sync loop does. Nothing is asserted here;
//! `tests/tests/tunnel_bench_smoke.rs` keeps the machinery correct.

use std::time::Duration;

use outpost_tests::system::env_or;

fn main() -> anyhow::Result<()> {
    let agents: usize = env_or("AGENTS", 200)?;
    let hold: u64 = env_or("HOLD_SECS", 30)?;
    let wait: u32 = env_or("WAIT_SECS", 30)?;
    println!("tunnel benchmark: {agents} agents, hold {hold} s, long-poll wait {wait} s");
    let f = outpost_tests::tunnel_bench::run(agents, Duration::from_secs(hold), wait)?;
    print!("{}", outpost_tests::tunnel_bench::report(&f));
    Ok(())
}
