-- Outpost controller schema, version 3: agents, the per-site change feed, events,
-- online sessions and usage.
-- Never edit this file once it has landed: add a new numbered file instead.

-- Site settings the agent enforces.
ALTER TABLE sites ADD COLUMN acct_interim_interval_secs INTEGER NOT NULL DEFAULT 300
    CHECK (acct_interim_interval_secs BETWEEN 60 AND 86400);
ALTER TABLE sites ADD COLUMN shaping_enabled INTEGER NOT NULL DEFAULT 0 CHECK (shaping_enabled IN (0, 1));
-- How many sessions a subscriber may have online at once.
ALTER TABLE subscribers ADD COLUMN max_sessions INTEGER NOT NULL DEFAULT 1 CHECK (max_sessions BETWEEN 1 AND 16);

-- Single-use, expiring tokens that let an agent enroll for a site. Only hashes stored.
CREATE TABLE enrollment_tokens (
    id          INTEGER PRIMARY KEY,
    site_id     INTEGER NOT NULL REFERENCES sites(id),
    token_hash  BLOB    NOT NULL UNIQUE,
    created_by  INTEGER REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    agent_id    INTEGER
);
CREATE INDEX enrollment_tokens_site ON enrollment_tokens(site_id);

-- Enrolled agents. One live agent per site: a re-enrollment revokes the previous one.
CREATE TABLE agents (
    id                   INTEGER PRIMARY KEY,
    site_id              INTEGER NOT NULL REFERENCES sites(id),
    credential_hash      BLOB    NOT NULL UNIQUE,
    wireguard_public_key TEXT    NOT NULL,
    hostname             TEXT    NOT NULL,
    version              TEXT    NOT NULL,
    tunnel_address       TEXT    NOT NULL,
    enrolled_at          INTEGER NOT NULL,
    last_seen_at         INTEGER,
    applied_revision     INTEGER NOT NULL DEFAULT 0,
    reported_digest      TEXT,
    digest_matches       INTEGER,
    revoked_at           INTEGER
);
CREATE UNIQUE INDEX agents_live_per_site ON agents(site_id) WHERE revoked_at IS NULL;

-- The change feed: every change to what a site enforces gets a new revision. Written
-- by triggers, so no code path can change a subscriber, NAS, plan rate, reseller status
-- or site setting without its sites hearing of it.
CREATE TABLE site_changes (
    revision  INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id   INTEGER NOT NULL,
    entity    TEXT    NOT NULL CHECK (entity IN ('subscriber', 'nas', 'settings')),
    entity_id INTEGER NOT NULL
);
CREATE INDEX site_changes_site ON site_changes(site_id, revision);

CREATE TRIGGER feed_site_created AFTER INSERT ON sites
BEGIN INSERT INTO site_changes (site_id, entity, entity_id) VALUES (NEW.id, 'settings', NEW.id); END;
CREATE TRIGGER feed_site_settings AFTER UPDATE OF acct_interim_interval_secs, shaping_enabled ON sites
BEGIN INSERT INTO site_changes (site_id, entity, entity_id) VALUES (NEW.id, 'settings', NEW.id); END;
-- Existing sites start with a revision too.
INSERT INTO site_changes (site_id, entity, entity_id) SELECT id, 'settings', id FROM sites;

CREATE TRIGGER feed_subscriber_new AFTER INSERT ON subscribers WHEN NEW.site_id IS NOT NULL
BEGIN INSERT INTO site_changes (site_id, entity, entity_id) VALUES (NEW.site_id, 'subscriber', NEW.id); END;
CREATE TRIGGER feed_subscriber_changed AFTER UPDATE ON subscribers
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT NEW.site_id, 'subscriber', NEW.id WHERE NEW.site_id IS NOT NULL;
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT OLD.site_id, 'subscriber', OLD.id WHERE OLD.site_id IS NOT NULL AND OLD.site_id IS NOT NEW.site_id;
END;
-- A reseller disabled or enabled: every subscriber below it, on every site.
CREATE TRIGGER feed_tenant_status AFTER UPDATE OF status ON tenants WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT s.site_id, 'subscriber', s.id FROM subscribers s JOIN tenants t ON t.id = s.tenant_id
        WHERE t.path GLOB NEW.path || '*' AND s.site_id IS NOT NULL;
END;
-- A plan's rates: every subscriber on it.
CREATE TRIGGER feed_plan_rate AFTER UPDATE OF download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps ON plans
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT site_id, 'subscriber', id FROM subscribers WHERE plan_id = NEW.id AND site_id IS NOT NULL;
END;
CREATE TRIGGER feed_nas_new AFTER INSERT ON nas
BEGIN INSERT INTO site_changes (site_id, entity, entity_id) VALUES (NEW.site_id, 'nas', NEW.id); END;
CREATE TRIGGER feed_nas_changed AFTER UPDATE ON nas
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id) VALUES (NEW.site_id, 'nas', NEW.id);
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT OLD.site_id, 'nas', OLD.id WHERE OLD.site_id IS NOT NEW.site_id;
END;

-- Events from agents, stored once per (agent, seq).
CREATE TABLE agent_events (
    agent_id    INTEGER NOT NULL REFERENCES agents(id),
    seq         INTEGER NOT NULL,
    site_id     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;

-- Sessions online now, from accounting.
CREATE TABLE online_sessions (
    site_id            INTEGER NOT NULL,
    nas_ip             TEXT    NOT NULL,
    session_id         TEXT    NOT NULL,
    username           TEXT    NOT NULL,
    subscriber_id      INTEGER REFERENCES subscribers(id),
    framed_ip          TEXT,
    calling_station_id TEXT,
    started_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    session_time       INTEGER NOT NULL DEFAULT 0,
    input_octets       INTEGER NOT NULL DEFAULT 0,
    output_octets      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, nas_ip, session_id)
) WITHOUT ROWID;
CREATE INDEX online_sessions_subscriber ON online_sessions(subscriber_id);

-- Traffic per subscriber per UTC day, from accounting deltas.
CREATE TABLE usage_daily (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
    day           TEXT    NOT NULL,
    input_octets  INTEGER NOT NULL DEFAULT 0,
    output_octets INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber_id, day)
) WITHOUT ROWID;
