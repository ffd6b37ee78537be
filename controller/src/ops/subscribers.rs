//! Subscribers: creating and changing one, and bulk actions on many. The caller decides how much of the result
//! to show (the PPP password only to those who may edit customers).

use rusqlite::Connection;
use serde_json::json;

use crate::crypto::SecretBox;
use crate::db::audit::{self, Entry, Who};
use crate::db::subscriber::{
    self, BulkAction, BulkRequest, BulkResult, NewSubscriber, SubscriberPatch, SubscriberRow,
};
use crate::db::tenant;
use crate::error::{Error, Result};
use crate::scope::{Actor, Permission};

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
    let entry = Entry::by(actor, after.sub.tenant_id, action, "subscriber", id)
        .before(&before.view(None)?)
        .after(&after_view)
        .record(tx)?;
    if before.sub.status != after.sub.status
        && after.sub.status == subscriber::SubscriberStatus::Suspended
    {
        crate::messaging::triggers::suspended(tx, &[id], entry)?;
    }
    Ok(after)
}

/// The function a bulk action needs (the API's bulk endpoint and the panel's list check
/// the same one).
pub fn bulk_permission(action: BulkAction) -> Permission {
    match action {
        BulkAction::Suspend | BulkAction::Reconnect => Permission::SuspendReconnect,
        BulkAction::SetReseller => Permission::EditCustomers,
    }
}

/// Suspends, reconnects or moves many subscribers at once: all of them or none (any id
/// outside the actor's scope is a 404 naming it), a move only within the actor's
/// subtree and within the new owner's limits. One audit entry names every subscriber
/// changed.
pub fn bulk(tx: &Connection, actor: &Actor, req: &BulkRequest) -> Result<BulkResult> {
    if req.ids.is_empty() || req.ids.len() > 1000 {
        return Err(Error::invalid("ids must list 1 to 1000 subscribers"));
    }
    let mut ids = req.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if req.action == BulkAction::SetReseller && req.tenant_id.is_none() {
        return Err(Error::invalid(
            "set_reseller needs tenant_id: the reseller to move the subscribers to",
        ));
    }
    if req.action != BulkAction::SetReseller && req.tenant_id.is_some() {
        return Err(Error::invalid("tenant_id applies to set_reseller only"));
    }
    let rows = subscriber::get_all_visible(tx, &actor.scope(), &ids)?;
    let owner = match req.action {
        BulkAction::SetReseller => Some(tenant::assignable(
            tx,
            actor,
            req.tenant_id,
            "subscriber.bulk_set_reseller",
        )?),
        _ => None,
    };
    let result = subscriber::bulk(tx, &rows, req.action, owner.as_ref())?;
    let action = match req.action {
        BulkAction::Suspend => "subscriber.bulk_suspend",
        BulkAction::Reconnect => "subscriber.bulk_reconnect",
        BulkAction::SetReseller => "subscriber.bulk_set_reseller",
    };
    let entry = audit::record(
        tx,
        &Entry {
            who: std::borrow::Cow::Owned(Who::from(actor)),
            tenant_id: actor.tenant_id,
            action,
            target_kind: Some("subscriber"),
            target_id: None,
            before: Some(json!({ "ids": ids })),
            after: Some(
                json!({ "changed": result.changed, "unchanged": result.unchanged, "tenant_id": req.tenant_id }),
            ),
            more_targets: &result.changed,
            security: false,
        },
    )?;
    if req.action == BulkAction::Suspend {
        crate::messaging::triggers::suspended(tx, &result.changed, entry)?;
    }
    Ok(result)
}
