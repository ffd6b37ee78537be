//! The WireGuard management plane, controller side: the hub every agent is the one
//! spoke of.
//!
//! [`Tunnel::load`] reads (or, once, creates) the controller's private key in the data
//! directory. [`Tunnel::check_overlay`] refuses to start when the overlay would clash
//! with addresses subscribers use. [`Tunnel::up`] brings the interface up (kernel or
//! `wireguard-go`, as configured) with every live agent's peer from the database, so a
//! restart restores them all. Enrolment, re-enrolment and revocation compute a
//! [`PeerChange`] in their transaction (the database decides) and apply it through
//! [`Tunnel::apply`] before committing; without an interface (the plain test tier,
//! which checks the rows) applying changes nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use ipnet::Ipv4Net;
use outpost_protocol as proto;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::TunnelConfig;
use crate::error::{Error, Result};

/// The controller's side of the plane. One per process; shared by the handlers.
pub struct Tunnel {
    pub config: TunnelConfig,
    /// The controller's WireGuard public key (base64), handed to agents.
    pub public_key: String,
    private_key: String,
    iface: Mutex<Option<outpost_wg::Interface>>,
}

/// What one transaction does to the interface's peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChange {
    /// Peers to add (or update).
    pub add: Vec<outpost_wg::Peer>,
    /// Public keys of peers to remove.
    pub remove: Vec<String>,
}

/// A peer's live figures, as the site's agent view shows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TunnelPeer {
    /// The last completed handshake (RFC 3339); null: none since the interface came up.
    pub last_handshake_at: Option<String>,
    /// Where the agent's packets last came from, `ip:port`.
    pub endpoint: Option<String>,
    /// Bytes received from the agent.
    pub rx_bytes: u64,
    /// Bytes sent to the agent.
    pub tx_bytes: u64,
}

