-- Outpost controller schema, version 6. Never edit once landed.
-- The failed-login throttle lives in the database so a restart does not reset it.
-- key: 'pair:EMAIL|IP', 'ip:IP' or 'account:EMAIL' (see controller/src/db/throttle.rs).
CREATE TABLE login_throttle (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX login_throttle_age ON login_throttle(last_at);

-- Where each account last logged in successfully: a login from a known address is not
-- held back by what a guesser elsewhere, or a neighbour behind the same NAT, did.
CREATE TABLE login_known (
    email TEXT NOT NULL,
    ip TEXT NOT NULL,
    last_ok_at INTEGER NOT NULL,
    PRIMARY KEY (email, ip)
) WITHOUT ROWID;
CREATE INDEX login_known_age ON login_known(last_ok_at);
