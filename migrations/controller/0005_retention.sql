-- Outpost controller schema, version 5. Never edit once landed.
-- The retention sweep finds feed rows superseded by a newer row for the same entity;
-- this index makes that a lookup per row instead of a scan of the site's feed.
CREATE INDEX site_changes_entity ON site_changes(site_id, entity, entity_id, revision);
