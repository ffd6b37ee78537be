//! Messaging storage: each reseller's providers (credential sealed), templates and
//! settings, each inherited down the tree; and the outbox, which is also the delivery
//! log (`messages`). The outbox's state changes (claim, mark, recover) are here as SQL;
//! the worker that drives them is `messaging::outbox`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::tenant::{self, Tenant};
use super::{Cached, Filter, Paging};
use crate::crypto::SecretBox;
use crate::error::{Error, Result};
use crate::messaging::providers::{ProviderConfig, WaTemplate};
use crate::messaging::{Channel, Trigger, template};
use crate::scope::Scope;

// ---------------------------------------------------------------- providers

/// A reseller's provider for one channel. The credential is never shown back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Provider {
    pub id: i64,
    pub tenant_id: i64,
    pub channel: Channel,
    pub config: ProviderConfig,
    /// Whether a credential is stored (it is never shown).
    pub has_secret: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A provider to create, or to put in place of the tenant's one for that channel.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Owning tenant; defaults to the caller's.
    pub tenant_id: Option<i64>,
    pub channel: Channel,
    pub config: ProviderConfig,
    /// The credential (auth token, access token, SMTP password, gateway key), stored
    /// sealed. Required for `twilio` and `whatsapp_cloud`.
    pub secret: Option<String>,
}

const PROVIDER_COLS: &str =
    "p.id, p.tenant_id, p.channel, p.config, p.secret_sealed, p.created_at, p.updated_at";

fn provider_row(r: &Row<'_>) -> rusqlite::Result<(Provider, Option<Vec<u8>>)> {
    let config: String = r.get(3)?;
    let sealed: Option<Vec<u8>> = r.get(4)?;
    Ok((
        Provider {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            channel: Channel::parse(&r.get::<_, String>(2)?).unwrap_or(Channel::Sms),
            config: serde_json::from_str(&config).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
            })?,
            has_secret: sealed.is_some(),
            created_at: super::rfc3339(r.get(5)?),
            updated_at: super::rfc3339(r.get(6)?),
        },
        sealed,
    ))
}

pub fn get_provider(conn: &Connection, scope: &Scope, id: i64) -> Result<Provider> {
    let (pred, p) = scope.owns("p.tenant_id");
    conn.cached_row(
        &format!("SELECT {PROVIDER_COLS} FROM message_providers p WHERE {pred} AND p.id = ?"),
        params![p, id],
        provider_row,
    )
    .optional()?
    .map(|(p, _)| p)
    .ok_or_else(|| Error::not_found("provider"))
}

list_filter! {
    pub struct ProviderFilter {
        pub tenant_id: Option<i64>,
    }
}

