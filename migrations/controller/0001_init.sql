-- Outpost controller schema, version 1.
-- Never edit this file once it has landed: add a new numbered file instead.
-- Times are unix seconds (UTC). Secrets are sealed with the controller key (never plain).

-- The reseller tree. The operator is the single root (id 1, depth 0).
-- `path` is the materialized path '/1/4/9/' used for subtree queries with GLOB '/1/4/*'.
CREATE TABLE tenants (
    id                INTEGER PRIMARY KEY,
    parent_id         INTEGER REFERENCES tenants(id),
    path              TEXT    NOT NULL UNIQUE,
    depth             INTEGER NOT NULL CHECK (depth >= 0),
    name              TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    status            TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    allowed_ips       TEXT    NOT NULL DEFAULT '[]',   -- JSON array of CIDRs; empty = any
    rebrand_enabled   INTEGER NOT NULL DEFAULT 0 CHECK (rebrand_enabled IN (0, 1)),
    custom_domain     TEXT    UNIQUE COLLATE NOCASE,
    wan_check_enabled INTEGER NOT NULL DEFAULT 0 CHECK (wan_check_enabled IN (0, 1)),
    max_subscribers   INTEGER CHECK (max_subscribers >= 0),   -- NULL = unlimited
    max_sub_resellers INTEGER CHECK (max_sub_resellers >= 0),
    max_managers      INTEGER CHECK (max_managers >= 0),
    max_sites         INTEGER CHECK (max_sites >= 0),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CHECK ((parent_id IS NULL) = (depth = 0))
);
CREATE INDEX tenants_parent ON tenants(parent_id);
CREATE UNIQUE INDEX tenants_single_root ON tenants(depth) WHERE depth = 0;

INSERT INTO tenants (id, parent_id, path, depth, name, created_at, updated_at)
VALUES (1, NULL, '/1/', 0, 'Operator', unixepoch(), unixepoch());

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    kind          TEXT    NOT NULL CHECK (kind IN ('operator', 'reseller', 'manager')),
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name          TEXT    NOT NULL,
    phone         TEXT    NOT NULL DEFAULT '',
    password_hash TEXT    NOT NULL,
    permissions   TEXT    NOT NULL DEFAULT '[]',  -- JSON array; only read for managers
    status        TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_by    INTEGER REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK (kind <> 'operator' OR tenant_id = 1),
    CHECK (kind <> 'reseller' OR tenant_id <> 1)
);
CREATE INDEX users_tenant ON users(tenant_id);

-- Panel and API sessions. Only the SHA-256 of the bearer secret is stored.
CREATE TABLE sessions (
    id              INTEGER PRIMARY KEY,
    token_hash      BLOB    NOT NULL UNIQUE,
    user_id         INTEGER NOT NULL REFERENCES users(id),
    impersonator_id INTEGER REFERENCES users(id),
    ip              TEXT    NOT NULL,
    user_agent      TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    name         TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE sites (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id),
    name       TEXT    NOT NULL,
    location   TEXT    NOT NULL DEFAULT '',
    notes      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE nas (
    id                            INTEGER PRIMARY KEY,
    tenant_id                     INTEGER NOT NULL REFERENCES tenants(id),
    site_id                       INTEGER NOT NULL REFERENCES sites(id),
    name                          TEXT    NOT NULL,
    ip                            TEXT    NOT NULL,
    secret_sealed                 BLOB    NOT NULL,
    kind                          TEXT    NOT NULL CHECK (kind IN ('mikrotik', 'accel-ppp', 'generic')),
    coa_port                      INTEGER NOT NULL DEFAULT 3799 CHECK (coa_port BETWEEN 1 AND 65535),
    require_message_authenticator INTEGER NOT NULL DEFAULT 1 CHECK (require_message_authenticator IN (0, 1)),
    created_at                    INTEGER NOT NULL,
    updated_at                    INTEGER NOT NULL,
    UNIQUE (site_id, ip)
);
CREATE INDEX nas_tenant ON nas(tenant_id);

CREATE TABLE subscribers (
    id              INTEGER PRIMARY KEY,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    site_id         INTEGER REFERENCES sites(id),
    username        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_sealed BLOB    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'suspended', 'disabled', 'expired')),
    expires_at      INTEGER,
    static_ipv4     TEXT,
    mac             TEXT,
    name            TEXT    NOT NULL DEFAULT '',
    phone           TEXT    NOT NULL DEFAULT '',
    email           TEXT    NOT NULL DEFAULT '',
    notes           TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX subscribers_tenant ON subscribers(tenant_id, id);
CREATE INDEX subscribers_site ON subscribers(site_id);
-- A static address is unique where it is routed: on its site.
CREATE UNIQUE INDEX subscribers_static_ip ON subscribers(site_id, static_ipv4) WHERE static_ipv4 IS NOT NULL;

-- The audit log: append-only and hash-chained (see controller/src/db/audit.rs).
CREATE TABLE audit_log (
    id                INTEGER PRIMARY KEY,
    at                INTEGER NOT NULL,
    actor_user_id     INTEGER,
    actor_name        TEXT    NOT NULL,
    impersonator_id   INTEGER,
    impersonator_name TEXT,
    tenant_id         INTEGER NOT NULL,
    action            TEXT    NOT NULL,
    target_kind       TEXT,
    target_id         INTEGER,
    before            TEXT,
    after             TEXT,
    ip                TEXT    NOT NULL,
    user_agent        TEXT    NOT NULL,
    security          INTEGER NOT NULL DEFAULT 0 CHECK (security IN (0, 1)),
    prev_hash         TEXT    NOT NULL,
    hash              TEXT    NOT NULL UNIQUE
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_log_target ON audit_log(target_kind, target_id);

-- Extra targets of one entry (bulk actions touch many rows but write one entry).
CREATE TABLE audit_targets (
    audit_id    INTEGER NOT NULL REFERENCES audit_log(id),
    target_kind TEXT    NOT NULL,
    target_id   INTEGER NOT NULL,
    PRIMARY KEY (target_kind, target_id, audit_id)
) WITHOUT ROWID;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_targets_no_update BEFORE UPDATE ON audit_targets
BEGIN SELECT RAISE(ABORT, 'audit_targets is append-only'); END;
CREATE TRIGGER audit_targets_no_delete BEFORE DELETE ON audit_targets
BEGIN SELECT RAISE(ABORT, 'audit_targets is append-only'); END;
