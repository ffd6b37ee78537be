//! The agent's end of the management tunnel: one WireGuard interface whose one peer is
//! the controller, brought up from the state dir alone (`identity.json` holds the keys
//! and the parameters enrolment returned), so an agent restarted while the controller
//! is down has its tunnel back at once. `outpost-wg` does the mechanism.

use std::time::SystemTime;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::Identity;

/// `[tunnel]` of `agent.toml`: which interface, run how. Written by `enroll` when the
/// controller handed out a tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// The interface name (at most 15 characters, unique on the host).
    pub interface: String,
    /// `kernel` or `userspace` (wireguard-go): explicit, and logged at start.
    pub backend: outpost_wg::Backend,
}

/// Why the tunnel could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `agent.toml` has a `[tunnel]` but `identity.json` no tunnel parameters.
    #[error("agent.toml has a [tunnel] section but identity.json has no tunnel: enroll again")]
    NoParams,
    /// A parameter from enrolment does not parse.
    #[error("identity.json: tunnel {0}")]
    Params(String),
    /// The interface could not be brought up.
    #[error("bringing up WireGuard interface {iface}")]
    Up {
        /// The interface.
        iface: String,
        /// Why.
        #[source]
        source: outpost_wg::Error,
    },
}

/// What the interface is brought up with: its spec and the controller's peer.
pub fn plan(
    cfg: &TunnelConfig,
    id: &Identity,
) -> Result<(outpost_wg::InterfaceSpec, outpost_wg::Peer), Error> {
    let t = id.tunnel.as_ref().ok_or(Error::NoParams)?;
    let address: Ipv4Net = t
        .address
        .parse()
        .map_err(|_| Error::Params(format!("address '{}' is not a.b.c.d/n", t.address)))?;
    let controller: std::net::Ipv4Addr = t.controller_address.parse().map_err(|_| {
        Error::Params(format!(
            "controller_address '{}' is not IPv4",
            t.controller_address
        ))
    })?;
    let to_controller = Ipv4Net::new(controller, 32).expect("a /32");
    let endpoint = t
        .controller_endpoints
        .first()
        .ok_or_else(|| Error::Params("has no controller endpoint".into()))?;
    Ok((
        outpost_wg::InterfaceSpec {
            name: cfg.interface.clone(),
            backend: cfg.backend,
            private_key: id.wireguard_private_key.clone(),
            listen_port: None,
            address,
            routes: vec![to_controller],
        },
        outpost_wg::Peer {
            public_key: t.controller_public_key.clone(),
            preshared_key: Some(t.preshared_key.clone()),
            endpoint: Some(endpoint.clone()),
            keepalive_secs: Some(t.persistent_keepalive_secs),
            allowed_ips: vec![to_controller],
        },
    ))
}

/// Brings the tunnel up; it is taken down when the returned interface is dropped.
pub fn up(cfg: &TunnelConfig, id: &Identity) -> Result<outpost_wg::Interface, Error> {
    let (spec, peer) = plan(cfg, id)?;
    tracing::info!(iface = %cfg.interface, backend = %cfg.backend, address = %spec.address,
        endpoint = ?peer.endpoint, "bringing up the tunnel to the controller");
    outpost_wg::Interface::up(&spec, &[peer]).map_err(|source| Error::Up {
        iface: cfg.interface.clone(),
        source,
    })
}

/// While the controller is unreachable, drops and re-adds its peer every few seconds.
/// A restarted controller has forgotten the tunnel's session, and WireGuard would only
/// start a new handshake after its own 15 s of unanswered packets (or two minutes of
/// rekey); a fresh peer handshakes with the next packet, so the agent is back as soon
/// as the controller is.
pub async fn rekey_while_unreachable(
    iface: std::sync::Arc<outpost_wg::Interface>,
    controller: outpost_wg::Peer,
    link: std::sync::Arc<crate::sync::Link>,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        if link.reachable.load(Ordering::Relaxed) {
            continue;
        }
        let (iface, peer) = (iface.clone(), controller.clone());
        let redone = tokio::task::spawn_blocking(move || {
            iface.remove_peers(std::slice::from_ref(&peer.public_key))?;
            iface.set_peers(&[peer])
        })
        .await;
        if let Ok(Err(e)) = redone {
            tracing::warn!(error = %crate::ErrorChain(&e), "re-adding the controller's peer failed");
        }
    }
}

/// The tunnel as `outpost-agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    /// The controller's peer: handshake and bytes.
    pub peer: outpost_wg::PeerStatus,
}

