-- Outpost controller schema: usage counted once. Never edit once landed.
-- Each session's latest accounting counters, kept after its Stop: a session's usage is
-- its latest counters, so a Stop or Interim resent from another source port, after the
-- agent's reply cache expired, or after the session ended adds nothing; a record older
-- than the one counted (by the NAS's event time, then Acct-Session-Time) is ignored.
-- Pruned with the raw agent events (retention.agent_events_days).
CREATE TABLE session_counters (
    site_id       INTEGER NOT NULL,
    nas_ip        TEXT    NOT NULL,
    session_id    TEXT    NOT NULL,
    -- When the counted record's event happened (Event-Timestamp, or receipt less delay).
    event_at      INTEGER NOT NULL,
    session_time  INTEGER NOT NULL,
    input_octets  INTEGER NOT NULL,
    output_octets INTEGER NOT NULL,
    -- 1 once a Stop (or the NAS's Accounting-On/Off) ended it.
    ended         INTEGER NOT NULL DEFAULT 0 CHECK (ended IN (0, 1)),
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (site_id, nas_ip, session_id)
) WITHOUT ROWID;
CREATE INDEX session_counters_updated ON session_counters(updated_at);
-- The sessions online when this was added start counting from their stored counters.
INSERT INTO session_counters (site_id, nas_ip, session_id, event_at, session_time,
                              input_octets, output_octets, ended, updated_at)
SELECT site_id, nas_ip, session_id, updated_at, session_time, input_octets, output_octets,
       0, updated_at
FROM online_sessions;
