-- Outpost controller schema, version 8. Never edit once landed.
-- The TCP ports WAN checks probe on a CPE besides ICMP: a plan may name them for every
-- subscriber on it, and a subscriber may name its own (which wins). A JSON array of port
-- numbers ('[]' = ICMP only); NULL = the next level down (the plan's, then the site's).
-- A plan's list changing reaches every subscriber on it, as its rates do.

ALTER TABLE plans ADD COLUMN wan_tcp_ports TEXT;
ALTER TABLE subscribers ADD COLUMN wan_tcp_ports TEXT;

CREATE TRIGGER feed_plan_wan_ports AFTER UPDATE OF wan_tcp_ports ON plans
    WHEN OLD.wan_tcp_ports IS NOT NEW.wan_tcp_ports
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT site_id, 'subscriber', id FROM subscribers WHERE plan_id = NEW.id AND site_id IS NOT NULL;
END;
