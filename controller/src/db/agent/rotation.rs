//! Make-before-break rotation of an agent's WireGuard key.
//!
//! WireGuard routes an address to one peer of an interface, so the new key cannot be
//! given the agent's overlay address while the old key still carries its calls. The
//! rotation therefore runs on a second address:
//!
//! 1. [`begin_rotation`] (the agent, from its tunnel address, presents the new public
//!    key): the new key's peer is added with a second overlay address, never handed out
//!    before, and its own preshared key. Both peers are live; the agent's calls may come
//!    from either address.
//! 2. The agent brings up a second interface with the new key, waits for its handshake,
//!    lets the calls in flight on the old one finish and moves its calls to the new one.
//! 3. [`confirm_rotation`] (the agent, from the second address, which only the new key
//!    can send from, and the controller has seen that key's handshake): the new key and
//!    address become the agent's, the old key's peer is removed and its address becomes
//!    a tombstone.
//!
//! Every step is in the database, so a restart of either side in the middle ends in a
//! working tunnel: [`super::live_peers`] restores both peers, and both calls are
//! idempotent. Keys never expire on a timer.

use std::net::Ipv4Addr;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};

use super::AgentIdentity;
use crate::crypto::SecretBox;
use crate::db::Cached;
use crate::db::row::stored_row;
use crate::error::{Error, Result};
use crate::tunnel::{PeerChange, Tunnel};

/// What a rotation step decided: the answer, the change to the interface (applied
/// before the transaction commits) and the audit entry's `after`.
#[derive(Debug)]
pub struct Rotated<T> {
    pub response: T,
    pub peers: PeerChange,
    pub audit: serde_json::Value,
}

stored_row! {
    struct Row in COLS, read by from_row {
        key: String = "wireguard_public_key",
        address: String = "tunnel_address",
        rotation_key: Option<String> = "rotation_public_key",
        rotation_address: Option<String> = "rotation_address",
        rotation_psk: Option<Vec<u8>> = "rotation_psk_sealed",
    }
}

fn row(conn: &Connection, agent_id: i64) -> Result<Row> {
    conn.cached_row(
        &format!("SELECT {COLS} FROM agents WHERE id = ?1 AND revoked_at IS NULL"),
        [agent_id],
        from_row,
    )
    .optional()?
    .ok_or_else(|| Error::unauthorized("unknown or revoked agent credential; enroll again"))
}

fn check_key(key: &str) -> Result<()> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_default();
    if bytes.len() != 32 {
        return Err(Error::invalid(
            "new_public_key must be a base64 WireGuard key (32 bytes)",
        ));
    }
    Ok(())
}

fn no_tunnel() -> Error {
    Error::conflict(
        "no_tunnel",
        "this agent has no tunnel (or the controller runs without one): there is no key to rotate",
    )
}

