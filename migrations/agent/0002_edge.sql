-- Outpost agent local store, version 2. Never edit once landed.
-- Edge enforcement: the IPv6 address a session was given (learnt from accounting,
-- blocked alongside the IPv4 one), and the brand each reseller shows on the
-- suspended page (synced, so the page is right while the controller is unreachable).

ALTER TABLE sessions ADD COLUMN framed_ipv6 TEXT;

CREATE TABLE brands (
    tenant_id INTEGER PRIMARY KEY,
    state     TEXT NOT NULL
);
