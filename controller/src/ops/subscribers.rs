//! Subscribers: creating and changing one. The caller decides how much of the result
//! to show (the PPP password only to those who may edit customers).

use rusqlite::Connection;

use crate::crypto::SecretBox;
use crate::db::audit::Entry;
use crate::db::subscriber::{self, NewSubscriber, SubscriberPatch, SubscriberRow};
use crate::db::tenant;
use crate::error::Result;
use crate::scope::Actor;

/// Creates a subscriber owned by `input.tenant_id` (by default the actor's tenant).
pub fn create_subscriber(
    tx: &Connection,
    actor: &Actor,
    input: &NewSubscriber,
    secrets: &SecretBox,
) -> Result<SubscriberRow> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "subscriber.create")?;
    let row = subscriber::create(tx, &owner, input, secrets)?;
    let view = row.view(None)?;
    Entry::by(actor, owner.id, "subscriber.create", "subscriber", view.id)
        .after(&view)
        .record(tx)?;
    Ok(row)
}

/// Changes a subscriber the actor can see; a `tenant_id` other than its owner's moves
/// it (within the actor's subtree). A new password is audited as `[changed]`.
pub fn update_subscriber(
    tx: &Connection,
    actor: &Actor,
    id: i64,
    p: &SubscriberPatch,
    secrets: &SecretBox,
) -> Result<SubscriberRow> {
    let before = subscriber::get_visible(tx, &actor.scope(), id)?;
    let new_owner = match p.tenant_id {
        Some(t) if t != before.sub.tenant_id => {
            Some(tenant::assignable(tx, actor, Some(t), "subscriber.move")?)
        }
        _ => None,
    };
    let after = subscriber::update(tx, &before, p, new_owner.as_ref(), secrets)?;
    let mut after_view = serde_json::to_value(after.view(None)?).expect("serializes");
    if p.password.is_some() {
        after_view["password"] = "[changed]".into();
    }
    let action = if new_owner.is_some() {
        "subscriber.move"
    } else {
        "subscriber.update"
    };
    Entry::by(actor, after.sub.tenant_id, action, "subscriber", id)
        .before(&before.view(None)?)
        .after(&after_view)
        .record(tx)?;
    Ok(after)
}
