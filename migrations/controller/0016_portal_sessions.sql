-- Outpost controller schema: the subscriber portal's sessions. Never edit once landed.
-- A subscriber logs in to the portal with its own PPPoE / RADIUS username and password
-- (the one credential, sealed in subscribers.password_sealed); its session lives here,
-- apart from staff sessions, so no staff credential can ever be a subscriber's or the
-- other way round. Only the SHA-256 of the cookie's secret is stored.
CREATE TABLE portal_sessions (
    id            INTEGER PRIMARY KEY,
    token_hash    BLOB    NOT NULL UNIQUE,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
    ip            TEXT    NOT NULL,
    user_agent    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX portal_sessions_subscriber ON portal_sessions(subscriber_id);
CREATE INDEX portal_sessions_expires ON portal_sessions(expires_at);

-- The portal's home page lists a subscriber's renewals and finds its last one (its
-- quota period's start): by subscriber, not a scan of every renewal.
CREATE INDEX renewals_subscriber ON renewals(subscriber_id, id);