pub fn list_providers(
    conn: &Connection,
    scope: &Scope,
    f: &ProviderFilter,
    paging: Paging,
) -> Result<Vec<Provider>> {
    let mut w = Filter::scoped(scope, "p.tenant_id");
    w.and_opt("p.tenant_id = ?", f.tenant_id);
    let select = format!("SELECT {PROVIDER_COLS} FROM message_providers p");
    Ok(w.page(conn, &select, "p.id", paging, provider_row)?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// Stores `owner`'s provider for the input's channel, replacing the one it had: the
/// provider before (if any) and after.
pub fn put_provider(
    conn: &Connection,
    owner: &Tenant,
    input: &NewProvider,
    secrets: &SecretBox,
) -> Result<(Option<Provider>, Provider)> {
    input
        .config
        .validate(input.channel, input.secret.as_deref())?;
    let own = Scope::Direct {
        tenant_id: owner.id,
    };
    let before: Option<i64> = conn
        .cached_row(
            "SELECT id FROM message_providers WHERE tenant_id = ?1 AND channel = ?2",
            params![owner.id, input.channel.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let before = before.map(|id| get_provider(conn, &own, id)).transpose()?;
    let now = super::now();
    conn.cached_exec(
        "INSERT INTO message_providers (tenant_id, channel, kind, config, secret_sealed, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (tenant_id, channel) DO UPDATE SET kind = excluded.kind, config = excluded.config,
             secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
        params![
            owner.id,
            input.channel.as_str(),
            input.config.kind(),
            serde_json::to_string(&input.config).expect("serializes"),
            input.secret.as_deref().map(|s| secrets.seal(s)),
            now
        ],
    )?;
    let id: i64 = conn.cached_row(
        "SELECT id FROM message_providers WHERE tenant_id = ?1 AND channel = ?2",
        params![owner.id, input.channel.as_str()],
        |r| r.get(0),
    )?;
    Ok((before, get_provider(conn, &own, id)?))
}

pub fn delete_provider(conn: &Connection, p: &Provider) -> Result<()> {
    conn.cached_exec("DELETE FROM message_providers WHERE id = ?1", [p.id])?;
    Ok(())
}

/// A provider ready to send: its settings and opened credential.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: i64,
    pub tenant_id: i64,
    pub config: ProviderConfig,
    pub secret: Option<String>,
}

/// The provider a tenant sends `channel` through: its own, else its nearest ancestor's.
/// `path` is the tenant's materialized path.
pub fn resolve_provider(
    conn: &Connection,
    path: &str,
    channel: Channel,
    secrets: &SecretBox,
) -> Result<Option<Resolved>> {
    let row = conn
        .cached_row(
            &format!(
                "SELECT {PROVIDER_COLS} FROM message_providers p JOIN tenants t ON t.id = p.tenant_id
                 WHERE ?1 GLOB t.path || '*' AND p.channel = ?2 ORDER BY t.depth DESC LIMIT 1"
            ),
            params![path, channel.as_str()],
            provider_row,
        )
        .optional()?;
    let Some((p, sealed)) = row else {
        return Ok(None);
    };
    let secret = sealed
        .map(|s| secrets.open(&s).map_err(|e| Error::internal(&e)))
        .transpose()?;
    Ok(Some(Resolved {
        id: p.id,
        tenant_id: p.tenant_id,
        config: p.config,
        secret,
    }))
}

/// Which channels have a provider somewhere on the tenant's chain (no credential is
/// opened): what the triggers check first, cheaply.
pub fn channels_available(conn: &Connection, path: &str) -> Result<Vec<Channel>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT p.channel FROM message_providers p JOIN tenants t ON t.id = p.tenant_id
         WHERE ?1 GLOB t.path || '*'",
    )?;
    let rows = stmt.query_map([path], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(c) = Channel::parse(&r?) {
            out.push(c);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- templates

/// A WhatsApp approved template: its name and language at the provider, and our
/// `{{field}}` texts for its parameters, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    /// The approved template's name at the provider (lower-case letters, digits, `_`).
    pub name: String,
    /// `en`, `en_US`, `es`, …
    pub language: String,
    pub params: Vec<String>,
}

/// A reseller's text for one trigger on one channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageTemplate {
    pub id: i64,
    pub tenant_id: i64,
    pub trigger: Trigger,
    pub channel: Channel,
    /// `false` turns the trigger off on this channel for the tenant (and its subtree,
    /// unless a child has its own).
    pub enabled: bool,
    /// E-mail only.
    pub subject: Option<String>,
    /// The text, with `{{field}}` placeholders.
    pub body: String,
    pub whatsapp: Option<WhatsappTemplate>,
    pub updated_at: String,
}

/// A template to save (replacing the tenant's one for that trigger and channel).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// Owning tenant; defaults to the caller's.
    pub tenant_id: Option<i64>,
    pub trigger: Trigger,
    pub channel: Channel,
    pub enabled: Option<bool>,
    pub subject: Option<String>,
    /// At most 2000 characters; `{{field}}` placeholders from: name, username, plan,
    /// expires_at, days_left, amount, reseller, portal_url.
    pub body: String,
    /// Required on the `whatsapp` channel.
    pub whatsapp: Option<WhatsappTemplate>,
}

impl NewTemplate {
    pub fn validate(&self) -> Result<()> {
        template::validate("body", &self.body, 2000)?;
        if self.body.trim().is_empty() {
            return Err(Error::invalid("body must not be empty"));
        }
        match (&self.subject, self.channel) {
            (Some(s), Channel::Email) => template::validate("subject", s, 200)?,
            (Some(_), _) => return Err(Error::invalid("subject applies to e-mail only")),
            (None, _) => {}
        }
        match (&self.whatsapp, self.channel) {
            (Some(w), Channel::Whatsapp) => {
                if w.name.is_empty()
                    || w.name.len() > 512
                    || !w
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(Error::invalid(
                        "whatsapp.name: the approved template's name (lower-case letters, digits, _)",
                    ));
                }
                if w.language.is_empty()
                    || w.language.len() > 15
                    || !w
                        .language
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'_')
                {
                    return Err(Error::invalid(
                        "whatsapp.language: a code such as en or en_US",
                    ));
                }
                if w.params.len() > 20 {
                    return Err(Error::invalid("whatsapp.params: at most 20"));
                }
                for (i, p) in w.params.iter().enumerate() {
                    template::validate(&format!("whatsapp.params[{i}]"), p, 500)?;
                }
            }
            (None, Channel::Whatsapp) => {
                return Err(Error::invalid(
                    "whatsapp: the approved template (name, language, params) is required on the whatsapp channel",
                ));
            }
            (Some(_), _) => {
                return Err(Error::invalid(
                    "whatsapp applies to the whatsapp channel only",
                ));
            }
            (None, _) => {}
        }
        Ok(())
    }
}

