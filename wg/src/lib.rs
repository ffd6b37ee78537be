//! Outpost's WireGuard interfaces, for the controller's hub and each agent's spoke.
//!
//! [`Interface::up`] brings an interface up with its key, port, address and peers:
//! with the [`Backend::Kernel`] module (`ip link add … type wireguard`) where the kernel
//! has it, or by running Debian's `wireguard-go` for it ([`Backend::Userspace`]) where
//! not. Either way it is configured through `wireguard-control` (netlink, or the UAPI
//! socket `wireguard-go` opens under `/var/run/wireguard`). The owner then adds and
//! removes peers and reads their handshakes and bytes; dropping the [`Interface`] stops
//! it (the `wireguard-go` it started, or the kernel link).
//!
//! Mechanism only: nothing here knows about sites, agents or a database. Addresses and
//! routes are set with iproute2's `ip`.
//!
//! # Layout
//! - [`Backend`], [`InterfaceSpec`], [`Peer`]: what to bring up, as plain data.
//! - [`Interface`]: a running interface, its peers and their [`PeerStatus`].
//! - [`status`]: the peers of an interface another process runs (`outpost-agent status`).
//! - [`delete_leftover`]: a link a crashed run left behind.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
pub use wireguard_control::Key;
use wireguard_control::{DeviceUpdate, InterfaceName, PeerConfigBuilder};

/// How the interface is implemented. Always chosen explicitly in a config and reported
/// at start: the two behave the same on the wire, not in how they are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The kernel's `wireguard` module.
    Kernel,
    /// `wireguard-go` (Debian package `wireguard-go`), one process per interface.
    Userspace,
}

impl Backend {
    fn control(self) -> wireguard_control::Backend {
        match self {
            Backend::Kernel => wireguard_control::Backend::Kernel,
            Backend::Userspace => wireguard_control::Backend::Userspace,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace (wireguard-go)",
        })
    }
}

/// Why an interface could not be brought up or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name is not a valid Linux interface name.
    #[error("'{0}' is not a usable interface name (1 to 15 characters, no '/' or spaces)")]
    Name(String),
    /// A key is not base64 of 32 bytes.
    #[error("{what} is not a WireGuard key (base64 of 32 bytes)")]
    Key {
        /// Which key.
        what: &'static str,
    },
    /// An endpoint did not resolve to an address.
    #[error("endpoint '{0}' does not resolve to an address")]
    Endpoint(String),
    /// `wireguard-go` could not be started, or did not open its socket.
    #[error("wireguard-go for {iface}: {message}")]
    Userspace {
        /// The interface.
        iface: String,
        /// What went wrong.
        message: String,
    },
    /// A command (`ip`) failed.
    #[error("{command}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// Configuring the interface through `wireguard-control` failed.
    #[error("configuring WireGuard interface {iface}")]
    Configure {
        /// The interface.
        iface: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to bring up.
#[derive(Debug, Clone)]
pub struct InterfaceSpec {
    /// The interface name (at most 15 characters). `/var/run/wireguard` is shared by
    /// every network namespace, so names must be unique on the host.
    pub name: String,
    /// Kernel or userspace.
    pub backend: Backend,
    /// The interface's private key (base64).
    pub private_key: String,
    /// UDP port to listen on; `None`: any (a spoke that only dials out).
    pub listen_port: Option<u16>,
    /// The interface's own address and the prefix routed through it.
    pub address: Ipv4Net,
    /// More prefixes routed through the interface (a spoke's route to its hub).
    pub routes: Vec<Ipv4Net>,
}

/// One peer, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's public key (base64).
    pub public_key: String,
    /// The pair's preshared key (base64).
    pub preshared_key: Option<String>,
    /// `host:port` to send to first; `None`: learnt from the peer's packets (the hub).
    pub endpoint: Option<String>,
    /// PersistentKeepalive, seconds.
    pub keepalive_secs: Option<u16>,
    /// The addresses the peer may send from and is routed to.
    pub allowed_ips: Vec<Ipv4Net>,
}

/// One peer as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key (base64).
    pub public_key: String,
    /// Where its packets last came from (or the endpoint configured).
    pub endpoint: Option<SocketAddr>,
    /// The last completed handshake; `None`: never.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Its allowed IPs, `a.b.c.d/n`.
    pub allowed_ips: Vec<String>,
}

