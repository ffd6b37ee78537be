-- Subscribers by status over time: one row per day, owning tenant and status, taken by
-- the controller's sweep loop (`db::snapshot::take`). A day's rows are replaced whole
-- each time they are taken that day, so taking them twice leaves the same rows, and the
-- day holds its last count. A status with no subscribers has no row (it reads as 0).
-- Rows name the tenant that owns the subscribers, so a report reads them through the
-- same scope predicate as the subscribers themselves.
CREATE TABLE subscriber_status_days (
    day        TEXT    NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id),
    status     TEXT    NOT NULL,
    count      INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (day, tenant_id, status)
) WITHOUT ROWID;
CREATE INDEX subscriber_status_days_tenant ON subscriber_status_days(tenant_id, day);

-- An enrollment token revoked before anyone used it (a token sent to the wrong person,
-- a site that will not be built): it no longer enrols an agent.
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
