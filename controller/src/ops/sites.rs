//! Sites, their NAS devices and their agents' enrollment tokens.

use rusqlite::Connection;

use crate::crypto::SecretBox;
use crate::db::agent::{self, EnrollmentToken};
use crate::db::audit::Entry;
use crate::db::nas::{self, Nas, NasPatch, NewNas};
use crate::db::site::{self, NewSite, Site, SitePatch};
use crate::db::tenant;
use crate::error::{Error, ErrorKind, Result};
use crate::scope::Actor;

/// Creates a site owned by `input.tenant_id` (by default the actor's tenant).
pub fn create_site(tx: &Connection, actor: &Actor, input: &NewSite) -> Result<Site> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "site.create")?;
    let s = site::create(tx, &owner, input)?;
    Entry::by(actor, owner.id, "site.create", "site", s.id)
        .after(&s)
        .record(tx)?;
    Ok(s)
}

/// Renames or describes a site the actor can see.
pub fn update_site(tx: &Connection, actor: &Actor, id: i64, p: &SitePatch) -> Result<Site> {
    let before = site::get_visible(tx, &actor.scope(), id)?;
    let after = site::update(tx, &before, p)?;
    Entry::by(actor, after.tenant_id, "site.update", "site", id)
        .before(&before)
        .after(&after)
        .record(tx)?;
    Ok(after)
}

/// Registers a NAS at a site; its RADIUS secret is stored sealed.
pub fn create_nas(
    tx: &Connection,
    actor: &Actor,
    input: &NewNas,
    secrets: &SecretBox,
) -> Result<Nas> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "nas.create")?;
    let n = nas::create(tx, &owner, input, secrets)?;
    Entry::by(actor, owner.id, "nas.create", "nas", n.id)
        .after(&n)
        .record(tx)?;
    Ok(n)
}

/// Changes a NAS the actor can see. A new secret is audited as `[changed]`, never
/// in clear.
pub fn update_nas(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    p: &NasPatch,
    secrets: &SecretBox,
) -> Result<Nas> {
    let before = nas::get_visible(tx, &actor.scope(), id, None)?;
    let after = nas::update(tx, &before, p, secrets)?;
    let mut after_json = serde_json::to_value(&after).expect("serializes");
    if p.secret.is_some() {
        after_json["secret"] = "[changed]".into();
    }
    Entry::by(actor, after.tenant_id, "nas.update", "nas", id)
        .before(&before)
        .after(&after_json)
        .record(tx)?;
    Ok(after)
}

/// Stores a single-use enrollment token (`secret`, already generated) for a site the
/// actor can see, valid for `ttl_secs`.
pub fn create_enrollment_token(
    tx: &Connection,
    actor: &Actor,
    site_id: i64,
    ttl_secs: i64,
    secret: &str,
) -> Result<EnrollmentToken> {
    let s = site::get_visible(tx, &actor.scope(), site_id)?;
    let t = agent::create_token(tx, s.id, actor.user_id, ttl_secs, secret)?;
    Entry::by(actor, s.tenant_id, "site.enrollment_token", "site", s.id)
        .after(&t)
        .record(tx)?;
    Ok(t)
}

/// Revokes the agent of a site the actor can see (a retired or stolen box): its
/// credential stops working at once and the returned change removes its tunnel peer.
/// The site enrols a new agent with a new token.
pub fn revoke_agent(
    tx: &Connection,
    actor: &Actor,
    site_id: i64,
) -> Result<crate::tunnel::PeerChange> {
    let s = site::get_visible(tx, &actor.scope(), site_id)?;
    let before = agent::status(tx, s.id)?;
    let change = agent::revoke(tx, s.id)?;
    Entry::by(actor, s.tenant_id, "agent.revoke", "site", s.id)
        .before(&before)
        .record(tx)?;
    Ok(change)
}

/// Revokes an unused enrollment token of a site the actor can see (a token sent to the
/// wrong person, a box that will not be installed): it enrols nothing from now on. A
/// token of a site outside the scope is not found, as the site is.
pub fn revoke_enrollment_token(
    tx: &Connection,
    actor: &Actor,
    token_id: i64,
) -> Result<EnrollmentToken> {
    let before = agent::get_token(tx, token_id)?;
    let s = site::get_visible(tx, &actor.scope(), before.site_id).map_err(|e| match e.kind {
        ErrorKind::NotFound => Error::not_found("enrollment token"),
        _ => e,
    })?;
    let after = agent::revoke_token(tx, token_id)?;
    Entry::by(
        actor,
        s.tenant_id,
        "enrollment_token.revoke",
        "enrollment_token",
        token_id,
    )
    .before(&before)
    .after(&after)
    .record(tx)?;
    Ok(after)
}
