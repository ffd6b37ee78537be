-- A brand's tagline: the line under its name on the panel's login page and header, and
-- on the edge's suspended page. It reaches the sites through 0004's feed_tenant_brand
-- trigger: the brand is always written whole (`db::brand::set` sets every brand column
-- in one UPDATE), so that trigger fires for a tagline change too.
ALTER TABLE tenants ADD COLUMN brand_tagline TEXT CHECK (brand_tagline IS NULL OR length(brand_tagline) BETWEEN 1 AND 200);
