//! The agent's end of the management tunnel: one WireGuard interface whose one peer is
//! the controller, brought up from the state dir alone (`identity.json` holds the keys
//! and the parameters enrolment returned), so an agent restarted while the controller
//! is down has its tunnel back at once. `outpost-wg` does the mechanism.

use std::sync::{Arc, Mutex};
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
            name: interface_name(cfg, id).to_string(),
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

/// The interface the tunnel runs on now: `[tunnel]`'s name, or the other one of the
/// pair after a key rotation moved it ([`alternate_name`]).
pub fn interface_name<'a>(cfg: &'a TunnelConfig, id: &'a Identity) -> &'a str {
    id.tunnel_interface.as_deref().unwrap_or(&cfg.interface)
}

/// The second name of the pair a rotation alternates between: `[tunnel]`'s with an
/// `r` (replacing its last character at 15 characters).
pub fn alternate_name(base: &str) -> String {
    let mut name: String = base.chars().take(14).collect();
    name.push(if base.len() >= 15 && base.ends_with('r') {
        'q'
    } else {
        'r'
    });
    name
}

/// How many tunnel addresses of earlier keys an identity remembers (see
/// [`Identity::former_tunnel_addresses`]).
pub const FORMER_ADDRESSES_KEPT: usize = 8;

/// A key rotation under way, kept in `identity.json` so that a restart of the agent
/// (or of the controller, which keeps its half in its database) at any step resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The new private key (base64).
    pub private_key: String,
    /// The interface the new key runs on (the other name of the pair).
    pub interface: String,
    /// What the controller handed the new key (its second address and preshared key);
    /// `None` until it accepted the key.
    #[serde(default)]
    pub tunnel: Option<outpost_protocol::TunnelParams>,
    /// The agent's calls moved to the new key: the identity's key, tunnel and interface
    /// are the new ones, and only the controller's confirmation is missing.
    #[serde(default)]
    pub switched: bool,
}

impl Rotation {
    /// A rotation to a freshly generated key, on the other interface of the pair.
    pub fn new(cfg: &TunnelConfig, id: &Identity) -> Rotation {
        let now = interface_name(cfg, id);
        Rotation {
            private_key: outpost_wg::generate_private_key(),
            interface: if now == cfg.interface {
                alternate_name(&cfg.interface)
            } else {
                cfg.interface.clone()
            },
            tunnel: None,
            switched: false,
        }
    }

    /// The new public key.
    pub fn public_key(&self) -> String {
        outpost_wg::public_key(&self.private_key).unwrap_or_default()
    }
}

struct Current {
    iface: Arc<outpost_wg::Interface>,
    controller: outpost_wg::Peer,
    /// The old key's interface after a switch, until the controller confirms.
    retired: Option<Arc<outpost_wg::Interface>>,
}

/// The running tunnel: the interface the agent's calls go through now (a rotation
/// replaces it) and the controller's peer on it.
pub struct Tunnel {
    cfg: TunnelConfig,
    current: Mutex<Current>,
}

impl Tunnel {
    /// Brings the tunnel up from the identity alone (on the interface a rotation left it
    /// on); it is taken down when the tunnel is dropped. A rotation that had switched
    /// before a restart runs on the new key already; the other name of the pair, left
    /// by a crash, is deleted.
    pub fn up(cfg: &TunnelConfig, id: &Identity) -> Result<Tunnel, Error> {
        let (spec, peer) = plan(cfg, id)?;
        tracing::info!(iface = %spec.name, backend = %cfg.backend, address = %spec.address,
            endpoint = ?peer.endpoint, "bringing up the tunnel to the controller");
        let iface =
            outpost_wg::Interface::up(&spec, std::slice::from_ref(&peer)).map_err(|source| {
                Error::Up {
                    iface: spec.name.clone(),
                    source,
                }
            })?;
        if id.rotation.as_ref().is_none_or(|r| r.switched) {
            let other = if spec.name == cfg.interface {
                alternate_name(&cfg.interface)
            } else {
                cfg.interface.clone()
            };
            outpost_wg::delete_leftover(&other);
        }
        Ok(Tunnel {
            cfg: cfg.clone(),
            current: Mutex::new(Current {
                iface: Arc::new(iface),
                controller: peer,
                retired: None,
            }),
        })
    }

