-- Outpost agent local store, version 1. Never edit once landed.
-- The site's desired state at a revision (what RADIUS and enforcement use when the
-- controller is unreachable), the online sessions, and the outbox journal.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Desired state, as synced. Rows hold the protocol's JSON: the agent enforces exactly
-- what it was sent, and the digest it acknowledges is computed from these rows.
CREATE TABLE subscribers (
    id       INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    state    TEXT NOT NULL
);
CREATE TABLE nas (
    id    INTEGER PRIMARY KEY,
    ip    TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL
);

-- Sessions online now, from accounting.
CREATE TABLE sessions (
    nas_ip     TEXT NOT NULL,
    session_id TEXT NOT NULL,
    username   TEXT NOT NULL,
    framed_ip  TEXT,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (nas_ip, session_id)
) WITHOUT ROWID;
CREATE INDEX sessions_username ON sessions(username);

-- The outbox journal: events with gapless sequence numbers, shipped in order.
CREATE TABLE outbox (
    seq  INTEGER PRIMARY KEY,
    at   INTEGER NOT NULL,
    body TEXT    NOT NULL
);