/// A running interface. Dropping it stops it.
pub struct Interface {
    name: InterfaceName,
    backend: Backend,
    /// The `wireguard-go` this process started (userspace).
    daemon: Option<Child>,
}

/// Parses a base64 key; `what` names it in the error.
pub fn key(what: &'static str, b64: &str) -> Result<Key> {
    Key::from_base64(b64.trim()).map_err(|_| Error::Key { what })
}

/// A new private key (base64).
pub fn generate_private_key() -> String {
    Key::generate_private().to_base64()
}

/// A new preshared key (base64).
pub fn generate_preshared_key() -> String {
    Key::generate_preshared().to_base64()
}

/// The public key of a private one (both base64).
pub fn public_key(private: &str) -> Result<String> {
    Ok(key("the private key", private)?.get_public().to_base64())
}

fn iface_name(name: &str) -> Result<InterfaceName> {
    name.parse().map_err(|_| Error::Name(name.to_string()))
}

fn socket_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn builder(p: &Peer) -> Result<PeerConfigBuilder> {
    let mut b =
        PeerConfigBuilder::new(&key("a peer's public key", &p.public_key)?).replace_allowed_ips();
    if let Some(psk) = &p.preshared_key {
        b = b.set_preshared_key(key("a preshared key", psk)?);
    }
    if let Some(ep) = &p.endpoint {
        let addr = ep
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Error::Endpoint(ep.clone()))?;
        b = b.set_endpoint(addr);
    }
    if let Some(k) = p.keepalive_secs {
        b = b.set_persistent_keepalive_interval(k);
    }
    for net in &p.allowed_ips {
        b = b.add_allowed_ip(net.addr().into(), net.prefix_len());
    }
    Ok(b)
}

impl Interface {
    /// Brings the interface up with exactly `peers`. A link of the same name left by a
    /// crashed run (its `wireguard-go` orphaned) is deleted first, so what runs is what
    /// `spec` says.
    pub fn up(spec: &InterfaceSpec, peers: &[Peer]) -> Result<Interface> {
        let name = iface_name(&spec.name)?;
        let private = key("the interface's private key", &spec.private_key)?;
        if link_exists(&spec.name) {
            tracing::warn!(iface = %spec.name, "deleting a leftover interface of the same name");
            ip(&["link", "del", "dev", &spec.name])?;
        }
        let mut iface = Interface {
            name,
            backend: spec.backend,
            daemon: None,
        };
        match spec.backend {
            Backend::Kernel => ip(&["link", "add", "dev", &spec.name, "type", "wireguard"])?,
            Backend::Userspace => iface.daemon = Some(start_wireguard_go(&spec.name)?),
        }
        // From here on, Drop takes the interface down again if anything fails.
        let mut update = DeviceUpdate::new().set_private_key(private).replace_peers();
        if let Some(port) = spec.listen_port {
            update = update.set_listen_port(port);
        }
        for p in peers {
            update = update.add_peer(builder(p)?);
        }
        iface.apply(update)?;
        ip(&[
            "address",
            "replace",
            &spec.address.to_string(),
            "dev",
            &spec.name,
        ])?;
        ip(&["link", "set", "dev", &spec.name, "up"])?;
        for r in &spec.routes {
            ip(&["route", "replace", &r.to_string(), "dev", &spec.name])?;
        }
        tracing::info!(iface = %spec.name, backend = %spec.backend, address = %spec.address,
            peers = peers.len(), "WireGuard interface up");
        Ok(iface)
    }

    fn apply(&self, update: DeviceUpdate) -> Result<()> {
        update
            .apply(&self.name, self.backend.control())
            .map_err(|source| Error::Configure {
                iface: self.name.to_string(),
                source,
            })
    }

    /// The interface name.
    pub fn name(&self) -> String {
        self.name.to_string()
    }

    /// Adds peers, or replaces the settings of peers already there (by public key).
    pub fn set_peers(&self, peers: &[Peer]) -> Result<()> {
        let mut update = DeviceUpdate::new();
        for p in peers {
            update = update.add_peer(builder(p)?);
        }
        self.apply(update)
    }

    /// Removes peers by public key; one not there is no error.
    pub fn remove_peers(&self, public_keys: &[String]) -> Result<()> {
        let mut update = DeviceUpdate::new();
        for k in public_keys {
            update = update.remove_peer_by_key(&key("a peer's public key", k)?);
        }
        self.apply(update)
    }

