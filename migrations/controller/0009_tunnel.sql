-- Outpost controller schema, version 9: the WireGuard management plane.
-- Never edit this file once it has landed: add a new numbered file instead.

-- Every overlay address ever handed to an agent. An address is allocated once and never
-- again: when its agent is revoked the row stays as a tombstone (freed_at), so no new
-- agent can be given an address an old peer might still be configured with somewhere.
CREATE TABLE tunnel_addresses (
    address      TEXT    PRIMARY KEY,
    agent_id     INTEGER NOT NULL REFERENCES agents(id),
    allocated_at INTEGER NOT NULL,
    freed_at     INTEGER
) WITHOUT ROWID;

-- Agents enrolled before this version: their addresses are taken as well.
INSERT OR IGNORE INTO tunnel_addresses (address, agent_id, allocated_at, freed_at)
    SELECT tunnel_address, id, enrolled_at, revoked_at FROM agents WHERE tunnel_address <> '';

-- The preshared key of the agent's peer, sealed with the controller's key: the peer is
-- restored from it after a restart. NULL for agents enrolled without a tunnel.
ALTER TABLE agents ADD COLUMN preshared_key_sealed BLOB;

-- Two live agents cannot share a WireGuard key: the interface has one peer per key.
CREATE UNIQUE INDEX agents_live_key ON agents(wireguard_public_key) WHERE revoked_at IS NULL;
