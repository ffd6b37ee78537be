//! Per-reseller branding: what a reseller's subscribers see (the suspended page at the
//! edge; the panel on its custom domain later).
//!
//! A tenant's *effective* brand is its own when it has rebranding (the operator always
//! has), else the nearest ancestor's that has. Agents receive effective brands keyed
//! by the owning tenant, so they never need the tree.

use std::collections::HashMap;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Cached;
use crate::error::{Error, Result};
use crate::scope::OPERATOR_TENANT;

/// A tenant's own brand settings, as the API shows and takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandSettings {
    /// The name subscribers know the provider by; unset = the reseller's name. An empty
    /// string clears any field.
    #[schema(max_length = 120, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    /// `#rrggbb`.
    #[schema(pattern = r"^(#[0-9A-Fa-f]{6})?$")]
    pub color: Option<String>,
    /// `https://` URL of the logo image.
    #[schema(
        max_length = 500,
        pattern = r#"^(https://[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"'<>`]+)?$"#
    )]
    pub logo_url: Option<String>,
    /// Support contact shown to subscribers (phone, e-mail, web), up to 200 characters.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub contact: Option<String>,
    /// A line under the name on the panel's login page and header, up to 200 characters.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub tagline: Option<String>,
}

/// What the API answers: the tenant's settings and the brand its subscribers see.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrandView {
    pub tenant_id: i64,
    pub rebrand_enabled: bool,
    pub settings: BrandSettings,
    /// Resolved through the tree: what this tenant's subscribers actually see.
    #[schema(value_type = Object)]
    pub effective: proto::Brand,
}

impl BrandSettings {
    /// Checks every field; an empty string clears it.
    pub fn validate(mut self) -> Result<BrandSettings> {
        // Lengths count what was written; the name and contact are stored trimmed. The
        // colour and logo URL are taken as written (their patterns allow no spaces).
        let too_long =
            |v: &Option<String>, max: usize| v.as_ref().is_some_and(|s| s.chars().count() > max);
        if too_long(&self.name, 120) {
            return Err(Error::invalid(
                "name: up to 120 characters, no control characters",
            ));
        }
        for (field, v) in [("contact", &self.contact), ("tagline", &self.tagline)] {
            if too_long(v, 200) || v.as_ref().is_some_and(|s| s.chars().any(char::is_control)) {
                return Err(Error::invalid(format!(
                    "{field}: up to 200 characters, no control characters"
                )));
            }
        }
        let clean = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        self.name = clean(self.name);
        self.contact = clean(self.contact);
        self.tagline = clean(self.tagline);
        let given = |v: Option<String>| v.filter(|s| !s.is_empty());
        self.color = given(self.color);
        self.logo_url = given(self.logo_url);
        if let Some(n) = &self.name
            && (n.chars().count() > 120 || n.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "name: up to 120 characters, no control characters",
            ));
        }
        if let Some(c) = &self.color
            && !(c.len() == 7
                && c.starts_with('#')
                && c[1..].chars().all(|ch| ch.is_ascii_hexdigit()))
        {
            return Err(Error::invalid("color: must be #rrggbb, e.g. #0a7d32"));
        }
        if let Some(u) = &self.logo_url
            && !(u.starts_with("https://")
                && u.chars().count() <= 500
                && u.len() > "https://".len()
                && !u
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || "\"<>'`".contains(ch)))
        {
            return Err(Error::invalid(
                "logo_url: must be an https:// URL without spaces or quotes, up to 500 characters",
            ));
        }
        if let Some(c) = &self.contact
            && (c.chars().count() > 200 || c.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "contact: up to 200 characters, no control characters",
            ));
        }
        Ok(self)
    }
}

struct Row {
    name: String,
    path: String,
    rebrand: bool,
    settings: BrandSettings,
}

