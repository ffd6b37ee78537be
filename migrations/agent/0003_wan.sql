-- Outpost agent local store, version 3. Never edit once landed.
-- WAN checks: what the agent knows of each probe of each CPE (state, failures in a row,
-- since when, flaps, loss), so an agent restarted during an outage neither forgets it
-- nor reports it again. Its transitions travel in the outbox like any other event.

CREATE TABLE wan_targets (
    subscriber_id INTEGER NOT NULL,
    probe         TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    PRIMARY KEY (subscriber_id, probe)
) WITHOUT ROWID;