impl TunnelStatus {
    /// Seconds since the last handshake; `None`: none yet.
    pub fn handshake_age_secs(&self) -> Option<u64> {
        let t = self.peer.last_handshake?;
        Some(
            SystemTime::now()
                .duration_since(t)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }
}

/// The running tunnel's controller peer, read from the interface (which the `run`
/// process owns); an error when it is not up.
pub fn status(cfg: &TunnelConfig, id: &Identity) -> Result<TunnelStatus, String> {
    let key = id
        .tunnel
        .as_ref()
        .map(|t| t.controller_public_key.clone())
        .ok_or("identity.json has no tunnel")?;
    let peers = outpost_wg::status(&cfg.interface, cfg.backend).map_err(|e| {
        format!(
            "interface {} is not up ({})",
            cfg.interface,
            crate::ErrorChain(&e)
        )
    })?;
    peers
        .into_iter()
        .find(|p| p.public_key == key)
        .map(|peer| TunnelStatus { peer })
        .ok_or_else(|| format!("interface {} has no controller peer", cfg.interface))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tunnel: Option<outpost_protocol::TunnelParams>) -> Identity {
        Identity {
            agent_id: 7,
            site_id: 3,
            credential: "opa_x".into(),
            wireguard_private_key: outpost_wg::generate_private_key(),
            tunnel,
        }
    }

    fn params() -> outpost_protocol::TunnelParams {
        outpost_protocol::TunnelParams {
            address: "10.66.0.7/32".into(),
            controller_public_key: outpost_wg::public_key(&outpost_wg::generate_private_key())
                .unwrap(),
            controller_endpoints: vec!["192.0.2.1:51820".into(), "198.51.100.1:51820".into()],
            controller_address: "10.66.0.1".into(),
            api_port: 8443,
            persistent_keepalive_secs: 25,
            preshared_key: outpost_wg::generate_preshared_key(),
        }
    }

    fn cfg() -> TunnelConfig {
        TunnelConfig {
            interface: "outpost0".into(),
            backend: outpost_wg::Backend::Userspace,
        }
    }

    #[test]
    fn the_interface_is_planned_from_the_identity_alone() {
        let p = params();
        let id = identity(Some(p.clone()));
        let (spec, peer) = plan(&cfg(), &id).unwrap();
        assert_eq!(spec.address.to_string(), "10.66.0.7/32");
        assert_eq!(spec.routes, vec!["10.66.0.1/32".parse().unwrap()]);
        assert_eq!(spec.listen_port, None, "a spoke only dials out");
        assert_eq!(spec.private_key, id.wireguard_private_key);
        assert_eq!(peer.public_key, p.controller_public_key);
        assert_eq!(peer.preshared_key, Some(p.preshared_key));
        assert_eq!(peer.endpoint.as_deref(), Some("192.0.2.1:51820"));
        assert_eq!(peer.keepalive_secs, Some(25));
        // Only the controller's address is reached through it.
        assert_eq!(peer.allowed_ips, vec!["10.66.0.1/32".parse().unwrap()]);
    }

    #[test]
    fn a_missing_or_broken_tunnel_in_the_identity_is_a_clear_error() {
        assert!(matches!(
            plan(&cfg(), &identity(None)),
            Err(Error::NoParams)
        ));
        let mut p = params();
        p.address = "10.66.0.7".into();
        let e = plan(&cfg(), &identity(Some(p))).unwrap_err().to_string();
        assert!(e.contains("address '10.66.0.7'"), "{e}");
        let mut p = params();
        p.controller_endpoints.clear();
        let e = plan(&cfg(), &identity(Some(p))).unwrap_err().to_string();
        assert!(e.contains("no controller endpoint"), "{e}");
    }

    #[test]
    fn the_tunnel_section_round_trips_through_agent_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "state_dir = \"/x\"\ncontroller_url = \"http://10.66.0.1:8443\"\n[tunnel]\ninterface = \"outpost0\"\nbackend = \"userspace\"\n",
        )
        .unwrap();
        let c = crate::config::Config::load(&path).unwrap();
        assert_eq!(c.tunnel.unwrap().backend, outpost_wg::Backend::Userspace);
        std::fs::write(
            &path,
            "state_dir = \"/x\"\ncontroller_url = \"http://c\"\n[tunnel]\ninterface = \"much-too-long-name\"\nbackend = \"kernel\"\n",
        )
        .unwrap();
        let e = crate::config::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("tunnel.interface"), "{e}");
    }
}