    fn current(&self) -> (Arc<outpost_wg::Interface>, outpost_wg::Peer) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.iface.clone(), c.controller.clone())
    }

    /// The interface the calls go through now.
    pub fn interface(&self) -> Arc<outpost_wg::Interface> {
        self.current().0
    }
}

/// While the controller is unreachable, drops and re-adds its peer every few seconds.
/// A restarted controller has forgotten the tunnel's session, and WireGuard would only
/// start a new handshake after its own 15 s of unanswered packets (or two minutes of
/// rekey); a fresh peer handshakes with the next packet, so the agent is back as soon
/// as the controller is.
pub async fn rekey_while_unreachable(tunnel: Arc<Tunnel>, link: Arc<crate::sync::Link>) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        if link.reachable.load(Ordering::Relaxed) {
            continue;
        }
        let (iface, peer) = tunnel.current();
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

/// Why a step of a key rotation did not go through (it is tried again).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The controller could not be asked, or refused.
    #[error("asking the controller")]
    Controller(#[from] crate::sync::SyncError),
    /// The new key's interface.
    #[error("the new key's tunnel")]
    Tunnel(#[from] Error),
    /// The new key's interface came up but saw no handshake.
    #[error("no handshake with the controller on {0} within {1} s")]
    NoHandshake(String, u64),
    /// Saving the step to identity.json.
    #[error("saving identity.json")]
    Save(#[from] crate::config::ConfigError),
    /// A blocking task failed.
    #[error("local task")]
    Join(#[from] tokio::task::JoinError),
}

/// How long the new key's interface may take to handshake before it is taken down and
/// the step tried again.
const HANDSHAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Carries out key rotations for ever: one asked for by `outpost-agent rotate-key`
/// (which writes it into `identity.json`) or left half-done by a restart. The steps,
/// each saved before the next:
///
/// 1. the controller accepts the new key and gives it a second address
///    ([`crate::sync::Client::rotate_key`]), from the old tunnel;
/// 2. a second interface comes up with the new key and address, no route yet, and
///    handshakes (make);
/// 3. once no call is in flight (the long poll running finishes normally), the route to
///    the controller moves to the new interface and the calls after it use the new
///    key ([`crate::sync::Client::switch`]);
/// 4. the controller is told from the new address; it removes the old key's peer,
///    and the old interface is taken down (break).
///
/// A refusal of the key (4xx) abandons the rotation; anything else is tried again.
pub async fn run_rotation(
    tunnel: Arc<Tunnel>,
    client: crate::sync::Client,
    state_dir: std::path::PathBuf,
    mut id: Identity,
) {
    let mut backoff = std::time::Duration::from_secs(2);
    loop {
        if id.rotation.is_none() {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            match Identity::load(&state_dir) {
                Ok(disk) if disk.rotation.is_some() && disk.credential == id.credential => {
                    tracing::info!(new_public_key = %disk.rotation.as_ref().map(|r| r.public_key()).unwrap_or_default(),
                        "key rotation requested");
                    id.rotation = disk.rotation;
                }
                _ => continue,
            }
        }
        match rotate(&tunnel, &client, &state_dir, &mut id).await {
            Ok(()) => backoff = std::time::Duration::from_secs(2),
            Err(e) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "key rotation step failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
            }
        }
    }
}

async fn rotate(
    tunnel: &Arc<Tunnel>,
    client: &crate::sync::Client,
    state_dir: &std::path::Path,
    id: &mut Identity,
) -> Result<(), RotateError> {
    use crate::sync::SyncError;
    while let Some(r) = id.rotation.clone() {
        let new_key = r.public_key();
        if r.switched {
            client.confirm_rotation(&new_key).await?;
            id.rotation = None;
            id.save(state_dir)?;
            let retired = {
                let mut c = tunnel.current.lock().unwrap_or_else(|p| p.into_inner());
                c.retired.take()
            };
            tokio::task::spawn_blocking(move || drop(retired)).await?;
            tracing::info!(public_key = %new_key, iface = %interface_name(&tunnel.cfg, id),
                "key rotation done: the old key's peer and interface are gone");
            return Ok(());
        }
        let Some(params) = r.tunnel.clone() else {
            match client.rotate_key(&new_key).await {
                Ok(p) => {
                    tracing::info!(address = %p.address, "the controller accepted the new key");
                    id.rotation.as_mut().expect("rotation").tunnel = Some(p);
                    id.save(state_dir)?;
                }
                Err(SyncError::Status { status, body })
                    if (400..500).contains(&status) && status != 401 =>
                {
                    tracing::error!(
                        status,
                        body,
                        "the controller refused the new key; rotation abandoned"
                    );
                    id.rotation = None;
                    id.save(state_dir)?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        };
        // Make: the new key's interface, beside the old one, without a route.
        let mut next = id.clone();
        next.wireguard_private_key = r.private_key.clone();
        if let Some(old) = &id.tunnel
            && old.address != params.address
            && !next.former_tunnel_addresses.contains(&old.address)
        {
            next.former_tunnel_addresses.push(old.address.clone());
            let over = next
                .former_tunnel_addresses
                .len()
                .saturating_sub(FORMER_ADDRESSES_KEPT);
            next.former_tunnel_addresses.drain(..over);
        }
        next.tunnel = Some(params);
        next.tunnel_interface = (r.interface != tunnel.cfg.interface).then(|| r.interface.clone());
        let (mut spec, peer) = plan(&tunnel.cfg, &next)?;
        let routes = std::mem::take(&mut spec.routes);
        let iface = {
            let (up, peer) = (spec.clone(), peer.clone());
            tokio::task::spawn_blocking(move || {
                let iface = outpost_wg::Interface::up(&up, std::slice::from_ref(&peer))?;
                // Set again now it is up: the keepalive this sends starts the handshake.
                iface.set_peers(&[peer])?;
                Ok::<_, outpost_wg::Error>(iface)
            })
            .await?
            .map_err(|source| Error::Up {
                iface: spec.name.clone(),
                source,
            })?
        };
        let started = std::time::Instant::now();
        loop {
            let shook = iface
                .peers()
                .ok()
                .is_some_and(|ps| ps.iter().any(|p| p.last_handshake.is_some()));
            if shook {
                break;
            }
            if started.elapsed() > HANDSHAKE_WAIT {
                tokio::task::spawn_blocking(move || drop(iface)).await?;
                return Err(RotateError::NoHandshake(
                    spec.name,
                    HANDSHAKE_WAIT.as_secs(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tracing::info!(iface = %spec.name, waited_ms = started.elapsed().as_millis() as u64,
            "the new key has a handshake; moving the calls once none is in flight");
        // Switch: saved first, so a restart from here on comes up on the new key.
        next.rotation.as_mut().expect("rotation").switched = true;
        let iface = Arc::new(iface);
        let switched = {
            let (iface, next, tunnel) = (iface.clone(), next.clone(), tunnel.clone());
            let state_dir = state_dir.to_path_buf();
            client
                .switch(move || -> Result<(), RotateError> {
                    next.save(&state_dir)?;
                    iface.route(&routes).map_err(|source| Error::Up {
                        iface: iface.name(),
                        source,
                    })?;
                    let mut c = tunnel.current.lock().unwrap_or_else(|p| p.into_inner());
                    let old = std::mem::replace(&mut c.iface, iface);
                    c.controller = peer;
                    c.retired = Some(old);
                    Ok(())
                })
                .await
        };
        if let Err(e) = switched {
            tokio::task::spawn_blocking(move || drop(iface)).await?;
            return Err(e);
        }
        *id = next;
        tracing::info!(iface = %spec.name, "calls moved to the new key");
    }
    Ok(())
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
    let name = interface_name(cfg, id);
    let peers = outpost_wg::status(name, cfg.backend)
        .map_err(|e| format!("interface {name} is not up ({})", crate::ErrorChain(&e)))?;
    peers
        .into_iter()
        .find(|p| p.public_key == key)
        .map(|peer| TunnelStatus { peer })
        .ok_or_else(|| format!("interface {name} has no controller peer"))
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
            tunnel_interface: None,
            rotation: None,
            former_tunnel_addresses: vec![],
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
