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
//! - [`api`]: a blocking client of the controller's JSON API that logs in with a
//!   cookie session and mints a bearer token.

pub mod api;
pub mod fixtures;
pub mod netns;
pub mod peer;
pub mod port;
pub mod process;
pub mod radclient;
