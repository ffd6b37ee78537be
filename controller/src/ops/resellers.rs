//! Resellers: creating and changing one, and its brand.

use rusqlite::Connection;

use crate::db::audit::Entry;
use crate::db::brand::{self, BrandSettings, BrandView};
use crate::db::tenant::{self, NewReseller, Reseller, ResellerPatch};
use crate::error::Result;
use crate::money::Currency;
use crate::scope::Actor;

/// Creates a reseller under `input.parent_id` (by default under the actor's tenant),
/// at most `max_depth` levels below the operator.
pub fn create_reseller(
    tx: &Connection,
    actor: &Actor,
    input: &NewReseller,
    max_depth: u32,
    cur: &Currency,
) -> Result<Reseller> {
    let parent = tenant::assignable(tx, actor, input.parent_id, "reseller.create")?;
    let t = tenant::create(tx, &parent, input, max_depth)?;
    let view = t.view(None, cur);
    Entry::by(actor, t.id, "reseller.create", "reseller", t.id)
        .after(&view)
        .record(tx)?;
    Ok(view)
}

/// Changes a reseller below the actor (nobody edits their own tenant: its parent does).
pub fn update_reseller(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    p: &ResellerPatch,
    cur: &Currency,
) -> Result<Reseller> {
    let before = tenant::get_managed(tx, &actor.scope(), id)?;
    let after = tenant::update(tx, &before, p, cur)?;
    let view = after.view(None, cur);
    Entry::by(actor, id, "reseller.update", "reseller", id)
        .before(&before.view(None, cur))
        .after(&view)
        .record(tx)?;
    Ok(view)
}

/// Replaces the brand settings of the actor's tenant or a reseller below it.
pub fn set_brand(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    settings: BrandSettings,
) -> Result<BrandView> {
    tenant::get_visible(tx, &actor.scope(), id)?;
    let before = brand::view(tx, id)?;
    let after = brand::set(tx, id, settings)?;
    Entry::by(actor, id, "reseller.brand", "reseller", id)
        .before(&before.settings)
        .after(&after.settings)
        .record(tx)?;
    Ok(after)
}

/// Deletes a reseller below the actor that holds nothing (no subscribers, money, sites,
/// plans or sub-resellers), with its staff; refused otherwise, naming what it holds.
pub fn delete_reseller(tx: &Connection, actor: &Actor, id: i64, cur: &Currency) -> Result<()> {
    let t = tenant::get_managed(tx, &actor.scope(), id)?;
    let before = t.view(None, cur);
    tenant::delete(tx, &t)?;
    Entry::by(
        actor,
        t.parent_id.unwrap_or(crate::scope::OPERATOR_TENANT),
        "reseller.delete",
        "reseller",
        id,
    )
    .before(&before)
    .record(tx)?;
    Ok(())
}
