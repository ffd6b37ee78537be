//! Notices: posting, changing and taking down what subscribers are told. A notice is for
//! the subscribers of the actor's own part of the tree (a manager's, for its tenant's
//! direct customers only), narrowed by a plan or a site the actor sees.

use rusqlite::Connection;

use crate::db::audit::Entry;
use crate::db::notice::{self, NewNotice, Notice, NoticePatch};
use crate::db::tenant;
use crate::error::Result;
use crate::scope::{Actor, UserKind};

/// Posts a notice for `input.tenant_id`'s subscribers (by default the actor's tenant's).
pub fn create_notice(tx: &Connection, actor: &Actor, input: &NewNotice) -> Result<Notice> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "notice.create")?;
    // A manager's rows are its tenant's direct customers: so is its notice's audience.
    let direct = actor.kind == UserKind::Manager;
    let n = notice::create(
        tx,
        &actor.scope(),
        &owner,
        direct,
        input,
        Some(actor.user_id),
    )?;
    Entry::by(actor, owner.id, "notice.create", "notice", n.id)
        .after(&n)
        .record(tx)?;
    Ok(n)
}

/// Changes a notice the actor sees.
pub fn update_notice(tx: &Connection, actor: &Actor, id: i64, p: &NoticePatch) -> Result<Notice> {
    let scope = actor.scope();
    let before = notice::get_visible(tx, &scope, id)?;
    let after = notice::update(tx, &scope, &before, p)?;
    Entry::by(actor, after.tenant_id, "notice.update", "notice", id)
        .before(&before)
        .after(&after)
        .record(tx)?;
    Ok(after)
}

/// Takes a notice the actor sees down for good.
pub fn delete_notice(tx: &Connection, actor: &Actor, id: i64) -> Result<()> {
    let before = notice::get_visible(tx, &actor.scope(), id)?;
    notice::delete(tx, id)?;
    Entry::by(actor, before.tenant_id, "notice.delete", "notice", id)
        .before(&before)
        .record(tx)
        .map(|_| ())
}
