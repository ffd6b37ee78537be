//! Messaging configuration: providers (credential sealed, audited as `[set]`, never in
//! clear), templates and settings, each change with its audit entry.

use rusqlite::Connection;
use serde_json::json;

use crate::crypto::SecretBox;
use crate::db::audit::Entry;
use crate::db::messages::{
    self, MessageTemplate, MessagingSettings, NewProvider, NewTemplate, Provider, SettingsView,
};
use crate::db::tenant;
use crate::error::Result;
use crate::scope::Actor;

/// Sets the owner's provider for a channel (replacing the one it had).
pub fn put_provider(
    tx: &Connection,
    actor: &Actor,
    input: &NewProvider,
    secrets: &SecretBox,
) -> Result<Provider> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "messaging.provider.put")?;
    let (before, after) = messages::put_provider(tx, &owner, input, secrets)?;
    let mut after_json = serde_json::to_value(&after).expect("serializes");
    if input.secret.is_some() {
        after_json["secret"] = "[set]".into();
    }
    let mut e = Entry::by(
        actor,
        owner.id,
        "messaging.provider.put",
        "message_provider",
        after.id,
    )
    .after(&after_json);
    if let Some(b) = &before {
        e = e.before(b);
    }
    e.record(tx)?;
    Ok(after)
}

/// Removes a provider the actor can see: its tenant's subtree falls back to the
/// ancestor's.
pub fn delete_provider(tx: &Connection, actor: &Actor, id: i64) -> Result<()> {
    let p = messages::get_provider(tx, &actor.scope(), id)?;
    messages::delete_provider(tx, &p)?;
    Entry::by(
        actor,
        p.tenant_id,
        "messaging.provider.delete",
        "message_provider",
        id,
    )
    .before(&p)
    .record(tx)?;
    Ok(())
}

/// Saves the owner's text for a trigger on a channel (replacing the one it had).
pub fn put_template(
    tx: &Connection,
    actor: &Actor,
    input: &NewTemplate,
) -> Result<MessageTemplate> {
    let owner = tenant::assignable(tx, actor, input.tenant_id, "messaging.template.put")?;
    let (before, after) = messages::put_template(tx, &owner, input)?;
    let mut e = Entry::by(
        actor,
        owner.id,
        "messaging.template.put",
        "message_template",
        after.id,
    )
    .after(&after);
    if let Some(b) = &before {
        e = e.before(b);
    }
    e.record(tx)?;
    Ok(after)
}

/// Removes a template the actor can see: the ancestor's or the default applies again.
pub fn delete_template(tx: &Connection, actor: &Actor, id: i64) -> Result<()> {
    let t = messages::get_template(tx, &actor.scope(), id)?;
    messages::delete_template(tx, &t)?;
    Entry::by(
        actor,
        t.tenant_id,
        "messaging.template.delete",
        "message_template",
        id,
    )
    .before(&t)
    .record(tx)?;
    Ok(())
}

/// Sets a tenant's messaging settings (its own or one below it).
pub fn put_settings(
    tx: &Connection,
    actor: &Actor,
    tenant_id: i64,
    s: &MessagingSettings,
) -> Result<SettingsView> {
    let t = messages::configurable_tenant(tx, &actor.scope(), tenant_id)?;
    let before = messages::settings_view(tx, &t)?;
    let after = messages::put_settings(tx, &t, s)?;
    Entry::by(actor, t.id, "messaging.settings.put", "tenant", t.id)
        .before(&json!(before))
        .after(&json!(after))
        .record(tx)?;
    Ok(after)
}
