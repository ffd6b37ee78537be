//! Plans and rate cards.

use rusqlite::Connection;

use crate::db::audit::Entry;
use crate::db::plan::{self, NewPlan, Plan, PlanPatch, RateCardChange, RateCardEntry};
use crate::db::tenant;
use crate::error::{Error, Result};
use crate::money::Currency;
use crate::scope::Actor;

/// Creates a plan owned by `input.tenant_id` (by default the actor's tenant).
pub fn create_plan(
    tx: &Connection,
    actor: &Actor,
    input: &NewPlan,
    cur: &Currency,
) -> Result<Plan> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "plan.create")?;
    let p = plan::create(tx, &owner, input, cur)?.view(cur);
    Entry::by(actor, owner.id, "plan.create", "plan", p.id)
        .after(&p)
        .record(tx)?;
    Ok(p)
}

/// Changes one of the actor's (or its descendants') plans.
pub fn update_plan(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    p: &PlanPatch,
    cur: &Currency,
) -> Result<Plan> {
    let before = plan::get_owned(tx, &actor.scope(), id)?;
    let after = plan::update(tx, &before, p, cur)?;
    Entry::by(actor, after.tenant_id, "plan.update", "plan", id)
        .before(&before.view(cur))
        .after(&after.view(cur))
        .record(tx)?;
    Ok(after.view(cur))
}

/// Assigns a plan to a managed reseller's rate card at a wholesale price, changes that
/// price, or takes the plan off the card.
pub fn change_rate_card(
    tx: &Connection,
    actor: &Actor,
    reseller_id: i64,
    c: &RateCardChange,
    cur: &Currency,
) -> Result<RateCardEntry> {
    let child = tenant::get_managed(tx, &actor.scope(), reseller_id)?;
    let (row, action) = match (c.remove, c.wholesale_price) {
        (true, None) => (
            plan::remove_card(tx, &child, c.plan_id)?,
            "rate_card.remove",
        ),
        (false, Some(price)) => {
            let minor = cur.to_minor("wholesale_price", price.0)?;
            (
                plan::set_card(tx, &child, c.plan_id, minor)?,
                "rate_card.set",
            )
        }
        _ => {
            return Err(Error::invalid(
                "give wholesale_price to assign a plan, or remove: true (alone) to take it off",
            ));
        }
    };
    let entry = RateCardEntry {
        wholesale_price: cur.from_minor(row.wholesale.unwrap_or(0)),
        plan: row.view(cur),
    };
    Entry::by(actor, child.id, action, "reseller", child.id)
        .after(&entry)
        .record(tx)?;
    Ok(entry)
}
