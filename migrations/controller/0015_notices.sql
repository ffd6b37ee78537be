-- Outpost controller schema: notices. Never edit once landed.
-- A notice staff post for the subscribers of their own part of the tree: all of them
-- (`tenant_id`'s subtree, or only its direct customers when a manager posts it), or
-- those on one plan or at one site, shown from `starts_at` until `ends_at` in the
-- subscriber portal and on the edge's suspended page.
CREATE TABLE notices (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id),
    -- 1: only the tenant's own subscribers (a manager's notice), 0: its whole subtree.
    direct     INTEGER NOT NULL DEFAULT 0 CHECK (direct IN (0, 1)),
    title      TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 120),
    body       TEXT    NOT NULL CHECK (length(body) <= 2000),
    plan_id    INTEGER REFERENCES plans(id),
    site_id    INTEGER REFERENCES sites(id),
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK (ends_at > starts_at),
    CHECK (plan_id IS NULL OR site_id IS NULL)
);
CREATE INDEX notices_tenant ON notices(tenant_id, id);
CREATE INDEX notices_ends ON notices(ends_at);

-- A notice reaches the sites serving its audience as a site 'settings' change (the
-- feed's entity list is fixed by 0003's CHECK); the state feed sends the site's
-- notices whole with every state that is not 'unchanged'. Old and new audience both.
CREATE TRIGGER feed_notice_new AFTER INSERT ON notices
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT DISTINCT s.site_id, 'settings', s.site_id FROM subscribers s
        WHERE s.site_id IS NOT NULL AND (NEW.site_id IS NULL OR s.site_id = NEW.site_id)
          AND s.tenant_id IN (SELECT id FROM tenants WHERE id = NEW.tenant_id
                OR (NEW.direct = 0 AND path GLOB (SELECT path FROM tenants WHERE id = NEW.tenant_id) || '*'));
END;
CREATE TRIGGER feed_notice_changed AFTER UPDATE ON notices
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT DISTINCT s.site_id, 'settings', s.site_id FROM subscribers s
        WHERE s.site_id IS NOT NULL
          AND ((OLD.site_id IS NULL OR s.site_id = OLD.site_id) OR (NEW.site_id IS NULL OR s.site_id = NEW.site_id))
          AND s.tenant_id IN (SELECT id FROM tenants WHERE id = NEW.tenant_id
                OR (NEW.direct = 0 AND path GLOB (SELECT path FROM tenants WHERE id = NEW.tenant_id) || '*'));
END;
CREATE TRIGGER feed_notice_gone AFTER DELETE ON notices
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT DISTINCT s.site_id, 'settings', s.site_id FROM subscribers s
        WHERE s.site_id IS NOT NULL AND (OLD.site_id IS NULL OR s.site_id = OLD.site_id)
          AND s.tenant_id IN (SELECT id FROM tenants WHERE id = OLD.tenant_id
                OR (OLD.direct = 0 AND path GLOB (SELECT path FROM tenants WHERE id = OLD.tenant_id) || '*'));
END;
