//! Whole-system tests and benchmarks for Outpost.
//!
//! # Layout
//! - [`renewals`]: renewals per second through the controller's HTTP API, side by side
//!   with the raw SQLite rate of the same transaction shape. Run the benchmark with
//!   `cargo bench -p outpost-tests --bench renewals`; `tests/renewals_smoke.rs` runs it
//!   small to keep it correct.
//! - [`enforce_bench`]: cutting off subscribers: the agent's nftables enforcement
//!   (`Enforcer`) against `nft -f`, `nft -j -f`, the `nft` CLI and iptables, in
//!   throwaway namespaces. `cargo bench -p outpost-tests --bench enforce` (root);
//!   `tests/enforce_bench_smoke.rs` runs it tiny.
//! - [`radius_bench`]: RADIUS PAP Access-Requests (with Message-Authenticator) for
//!   100,000 subscribers against the `outpost-agent` binary and FreeRADIUS 3 side by
//!   side, each pinned to one core. Run it with `cargo bench -p outpost-tests --bench
//!   radius` (root, Debian `freeradius` installed); `tests/radius_bench_smoke.rs` runs
//!   the load generator small against the agent's server in-process.
//! - [`wan_bench`]: WAN checks: one sweep of 10,000 and 100,000 answering targets by the
//!   agent's ICMP engine (the `wan-sweep` binary) against fping 5.1, in throwaway
//!   namespaces. `cargo bench -p outpost-tests --bench wan` (root, Debian `fping`);
//!   `tests/wan_bench_smoke.rs` runs it small.
//! - [`panel_bench`]: the panel's subscriber list, searches and filtered lists over
//!   1,000,000 seeded subscribers, as the operator and as a reseller, p50/p99 through
//!   the real `app()` on loopback. `cargo bench -p outpost-tests --bench panel` (env
//!   SUBSCRIBERS, SAMPLES); `tests/panel_bench_smoke.rs` runs it small.
//! - [`radload`]: the RADIUS load generator both servers face (radclient saturates
//!   below the rates measured): a window of outstanding requests over several sockets,
//!   every reply verified, accepts, rejects and timeouts counted, latencies kept.
//! - [`lab`]: the netns lab: namespaces (from `outpost-testkit`) joined by veth links
//!   (subscribers, a BNG, the internet with a web server and a resolver, the
//!   controller), removed with every process inside when the test ends.
//! - [`tunnel_bench`]: N agents long-polling through the WireGuard plane (real
//!   controller, hub and one `wireguard-go` per agent; the agents' processes simulated
//!   by tasks): controller CPU and RSS while the polls are held, time for all to resync
//!   after a controller restart. `cargo bench -p outpost-tests --bench tunnel` (env
//!   AGENTS, HOLD_SECS, WAIT_SECS); `tests/tunnel_bench_smoke.rs` runs it small.
//! - [`messages_bench`]: the controller's message outbox against a local provider
//!   (the generic HTTP gateway shape on loopback): messages/s beside the same posts
//!   with no outbox, and enqueue → received latency p50/p99 at a steady rate.
//!   `cargo bench -p outpost-tests --bench messages` (env MESSAGES, RATE,
//!   LATENCY_MESSAGES, RUNS); `tests/messages_smoke.rs` runs it small.
//! - [`system`]: what the whole-system tests share besides `outpost-testkit`: the real
//!   binaries, the first operator login, RFC 3339 times, benchmark knobs.

pub mod enforce_bench;
pub mod lab;
pub mod messages_bench;
pub mod panel_bench;
pub mod radius_bench;
pub mod radload;
pub mod renewals;
pub mod shape_bench;
pub mod system;
pub mod tunnel_bench;
pub mod wan_bench;
