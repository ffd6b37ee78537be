-- Reseller restores (controller/src/backup/reseller.rs).
-- Never edit this file once it has landed: add a new numbered file instead.
--
-- The audit log is one hash chain over the installation, so a restored reseller's
-- archived entries cannot rejoin it with their hashes. Each restore keeps them as they
-- were (ids, times, hashes) as a segment of `restored_audit`; the segment's digest is
-- in the live chain's `reseller.restore` entry (`audit_id`). Both are append-only.
CREATE TABLE reseller_restores (
    id               INTEGER PRIMARY KEY,
    audit_id         INTEGER NOT NULL REFERENCES audit_log(id),
    tenant_id        INTEGER NOT NULL REFERENCES tenants(id),
    source_tenant_id INTEGER NOT NULL,
    signer           TEXT    NOT NULL,
    archive_sha256   TEXT    NOT NULL,
    segment_rows     INTEGER NOT NULL,
    segment_digest   TEXT    NOT NULL,
    at               INTEGER NOT NULL
);
CREATE INDEX reseller_restores_tenant ON reseller_restores(tenant_id);

CREATE TABLE restored_audit (
    restore_id        INTEGER NOT NULL REFERENCES reseller_restores(id),
    id                INTEGER NOT NULL,
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
    security          INTEGER NOT NULL,
    prev_hash         TEXT    NOT NULL,
    hash              TEXT    NOT NULL,
    PRIMARY KEY (restore_id, id)
) WITHOUT ROWID;

CREATE TRIGGER reseller_restores_no_update BEFORE UPDATE ON reseller_restores
BEGIN SELECT RAISE(ABORT, 'reseller_restores is append-only'); END;
CREATE TRIGGER reseller_restores_no_delete BEFORE DELETE ON reseller_restores
BEGIN SELECT RAISE(ABORT, 'reseller_restores is append-only'); END;
CREATE TRIGGER restored_audit_no_update BEFORE UPDATE ON restored_audit
BEGIN SELECT RAISE(ABORT, 'restored_audit is append-only'); END;
CREATE TRIGGER restored_audit_no_delete BEFORE DELETE ON restored_audit
BEGIN SELECT RAISE(ABORT, 'restored_audit is append-only'); END;
