-- Outpost agent local store, version 4. Never edit once landed.
-- Sessions ended by a Stop, with the NAS's time of that event: a late or resent Start
-- or Interim of such a session is older than its end and must not bring it back online
-- (it would count against the subscriber's session limit and hold an address it no
-- longer has). Kept a day, long past any NAS's retransmissions; forgotten for a NAS
-- that restarts (Accounting-On/Off), whose reused ids are new sessions.
CREATE TABLE stopped_sessions (
    nas_ip     TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    ended_at   INTEGER NOT NULL,
    PRIMARY KEY (nas_ip, session_id)
) WITHOUT ROWID;
CREATE INDEX stopped_sessions_ended ON stopped_sessions(ended_at);