impl Tunnel {
    /// The plane as configured, with the controller's key from `data_dir/wireguard.key`
    /// (generated on first start, never replaced). No interface yet: see [`Tunnel::up`].
    pub fn load(config: &TunnelConfig, data_dir: &Path) -> anyhow::Result<Tunnel> {
        let path = data_dir.join("wireguard.key");
        let bytes = crate::crypto::load_or_create_key_file(&path, || {
            outpost_wg::generate_private_key().into_bytes()
        })?;
        let private_key = String::from_utf8(bytes)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| outpost_wg::key("", k).is_ok())
            .with_context(|| format!("{} is not a WireGuard private key", path.display()))?;
        Ok(Tunnel {
            config: config.clone(),
            public_key: outpost_wg::public_key(&private_key)?,
            private_key,
            iface: Mutex::new(None),
        })
    }

    /// The controller's address in the overlay.
    pub fn address(&self) -> Ipv4Addr {
        self.config.controller_address()
    }

    /// Refuses an overlay that holds addresses subscribers use: a static address given
    /// to a subscriber, or a framed address an online session reported (the sites'
    /// pools). Either would route that subscriber's traffic into the tunnel.
    pub fn check_overlay(conn: &Connection, cfg: &TunnelConfig) -> Result<()> {
        let mut clashes = Vec::new();
        let mut stmt = conn.prepare(
            "SELECT 'subscriber ' || id || ' (' || username || ') static_ipv4', static_ipv4 FROM subscribers
                 WHERE static_ipv4 IS NOT NULL
             UNION ALL
             SELECT 'an online session of ' || username || ' at site ' || site_id, framed_ip FROM online_sessions
                 WHERE framed_ip IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (what, ip) = row?;
            if let Ok(a) = ip.parse::<Ipv4Addr>()
                && cfg.network.contains(&a)
            {
                clashes.push(format!("{what} {a}"));
            }
        }
        if clashes.is_empty() {
            return Ok(());
        }
        let n = clashes.len();
        clashes.truncate(5);
        Err(Error::conflict(
            "tunnel_overlaps_subscribers",
            format!(
                "tunnel.network {} overlaps addresses subscribers use ({n} found: {}{}); choose another overlay",
                cfg.network,
                clashes.join(", "),
                if n > 5 { ", …" } else { "" }
            ),
        ))
    }

    /// Brings the interface up with exactly the live agents' peers (`peers`, from
    /// [`crate::db::agent::live_peers`]). Returns how many.
    pub fn up(&self, peers: &[outpost_wg::Peer]) -> anyhow::Result<usize> {
        let c = &self.config;
        tracing::info!(backend = %c.backend, iface = %c.interface, network = %c.network,
            address = %self.address(), port = c.listen_port, "bringing up the management tunnel");
        let spec = outpost_wg::InterfaceSpec {
            name: c.interface.clone(),
            backend: c.backend,
            private_key: self.private_key.clone(),
            listen_port: Some(c.listen_port),
            address: Ipv4Net::new(self.address(), c.network.prefix_len())?,
            routes: vec![],
        };
        let iface = outpost_wg::Interface::up(&spec, peers)
            .with_context(|| format!("bringing up WireGuard interface {}", c.interface))?;
        *self.iface.lock().unwrap_or_else(|p| p.into_inner()) = Some(iface);
        Ok(peers.len())
    }

    /// Stops the interface (the `wireguard-go` it runs, or the kernel link).
    pub fn down(&self) {
        self.iface.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Applies a change to the running interface; nothing without one. Called inside
    /// the transaction that decided it, so a failure rolls the change back.
    pub fn apply(&self, change: &PeerChange) -> Result<()> {
        let guard = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        let Some(iface) = guard.as_ref() else {
            return Ok(());
        };
        // The cause is logged; the caller's transaction rolls back.
        let failed = |e: outpost_wg::Error| Error::internal(&e);
        if !change.remove.is_empty() {
            iface.remove_peers(&change.remove).map_err(failed)?;
        }
        if !change.add.is_empty() {
            iface.set_peers(&change.add).map_err(failed)?;
        }
        Ok(())
    }

    /// The live figures of the peer with `public_key`; `None` without an interface or
    /// when the peer is not on it.
    pub fn peer(&self, public_key: &str) -> Option<TunnelPeer> {
        let guard = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        let peers = guard.as_ref()?.peers().ok()?;
        let p = peers.into_iter().find(|p| p.public_key == public_key)?;
        Some(TunnelPeer {
            last_handshake_at: p.last_handshake.and_then(|t| {
                let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some(crate::db::rfc3339(secs as i64))
            }),
            endpoint: p.endpoint.map(|e| e.to_string()),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        })
    }

    /// Whether the peer with `public_key` has completed a handshake since the interface
    /// came up; `None` without an interface (the plain test tier) or when it cannot be read.
    pub fn handshake_seen(&self, public_key: &str) -> Option<bool> {
        let guard = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        let peers = guard.as_ref()?.peers().ok()?;
        Some(
            peers
                .iter()
                .any(|p| p.public_key == public_key && p.last_handshake.is_some()),
        )
    }

    /// The peer an agent with `public_key`, `address` and `psk` is on the interface.
    pub fn agent_peer(
        public_key: &str,
        address: Ipv4Addr,
        psk: Option<String>,
    ) -> outpost_wg::Peer {
        outpost_wg::Peer {
            public_key: public_key.to_string(),
            preshared_key: psk,
            endpoint: None,
            keepalive_secs: None,
            allowed_ips: vec![Ipv4Net::new(address, 32).expect("a /32")],
        }
    }

    /// What an agent given `address` and `psk` is told.
    pub fn params(&self, address: Ipv4Addr, psk: &str) -> proto::TunnelParams {
        proto::TunnelParams {
            address: format!("{address}/32"),
            controller_public_key: self.public_key.clone(),
            controller_endpoints: self.config.endpoints.clone(),
            controller_address: self.address().to_string(),
            api_port: self.config.api_port,
            persistent_keepalive_secs: self.config.persistent_keepalive_secs,
            preshared_key: psk.to_string(),
        }
    }
}