const TEMPLATE_COLS: &str = "m.id, m.tenant_id, m.trigger, m.channel, m.enabled, m.subject, m.body, m.wa_name, m.wa_language, m.wa_params, m.updated_at";

fn template_row(r: &Row<'_>) -> rusqlite::Result<MessageTemplate> {
    let wa_name: Option<String> = r.get(7)?;
    let wa_language: Option<String> = r.get(8)?;
    let wa_params: Option<String> = r.get(9)?;
    Ok(MessageTemplate {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        trigger: Trigger::parse(&r.get::<_, String>(2)?).unwrap_or(Trigger::Expired),
        channel: Channel::parse(&r.get::<_, String>(3)?).unwrap_or(Channel::Sms),
        enabled: r.get(4)?,
        subject: r.get(5)?,
        body: r.get(6)?,
        whatsapp: wa_name.map(|name| WhatsappTemplate {
            name,
            language: wa_language.unwrap_or_default(),
            params: wa_params
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or_default(),
        }),
        updated_at: super::rfc3339(r.get(10)?),
    })
}

pub fn get_template(conn: &Connection, scope: &Scope, id: i64) -> Result<MessageTemplate> {
    let (pred, p) = scope.owns("m.tenant_id");
    conn.cached_row(
        &format!("SELECT {TEMPLATE_COLS} FROM message_templates m WHERE {pred} AND m.id = ?"),
        params![p, id],
        template_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("template"))
}

list_filter! {
    pub struct TemplateFilter {
        pub tenant_id: Option<i64>,
        pub trigger: Option<Trigger>,
    }
}

pub fn list_templates(
    conn: &Connection,
    scope: &Scope,
    f: &TemplateFilter,
    paging: Paging,
) -> Result<Vec<MessageTemplate>> {
    let mut w = Filter::scoped(scope, "m.tenant_id");
    w.and_opt("m.tenant_id = ?", f.tenant_id)
        .and_opt("m.trigger = ?", f.trigger.map(|t| t.as_str().to_string()));
    let select = format!("SELECT {TEMPLATE_COLS} FROM message_templates m");
    w.page(conn, &select, "m.id", paging, template_row)
}