fn row(conn: &Connection, id: i64) -> Result<Option<Row>> {
    Ok(conn
        .cached_row(
            "SELECT name, path, rebrand_enabled, brand_name, brand_color, brand_logo_url, brand_contact,
                    brand_tagline
             FROM tenants WHERE id = ?1",
            [id],
            |r| {
                Ok(Row {
                    name: r.get(0)?,
                    path: r.get(1)?,
                    rebrand: r.get(2)?,
                    settings: BrandSettings {
                        name: r.get(3)?,
                        color: r.get(4)?,
                        logo_url: r.get(5)?,
                        contact: r.get(6)?,
                        tagline: r.get(7)?,
                    },
                })
            },
        )
        .optional()?)
}

/// Resolves the effective brand of each tenant in `tenant_ids` (unknown ids skipped).
pub fn effective(conn: &Connection, tenant_ids: &[i64]) -> Result<Vec<proto::Brand>> {
    let mut rows: HashMap<i64, Option<Row>> = HashMap::new();
    fn load<'a>(
        rows: &'a mut HashMap<i64, Option<Row>>,
        conn: &Connection,
        id: i64,
    ) -> Result<Option<&'a Row>> {
        if let std::collections::hash_map::Entry::Vacant(e) = rows.entry(id) {
            e.insert(row(conn, id)?);
        }
        Ok(rows[&id].as_ref())
    }
    let mut out = Vec::new();
    for &id in tenant_ids {
        let Some(path) = load(&mut rows, conn, id)?.map(|r| r.path.clone()) else {
            continue;
        };
        // `/1/4/9/`: from the tenant itself up to the operator.
        let chain: Vec<i64> = path
            .split('/')
            .filter_map(|p| p.parse().ok())
            .rev()
            .collect();
        for up in chain {
            let Some(r) = load(&mut rows, conn, up)? else {
                continue;
            };
            if r.rebrand || up == OPERATOR_TENANT {
                out.push(proto::Brand {
                    tenant_id: id,
                    name: r.settings.name.clone().unwrap_or_else(|| r.name.clone()),
                    color: r.settings.color.clone(),
                    logo_url: r.settings.logo_url.clone(),
                    contact: r.settings.contact.clone(),
                    tagline: r.settings.tagline.clone(),
                });
                break;
            }
        }
    }
    Ok(out)
}

/// The tenant whose `custom_domain` is `host` (a request's Host without its port), if
/// any: its panel is served there under its brand.
pub fn tenant_by_domain(conn: &Connection, host: &str) -> Result<Option<super::tenant::Tenant>> {
    let id: Option<i64> = conn
        .cached_row(
            "SELECT id FROM tenants WHERE custom_domain = ?1",
            [host.to_ascii_lowercase()],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => super::tenant::get(conn, id),
        None => Ok(None),
    }
}

/// The brand view of tenant `id` (which must exist).
pub fn view(conn: &Connection, id: i64) -> Result<BrandView> {
    let r = row(conn, id)?.ok_or_else(|| Error::not_found("reseller"))?;
    let effective = effective(conn, &[id])?
        .pop()
        .ok_or_else(|| Error::not_found("reseller"))?;
    Ok(BrandView {
        tenant_id: id,
        rebrand_enabled: r.rebrand || id == OPERATOR_TENANT,
        settings: r.settings,
        effective,
    })
}

/// Replaces tenant `id`'s brand settings whole. Refused unless the tenant has
/// rebranding (the operator always has): without it, its subscribers see its parent's
/// brand, so settings it could not show would only mislead.
pub fn set(conn: &Connection, id: i64, settings: BrandSettings) -> Result<BrandView> {
    let settings = settings.validate()?;
    let r = row(conn, id)?.ok_or_else(|| Error::not_found("reseller"))?;
    if !r.rebrand && id != OPERATOR_TENANT {
        return Err(Error::conflict(
            "rebrand_disabled",
            format!(
                "'{}' does not have rebranding; its parent can enable rebrand_enabled",
                r.name
            ),
        ));
    }
    conn.cached_exec(
        "UPDATE tenants SET brand_name = ?2, brand_color = ?3, brand_logo_url = ?4, brand_contact = ?5,
             brand_tagline = ?6, updated_at = unixepoch() WHERE id = ?1",
        rusqlite::params![
            id,
            settings.name,
            settings.color,
            settings.logo_url,
            settings.contact,
            settings.tagline
        ],
    )?;
    view(conn, id)
}
