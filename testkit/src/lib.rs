//! Lab support shared by the tests of every Outpost crate. It depends on neither the
//! agent nor the controller, so the agent's own tests can use it as well as the
//! whole-system tests in `outpost-tests`.
//!
//! # Layout
//! - [`netns`]: network namespaces with unique names, veth links, threads that enter a
//!   namespace; every process inside is killed and the namespace deleted on drop, even
//!   when the test panics.
//! - [`peer`]: finding the real peers the tests drive, each named with the Debian
//!   package that provides it; a missing one fails the test saying what to install.
//! - [`process`]: children killed on drop, start-and-wait-for-a-line, stop by PID
//!   (SIGTERM, then SIGKILL), one polling helper with a deadline, and the parser of a
//!   server's `listening on http://ADDR` line.
//! - [`port`]: a free port, for the peers that cannot be given port 0.
//! - [`radclient`]: FreeRADIUS's `radclient` as the NAS, and the reply it printed.
//! - [`fixtures`]: `outpost-protocol` rows (subscribers, NAS, site states) with the
//!   values most tests want, to be overridden field by field.
//! - [`prom`]: a strict reader of the Prometheus text format, for `/metrics` tests (no
//!   Prometheus server is reachable from the tests).
//! - [`api`]: a blocking client of the controller's JSON API that logs in with a
//!   cookie session and mints a bearer token.
//!
//! # Tiers
//! - **plain** (`cargo test`): no root. Some plain tests drive a real peer and fail,
//!   naming the Debian package, when it is missing: `radclient` (freeradius-utils) for
//!   `agent/tests/radius_radclient.rs`, `agent/tests/health.rs`,
//!   `tests/tests/system_agent.rs` and `tests/tests/ops_systemd.rs`; `freeradius` for
//!   `agent/tests/coa_freeradius.rs`; `systemd` (`systemd-analyze`) for
//!   `tests/tests/ops_systemd.rs`.
//! - **browser** (`#[ignore = "browser: needs chromium"]`, run with
//!   `-- --include-ignored`): `tests/tests/panel_browser.rs` drives headless Chromium
//!   through chromedriver (`chromium`, `chromium-driver`); no root.
//! - **lab** (`#[ignore = "lab: needs root and netns"]`, run with
//!   `-- --include-ignored`): root and network namespaces, always, and by file:
//!   - `agent/tests/enforce_netns.rs`: iproute2, nftables, iputils-ping, procps
//!     (`sysctl`);
//!   - `agent/tests/shape_netns.rs`: iproute2 (`ip`, `tc`, `ss`), iperf3, procps;
//!   - `tests/tests/lab_edge.rs`: iproute2, nftables, iperf3, dnsmasq-base, curl,
//!     bind9-dnsutils (`dig`), iputils-ping, python3, freeradius-utils, procps;
//!   - `tests/tests/enforce_bench_smoke.rs`: iproute2, nftables, iptables,
//!     iputils-ping, procps;
//!   - `tests/tests/tunnel_lab.rs`: iproute2, wireguard-go, wireguard-tools;
//!   - this crate's own `netns` tests: iproute2.
//!
//!   `.ci/run` installs all of them but procps, which Debian images carry already.

pub mod api;
pub mod fixtures;
pub mod netns;
pub mod peer;
pub mod port;
pub mod process;
pub mod prom;
pub mod radclient;