/// Saves `owner`'s template for the input's trigger and channel, replacing the one it
/// had: the template before (if any) and after.
pub fn put_template(
    conn: &Connection,
    owner: &Tenant,
    input: &NewTemplate,
) -> Result<(Option<MessageTemplate>, MessageTemplate)> {
    input.validate()?;
    let own = Scope::Direct {
        tenant_id: owner.id,
    };
    let find = |conn: &Connection| -> Result<Option<i64>> {
        Ok(conn
            .cached_row(
                "SELECT id FROM message_templates WHERE tenant_id = ?1 AND trigger = ?2 AND channel = ?3",
                params![owner.id, input.trigger.as_str(), input.channel.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    };
    let before = find(conn)?
        .map(|id| get_template(conn, &own, id))
        .transpose()?;
    let wa = input.whatsapp.as_ref();
    conn.cached_exec(
        "INSERT INTO message_templates (tenant_id, trigger, channel, enabled, subject, body, wa_name, wa_language, wa_params, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant_id, trigger, channel) DO UPDATE SET enabled = excluded.enabled,
             subject = excluded.subject, body = excluded.body, wa_name = excluded.wa_name,
             wa_language = excluded.wa_language, wa_params = excluded.wa_params, updated_at = excluded.updated_at",
        params![
            owner.id,
            input.trigger.as_str(),
            input.channel.as_str(),
            input.enabled.unwrap_or(true),
            input.subject,
            input.body,
            wa.map(|w| w.name.clone()),
            wa.map(|w| w.language.clone()),
            wa.map(|w| serde_json::to_string(&w.params).expect("serializes")),
            super::now()
        ],
    )?;
    let id = find(conn)?.expect("just written");
    Ok((before, get_template(conn, &own, id)?))
}

pub fn delete_template(conn: &Connection, t: &MessageTemplate) -> Result<()> {
    conn.cached_exec("DELETE FROM message_templates WHERE id = ?1", [t.id])?;
    Ok(())
}

/// The text a tenant sends for a trigger on a channel: its own, its nearest ancestor's,
/// else the built-in default. `None`: the trigger is turned off there.
pub struct Effective {
    pub subject: Option<String>,
    pub body: String,
    pub whatsapp: Option<WaTemplate>,
}

pub fn resolve_template(
    conn: &Connection,
    path: &str,
    trigger: Trigger,
    channel: Channel,
) -> Result<Option<Effective>> {
    let row = conn
        .cached_row(
            &format!(
                "SELECT {TEMPLATE_COLS} FROM message_templates m JOIN tenants t ON t.id = m.tenant_id
                 WHERE ?1 GLOB t.path || '*' AND m.trigger = ?2 AND m.channel = ?3
                 ORDER BY t.depth DESC LIMIT 1"
            ),
            params![path, trigger.as_str(), channel.as_str()],
            template_row,
        )
        .optional()?;
    Ok(match row {
        Some(t) if !t.enabled => None,
        Some(t) => Some(Effective {
            subject: t.subject,
            body: t.body,
            whatsapp: t.whatsapp.map(|w| WaTemplate {
                name: w.name,
                language: w.language,
                params: w.params,
            }),
        }),
        None => {
            let (body, subject) = trigger.default_text();
            let (name, params) = trigger.default_whatsapp();
            Some(Effective {
                subject: Some(subject.to_string()),
                body: body.to_string(),
                whatsapp: Some(WaTemplate {
                    name: name.to_string(),
                    language: "en".to_string(),
                    params: params.iter().map(|p| p.to_string()).collect(),
                }),
            })
        }
    })
}

// ---------------------------------------------------------------- settings

/// A reseller's messaging settings (inherited by its subtree unless a child has its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessagingSettings {
    /// Days before expiry the reminder goes out (0: none). Default 3.
    #[schema(minimum = 0, maximum = 60)]
    pub reminder_days: i64,
    /// Sends started per minute for this reseller's subscribers. Default 60.
    #[schema(minimum = 1, maximum = 100000)]
    pub per_minute: i64,
    /// The self-care portal's address, for `{{portal_url}}`.
    pub portal_url: Option<String>,
}

/// Settings as read: the values in force, and whose they are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SettingsView {
    pub tenant_id: i64,
    #[serde(flatten)]
    pub settings: MessagingSettings,
    /// The tenant whose row this is; null: the built-in defaults.
    pub inherited_from: Option<i64>,
}

pub const DEFAULT_SETTINGS: MessagingSettings = MessagingSettings {
    reminder_days: 3,
    per_minute: 60,
    portal_url: None,
};

impl MessagingSettings {
    pub fn validate(&self) -> Result<()> {
        if !(0..=60).contains(&self.reminder_days) {
            return Err(Error::invalid("reminder_days must be between 0 and 60"));
        }
        if !(1..=100_000).contains(&self.per_minute) {
            return Err(Error::invalid("per_minute must be between 1 and 100000"));
        }
        if let Some(u) = &self.portal_url {
            let parsed = reqwest::Url::parse(u)
                .map_err(|e| Error::invalid(format!("portal_url: not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "http" | "https") || u.len() > 300 {
                return Err(Error::invalid("portal_url: an http:// or https:// URL"));
            }
        }
        Ok(())
    }
}

/// The settings in force for a tenant (by its path) and whose row they come from.
pub fn resolve_settings(conn: &Connection, path: &str) -> Result<(MessagingSettings, Option<i64>)> {
    let row = conn
        .cached_row(
            "SELECT s.reminder_days, s.per_minute, s.portal_url, s.tenant_id FROM messaging_settings s
             JOIN tenants t ON t.id = s.tenant_id WHERE ?1 GLOB t.path || '*' ORDER BY t.depth DESC LIMIT 1",
            [path],
            |r| {
                Ok((
                    MessagingSettings {
                        reminder_days: r.get(0)?,
                        per_minute: r.get(1)?,
                        portal_url: r.get(2)?,
                    },
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?;
    Ok(match row {
        Some((s, from)) => (s, Some(from)),
        None => (DEFAULT_SETTINGS, None),
    })
}

pub fn settings_view(conn: &Connection, t: &Tenant) -> Result<SettingsView> {
    let (settings, inherited_from) = resolve_settings(conn, &t.path)?;
    Ok(SettingsView {
        tenant_id: t.id,
        settings,
        inherited_from,
    })
}

pub fn put_settings(conn: &Connection, t: &Tenant, s: &MessagingSettings) -> Result<SettingsView> {
    s.validate()?;
    conn.cached_exec(
        "INSERT INTO messaging_settings (tenant_id, reminder_days, per_minute, portal_url, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant_id) DO UPDATE SET reminder_days = excluded.reminder_days,
             per_minute = excluded.per_minute, portal_url = excluded.portal_url, updated_at = excluded.updated_at",
        params![t.id, s.reminder_days, s.per_minute, s.portal_url, super::now()],
    )?;
    settings_view(conn, t)
}

/// A tenant the scope may configure messaging for: its own tenant or one below it
/// (a manager: only its own). Anything else is not found.
pub fn configurable_tenant(conn: &Connection, scope: &Scope, id: i64) -> Result<Tenant> {
    match tenant::get(conn, id)? {
        Some(t) if scope.may_assign_to(t.id, &t.path) => Ok(t),
        _ => Err(Error::not_found("reseller")),
    }
}

// ---------------------------------------------------------------- the outbox

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting for its (next) attempt.
    Queued,
    /// An attempt is in flight (or was, when the controller stopped).
    Sending,
    /// The provider took it.
    Sent,
    /// The provider reported it delivered (not set by any provider shape yet: their
    /// status callbacks are not received).
    Delivered,
    /// Refused for good, out of attempts, or interrupted where a resend could duplicate.
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> MessageStatus {
        match s {
            "queued" => MessageStatus::Queued,
            "sending" => MessageStatus::Sending,
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            _ => MessageStatus::Failed,
        }
    }
}

/// One message in the delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: i64,
    /// The subscriber's owner: whose log shows it.
    pub tenant_id: i64,
    pub subscriber_id: Option<i64>,
    pub trigger: Trigger,
    pub channel: Channel,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub status: MessageStatus,
    pub attempts: i64,
    /// The provider that took it or answered last.
    pub provider_id: Option<i64>,
    pub provider_message_id: Option<String>,
    /// The provider's last answer (status and body, clipped), or why it failed.
    pub last_answer: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub updated_at: String,
}

const MESSAGE_COLS: &str = "m.id, m.tenant_id, m.subscriber_id, m.trigger, m.channel, m.recipient, m.subject, m.body,
    m.status, m.attempts, m.provider_id, m.provider_message_id, m.last_answer, m.created_at, m.sent_at, m.updated_at";

fn ms3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        subscriber_id: r.get(2)?,
        trigger: Trigger::parse(&r.get::<_, String>(3)?).unwrap_or(Trigger::Expired),
        channel: Channel::parse(&r.get::<_, String>(4)?).unwrap_or(Channel::Sms),
        recipient: r.get(5)?,
        subject: r.get(6)?,
        body: r.get(7)?,
        status: MessageStatus::parse(&r.get::<_, String>(8)?),
        attempts: r.get(9)?,
        provider_id: r.get(10)?,
        provider_message_id: r.get(11)?,
        last_answer: r.get(12)?,
        created_at: ms3339(r.get(13)?),
        sent_at: r.get::<_, Option<i64>>(14)?.map(ms3339),
        updated_at: ms3339(r.get(15)?),
    })
}

pub fn get_message(conn: &Connection, scope: &Scope, id: i64) -> Result<Message> {
    let (pred, p) = scope.owns("m.tenant_id");
    conn.cached_row(
        &format!("SELECT {MESSAGE_COLS} FROM messages m WHERE {pred} AND m.id = ?"),
        params![p, id],
        message_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("message"))
}

list_filter! {
    /// The delivery log, newest first.
    pub struct MessageFilter {
        pub tenant_id: Option<i64>,
        pub subscriber_id: Option<i64>,
        pub status: Option<MessageStatus>,
        pub trigger: Option<Trigger>,
    }
}

pub fn list_messages(
    conn: &Connection,
    scope: &Scope,
    f: &MessageFilter,
    paging: Paging,
) -> Result<Vec<Message>> {
    let mut w = Filter::scoped(scope, "m.tenant_id");
    w.and_opt("m.tenant_id = ?", f.tenant_id)
        .and_opt("m.subscriber_id = ?", f.subscriber_id)
        .and_opt("m.status = ?", f.status.map(|s| s.as_str().to_string()))
        .and_opt("m.trigger = ?", f.trigger.map(|t| t.as_str().to_string()));
    let select = format!("SELECT {MESSAGE_COLS} FROM messages m");
    w.newest_first()
        .page(conn, &select, "m.id", paging, message_row)
}

/// A message to enqueue.
pub struct NewMessage<'a> {
    pub tenant_id: i64,
    pub subscriber_id: i64,
    pub trigger: Trigger,
    pub idempotency_key: &'a str,
    pub channel: Channel,
    pub recipient: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub whatsapp: Option<&'a WaTemplate>,
    pub fallback_body: Option<&'a str>,
}

/// Enqueues a message unless one with its key exists: whether it was new.
pub fn enqueue(conn: &Connection, m: &NewMessage<'_>) -> Result<bool> {
    let now = crate::messaging::now_ms();
    let n = conn.cached_exec(
        "INSERT INTO messages (tenant_id, subscriber_id, trigger, idempotency_key, channel, recipient, subject, body,
             wa_template, fallback_body, status, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?11, ?11)
         ON CONFLICT (idempotency_key) DO NOTHING",
        params![
            m.tenant_id,
            m.subscriber_id,
            m.trigger.as_str(),
            m.idempotency_key,
            m.channel.as_str(),
            m.recipient,
            m.subject,
            m.body,
            m.whatsapp.map(|w| serde_json::to_string(w).expect("serializes")),
            m.fallback_body,
            now
        ],
    )?;
    if n == 1 {
        crate::messaging::outbox::WAKE.notify_one();
    }
    Ok(n == 1)
}