    /// Routes `nets` through this interface, taking them from any other interface that
    /// had them (a rotation moving the route to the controller to the new key's).
    pub fn route(&self, nets: &[Ipv4Net]) -> Result<()> {
        let name = self.name.to_string();
        for r in nets {
            ip(&["route", "replace", &r.to_string(), "dev", &name])?;
        }
        Ok(())
    }

    /// Every peer now, with its handshake and bytes.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        status(&self.name.to_string(), self.backend)
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        let name = self.name.to_string();
        match self.daemon.take() {
            Some(mut child) => {
                // The TUN device goes with the process; its socket file stays behind.
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(socket_path(&name));
            }
            None => {
                let _ = ip(&["link", "del", "dev", &name]);
            }
        }
        tracing::info!(iface = %name, "WireGuard interface stopped");
    }
}

/// Deletes the link `name` if one is there (its `wireguard-go` exits with it): an
/// interface a crashed run left behind that nothing will bring up again.
pub fn delete_leftover(name: &str) {
    if iface_name(name).is_ok() && link_exists(name) {
        tracing::warn!(iface = %name, "deleting a leftover interface");
        let _ = ip(&["link", "del", "dev", name]);
        let _ = std::fs::remove_file(socket_path(name));
    }
}

/// Starts `wireguard-go` in the foreground (so it is our child, stopped by PID) and
/// waits until its UAPI socket answers.
fn start_wireguard_go(name: &str) -> Result<Child> {
    let err = |message: String| Error::Userspace {
        iface: name.to_string(),
        message,
    };
    let sock = socket_path(name);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        return Err(err(format!(
            "{} already answers: a wireguard-go in another network namespace uses this name",
            sock.display()
        )));
    }
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new("wireguard-go")
        .args(["-f", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            err(if e.kind() == io::ErrorKind::NotFound {
                "wireguard-go is not installed (Debian package wireguard-go)".into()
            } else {
                e.to_string()
            })
        })?;
    let started = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() && link_exists(name) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(err(format!(
                "exited at start ({status}); it needs root and /dev/net/tun"
            )));
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err("did not open its socket within 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The peers of interface `name` (which any process may run), with handshakes and bytes.
pub fn status(name: &str, backend: Backend) -> Result<Vec<PeerStatus>> {
    let iname = iface_name(name)?;
    let dev = wireguard_control::Device::get(&iname, backend.control()).map_err(|source| {
        Error::Configure {
            iface: name.to_string(),
            source,
        }
    })?;
    Ok(dev
        .peers
        .into_iter()
        .map(|p| PeerStatus {
            public_key: p.config.public_key.to_base64(),
            endpoint: p.config.endpoint,
            last_handshake: p.stats.last_handshake_time,
            rx_bytes: p.stats.rx_bytes,
            tx_bytes: p.stats.tx_bytes,
            allowed_ips: p
                .config
                .allowed_ips
                .iter()
                .map(|a| format!("{}/{}", a.address, a.cidr))
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_derive() {
        let private = generate_private_key();
        let public = public_key(&private).unwrap();
        assert_eq!(key("x", &public).unwrap().to_base64(), public);
        let e = key("the thing", "not-a-key").unwrap_err().to_string();
        assert!(e.contains("the thing is not a WireGuard key"), "{e}");
        assert!(public_key("AAAA").is_err());
    }

    #[test]
    fn a_bad_name_or_endpoint_is_refused_before_anything_runs() {
        let spec = InterfaceSpec {
            name: "much-too-long-a-name".into(),
            backend: Backend::Userspace,
            private_key: generate_private_key(),
            listen_port: None,
            address: "10.66.0.2/32".parse().unwrap(),
            routes: vec![],
        };
        assert!(matches!(Interface::up(&spec, &[]), Err(Error::Name(_))));
        let p = Peer {
            public_key: public_key(&generate_private_key()).unwrap(),
            preshared_key: None,
            endpoint: Some("no port here".into()),
            keepalive_secs: None,
            allowed_ips: vec![],
        };
        assert!(matches!(builder(&p), Err(Error::Endpoint(_))));
    }

    #[test]
    fn the_backend_is_named_in_configs_in_lower_case() {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            "userspace".into_deserializer();
        assert_eq!(Backend::deserialize(de).unwrap(), Backend::Userspace);
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            "wireguard-go".into_deserializer();
        assert!(Backend::deserialize(de).is_err());
    }
}
