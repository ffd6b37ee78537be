-- Outpost controller schema, version 4. Never edit once landed.
-- Per-reseller branding shown to its subscribers (the suspended page at the edge, and
-- later the panel on its custom domain). A reseller without rebranding shows the brand
-- of the nearest reseller above it that has one, or the operator's.

ALTER TABLE tenants ADD COLUMN brand_name TEXT CHECK (brand_name IS NULL OR length(brand_name) BETWEEN 1 AND 120);
ALTER TABLE tenants ADD COLUMN brand_color TEXT CHECK (brand_color IS NULL OR brand_color GLOB '#[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]');
ALTER TABLE tenants ADD COLUMN brand_logo_url TEXT CHECK (brand_logo_url IS NULL OR brand_logo_url GLOB 'https://*');
ALTER TABLE tenants ADD COLUMN brand_contact TEXT CHECK (brand_contact IS NULL OR length(brand_contact) <= 200);

-- A brand change reaches every site serving a subscriber anywhere below the tenant.
-- It travels as a site 'settings' change (the feed's entity list is fixed by 0003's
-- CHECK); the state feed sends the site's brands with its settings.
CREATE TRIGGER feed_tenant_brand
AFTER UPDATE OF name, rebrand_enabled, brand_name, brand_color, brand_logo_url, brand_contact ON tenants
BEGIN
    INSERT INTO site_changes (site_id, entity, entity_id)
        SELECT DISTINCT s.site_id, 'settings', s.site_id FROM subscribers s JOIN tenants t ON t.id = s.tenant_id
        WHERE t.path GLOB NEW.path || '*' AND s.site_id IS NOT NULL;
END;
