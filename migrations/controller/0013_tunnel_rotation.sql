-- Outpost controller schema, version 13: make-before-break key rotation of the tunnel.
-- Never edit this file once it has landed: add a new numbered file instead.

-- A rotation in progress: the agent's new key, the second overlay address its peer is
-- given while the old key still carries the agent's calls (WireGuard routes one address
-- to one peer, so the new key cannot share the old one's), and that peer's preshared key,
-- sealed. All NULL when no rotation is under way. The second address is taken from
-- tunnel_addresses like any other, so it is never handed out twice either.
ALTER TABLE agents ADD COLUMN rotation_public_key TEXT;
ALTER TABLE agents ADD COLUMN rotation_address TEXT;
ALTER TABLE agents ADD COLUMN rotation_psk_sealed BLOB;
ALTER TABLE agents ADD COLUMN rotation_started_at INTEGER;

CREATE UNIQUE INDEX agents_rotation_key ON agents(rotation_public_key)
    WHERE rotation_public_key IS NOT NULL AND revoked_at IS NULL;
