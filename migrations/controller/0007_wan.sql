-- Outpost controller schema, version 7. Never edit once landed.
-- WAN checks: the state of each probe of each subscriber's CPE as its site's agent last
-- reported it, and every outage (down to up) for the outage report. Both are written
-- from agent events, once per (agent, seq) like accounting. `tenant_id` is the
-- subscriber's owner at the controller when the event was stored (never the agent's
-- word), so every read is scoped like the subscriber's own rows.
--
-- What a site probes comes through its feed: a subscriber is WAN-checked when every
-- reseller above it has `wan_check_enabled` and it is not marked "never probe"
-- (`wan_check_exempt`). A reseller's flag changing reaches every subscriber below it.

ALTER TABLE subscribers ADD COLUMN wan_check_exempt INTEGER NOT NULL DEFAULT 0
    CHECK (wan_check_exempt IN (0, 1));

CREATE TRIGGER feed_tenant_wan_check AFTER UPDATE OF wan_check_enabled ON tenants
    WHEN OLD.wan_check_enabled IS NOT NEW.wan_check_enabled
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT s.site_id, 'subscriber', s.id FROM subscribers s JOIN tenants t ON t.id = s.tenant_id
        WHERE t.path GLOB NEW.path || '*' AND s.site_id IS NOT NULL;
END;

CREATE TABLE wan_targets (
    id            INTEGER PRIMARY KEY,
    site_id       INTEGER NOT NULL REFERENCES sites(id),
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    probe         TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('up', 'down')),
    since         INTEGER NOT NULL,
    flaps         INTEGER NOT NULL,
    sent          INTEGER NOT NULL,
    lost          INTEGER NOT NULL,
    rtt_us        INTEGER,
    updated_at    INTEGER NOT NULL,
    UNIQUE (subscriber_id, probe)
);
CREATE INDEX wan_targets_tenant ON wan_targets(tenant_id, id);
CREATE INDEX wan_targets_site ON wan_targets(site_id, state);

CREATE TABLE wan_outages (
    id            INTEGER PRIMARY KEY,
    site_id       INTEGER NOT NULL REFERENCES sites(id),
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    probe         TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER
);
CREATE INDEX wan_outages_tenant ON wan_outages(tenant_id, id);
CREATE INDEX wan_outages_open ON wan_outages(subscriber_id, probe) WHERE ended_at IS NULL;
CREATE INDEX wan_outages_started ON wan_outages(started_at);