/// Step 1: the new key's peer on a second address. Presenting the key already being
/// rotated to answers the same again (an agent restarted before it saved the answer);
/// presenting another replaces that rotation (its peer and address are dropped).
pub fn begin_rotation(
    conn: &Connection,
    me: AgentIdentity,
    req: &proto::RotateKey,
    tunnel: Option<&Tunnel>,
    secrets: &SecretBox,
) -> Result<Rotated<proto::TunnelParams>> {
    let tunnel = tunnel.ok_or_else(no_tunnel)?;
    let key = req.new_public_key.trim();
    check_key(key)?;
    let cur = row(conn, me.agent_id)?;
    if cur.address.is_empty() {
        return Err(no_tunnel());
    }
    if key == cur.key {
        return Err(Error::invalid(
            "new_public_key is the agent's current key; generate a new key pair",
        ));
    }
    if key == tunnel.public_key {
        return Err(Error::invalid(
            "new_public_key is the controller's own key; the agent generates its own",
        ));
    }
    if cur.rotation_key.as_deref() == Some(key) {
        let (Some(address), Some(psk)) = (&cur.rotation_address, &cur.rotation_psk) else {
            return Err(Error::internal(&std::io::Error::other(
                "a rotation row without its address",
            )));
        };
        let address: Ipv4Addr = address.parse().map_err(|_| {
            Error::internal(&std::io::Error::other(
                "a rotation address that is not IPv4",
            ))
        })?;
        let psk = secrets.open(psk).map_err(|e| Error::internal(&e))?;
        return Ok(Rotated {
            response: tunnel.params(address, &psk),
            peers: PeerChange::default(),
            audit: serde_json::Value::Null,
        });
    }
    if super::enrollment::key_in_use(conn, key)? {
        return Err(Error::conflict(
            "wireguard_key_in_use",
            "another agent has this WireGuard public key; generate a new key pair",
        ));
    }
    let now = crate::db::now();
    let mut peers = PeerChange::default();
    // A rotation begun with another key and never finished: that key is dropped.
    if let (Some(k), Some(a)) = (&cur.rotation_key, &cur.rotation_address) {
        peers.remove.push(k.clone());
        conn.cached_exec(
            "UPDATE tunnel_addresses SET freed_at = ?2 WHERE address = ?1 AND freed_at IS NULL",
            params![a, now],
        )?;
    }
    let address = super::allocate_address(conn, &tunnel.config)?;
    let psk = outpost_wg::generate_preshared_key();
    conn.cached_exec(
        "INSERT INTO tunnel_addresses (address, agent_id, allocated_at) VALUES (?1, ?2, ?3)",
        params![address.to_string(), me.agent_id, now],
    )?;
    conn.cached_exec(
        "UPDATE agents SET rotation_public_key = ?2, rotation_address = ?3, rotation_psk_sealed = ?4,
                           rotation_started_at = ?5
         WHERE id = ?1",
        params![me.agent_id, key, address.to_string(), secrets.seal(&psk), now],
    )?;
    peers
        .add
        .push(Tunnel::agent_peer(key, address, Some(psk.clone())));
    Ok(Rotated {
        response: tunnel.params(address, &psk),
        audit: serde_json::json!({
            "agent_id": me.agent_id, "public_key": cur.key, "tunnel_address": cur.address,
            "new_public_key": key, "new_tunnel_address": address.to_string(),
            "abandoned_public_key": cur.rotation_key,
        }),
        peers,
    })
}

/// Step 3: the new key becomes the agent's and the old one's peer goes. `from_new`:
/// the call came from the rotation's address (so through the new key); `handshake`:
/// the interface has seen the new key's handshake (`None`: no interface to ask, the
/// plain test tier). Confirming a rotation already finished is no error and changes
/// nothing (an agent restarted before it saved that it was done).
pub fn confirm_rotation(
    conn: &Connection,
    me: AgentIdentity,
    req: &proto::RotateKey,
    from_new: bool,
    handshake: Option<bool>,
) -> Result<Rotated<()>> {
    let key = req.new_public_key.trim();
    check_key(key)?;
    let cur = row(conn, me.agent_id)?;
    if cur.rotation_key.is_none() && cur.key == key {
        return Ok(Rotated {
            response: (),
            peers: PeerChange::default(),
            audit: serde_json::Value::Null,
        });
    }
    if cur.rotation_key.as_deref() != Some(key) {
        return Err(Error::conflict(
            "no_such_rotation",
            "no rotation to this key is under way for this agent; begin one first",
        ));
    }
    if !from_new || handshake == Some(false) {
        return Err(Error::conflict(
            "rotation_not_ready",
            "confirm the rotation from the new key's tunnel address, once its handshake is done",
        ));
    }
    let (Some(address), Some(psk)) = (cur.rotation_address, cur.rotation_psk) else {
        return Err(Error::internal(&std::io::Error::other(
            "a rotation row without its address",
        )));
    };
    let now = crate::db::now();
    conn.cached_exec(
        "UPDATE agents SET wireguard_public_key = ?2, tunnel_address = ?3, preshared_key_sealed = ?4,
                           rotation_public_key = NULL, rotation_address = NULL,
                           rotation_psk_sealed = NULL, rotation_started_at = NULL
         WHERE id = ?1",
        params![me.agent_id, key, address, psk],
    )?;
    conn.cached_exec(
        "UPDATE tunnel_addresses SET freed_at = ?2 WHERE address = ?1 AND freed_at IS NULL",
        params![cur.address, now],
    )?;
    Ok(Rotated {
        response: (),
        audit: serde_json::json!({
            "agent_id": me.agent_id, "old_public_key": cur.key, "old_tunnel_address": cur.address,
            "public_key": key, "tunnel_address": address,
        }),
        peers: PeerChange {
            add: vec![],
            remove: vec![cur.key],
        },
    })
}