/// A message claimed for one attempt: everything the send needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub tenant_id: i64,
    pub tenant_path: String,
    pub idempotency_key: String,
    pub channel: Channel,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub whatsapp: Option<WaTemplate>,
    pub fallback_body: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub attempt_id: String,
    pub sending_since: i64,
    /// True when this attempt recovers one a crash interrupted.
    pub recovering: bool,
}

/// Claims up to `limit` due messages for an attempt each: marks them `sending` with a
/// fresh attempt id, to be committed before any request goes out. A reseller over its
/// `per_minute` (attempts started in the last minute) is left for later.
pub fn claim_due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Claimed>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.tenant_id, t.path FROM messages m JOIN tenants t ON t.id = m.tenant_id
         WHERE m.status = 'queued' AND m.next_attempt_at <= ?1 ORDER BY m.next_attempt_at, m.id LIMIT ?2",
    )?;
    let due: Vec<(i64, i64, String)> = stmt
        .query_map(params![now, (limit * 4) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut room: std::collections::HashMap<i64, i64> = Default::default();
    let mut out = Vec::new();
    for (id, tenant_id, path) in due {
        if out.len() >= limit {
            break;
        }
        let left = match room.get(&tenant_id) {
            Some(l) => *l,
            None => {
                let (s, _) = resolve_settings(conn, &path)?;
                let started: i64 = conn.cached_row(
                    "SELECT count(*) FROM messages WHERE tenant_id = ?1 AND sending_since > ?2",
                    params![tenant_id, now - 60_000],
                    |r| r.get(0),
                )?;
                s.per_minute - started
            }
        };
        if left <= 0 {
            if room.insert(tenant_id, 0) != Some(0) {
                // Over its rate: its due messages wait until the minute's oldest attempt
                // leaves the window, so they neither spin the worker nor hold up others.
                let oldest: Option<i64> = conn.cached_row(
                    "SELECT min(sending_since) FROM messages WHERE tenant_id = ?1 AND sending_since > ?2",
                    params![tenant_id, now - 60_000],
                    |r| r.get(0),
                )?;
                conn.cached_exec(
                    "UPDATE messages SET next_attempt_at = ?3 WHERE tenant_id = ?1 AND status = 'queued' AND next_attempt_at <= ?2",
                    params![tenant_id, now, oldest.unwrap_or(now) + 60_001],
                )?;
            }
            continue;
        }
        room.insert(tenant_id, left - 1);
        out.push(start_attempt(conn, id, &path, now, false)?);
    }
    Ok(out)
}

fn start_attempt(
    conn: &Connection,
    id: i64,
    path: &str,
    now: i64,
    recovering: bool,
) -> Result<Claimed> {
    let attempt_id = hex::encode(rand::random::<[u8; 8]>());
    conn.cached_exec(
        "UPDATE messages SET status = 'sending', attempts = attempts + 1, attempt_id = ?2,
             sending_since = ?3, updated_at = ?3 WHERE id = ?1",
        params![id, attempt_id, now],
    )?;
    let c = conn.cached_row(
        "SELECT id, tenant_id, idempotency_key, channel, recipient, subject, body, wa_template, fallback_body, attempts
         FROM messages WHERE id = ?1",
        [id],
        |r| {
            let wa: Option<String> = r.get(7)?;
            Ok(Claimed {
                id: r.get(0)?,
                tenant_id: r.get(1)?,
                tenant_path: path.to_string(),
                idempotency_key: r.get(2)?,
                channel: Channel::parse(&r.get::<_, String>(3)?).unwrap_or(Channel::Sms),
                recipient: r.get(4)?,
                subject: r.get(5)?,
                body: r.get(6)?,
                whatsapp: wa.and_then(|w| serde_json::from_str(&w).ok()),
                fallback_body: r.get(8)?,
                attempts: r.get(9)?,
                attempt_id: attempt_id.clone(),
                sending_since: now,
                recovering,
            })
        },
    )?;
    Ok(c)
}

/// Messages an attempt was started for more than `stale_ms` ago and never marked: the
/// controller stopped mid-send (no request of the old process can still be in flight:
/// `stale_ms` is longer than the request timeout). Each gets a new attempt id, keeping
/// its idempotency key; the worker decides per provider whether it is sent again.
pub fn claim_interrupted(
    conn: &Connection,
    now: i64,
    stale_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, t.path FROM messages m JOIN tenants t ON t.id = m.tenant_id
         WHERE m.status = 'sending' AND m.sending_since <= ?1 ORDER BY m.sending_since LIMIT ?2",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map(params![now - stale_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (id, path) in rows {
        // The interrupted attempt's start: what a check asks the provider about.
        let since: i64 = conn.cached_row(
            "SELECT sending_since FROM messages WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let mut c = start_attempt(conn, id, &path, now, true)?;
        c.sending_since = since;
        out.push(c);
    }
    Ok(out)
}

/// How an attempt ended, to be written.
#[derive(Debug, Clone)]
pub enum Mark {
    Sent {
        provider_id: i64,
        provider_message_id: Option<String>,
        answer: String,
    },
    /// Try again at `at` (ms).
    Retry {
        provider_id: Option<i64>,
        answer: String,
        at: i64,
    },
    Failed {
        provider_id: Option<i64>,
        answer: String,
    },
    /// WhatsApp gave up: send the SMS text on the SMS channel now (a fresh key suffix
    /// keeps the SMS provider's deduplication apart from WhatsApp's).
    FallBackToSms { answer: String },
}

/// Writes an attempt's end, only if the attempt is still the message's current one
/// (a stale worker's late answer changes nothing): whether it was written.
pub fn mark(conn: &Connection, c: &Claimed, m: &Mark) -> Result<bool> {
    let now = crate::messaging::now_ms();
    let n = match m {
        Mark::Sent {
            provider_id,
            provider_message_id,
            answer,
        } => conn.cached_exec(
            "UPDATE messages SET status = 'sent', provider_id = ?3, provider_message_id = ?4, last_answer = ?5,
                 sent_at = ?6, updated_at = ?6, attempt_id = NULL WHERE id = ?1 AND attempt_id = ?2",
            params![c.id, c.attempt_id, provider_id, provider_message_id, answer, now],
        )?,
        Mark::Retry {
            provider_id,
            answer,
            at,
        } => conn.cached_exec(
            "UPDATE messages SET status = 'queued', provider_id = ?3, last_answer = ?4, next_attempt_at = ?5,
                 updated_at = ?6, attempt_id = NULL WHERE id = ?1 AND attempt_id = ?2",
            params![c.id, c.attempt_id, provider_id, answer, at, now],
        )?,
        Mark::Failed {
            provider_id,
            answer,
        } => conn.cached_exec(
            "UPDATE messages SET status = 'failed', provider_id = coalesce(?3, provider_id), last_answer = ?4,
                 updated_at = ?5, attempt_id = NULL WHERE id = ?1 AND attempt_id = ?2",
            params![c.id, c.attempt_id, provider_id, answer, now],
        )?,
        Mark::FallBackToSms { answer } => conn.cached_exec(
            "UPDATE messages SET status = 'queued', channel = 'sms', body = fallback_body, fallback_body = NULL,
                 wa_template = NULL, idempotency_key = idempotency_key || ':sms', attempts = 0,
                 last_answer = ?3, next_attempt_at = ?4, updated_at = ?4, attempt_id = NULL
             WHERE id = ?1 AND attempt_id = ?2",
            params![c.id, c.attempt_id, format!("WhatsApp: {answer}; falling back to SMS"), now],
        )?,
    };
    Ok(n == 1)
}

/// The soonest time (ms) a queued message is due, if any: how long the worker may sleep.
pub fn next_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.cached_row(
        "SELECT min(next_attempt_at) FROM messages WHERE status = 'queued'",
        [],
        |r| r.get(0),
    )?)
}
