//! What enqueues a message. Each event site calls one function here inside the
//! transaction of the event, so the message exists exactly when the event committed.
//! The message's key is the trigger, the subscriber, the event's own id and the contact
//! (`renewed:42:1007:phone`): an event seen twice enqueues once.
//!
//! Texts are rendered here, at the event: the message says what was true then (the
//! expiry the renewal set), whatever changes before it is sent.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::template::{self, Fields};
use super::{Channel, Trigger};
use crate::db::Cached;
use crate::db::messages::{self, NewMessage};
use crate::error::Result;

/// The subscriber's renewal `renewal_id` committed; `amount` is the retail price.
pub fn renewed(
    conn: &Connection,
    subscriber_id: i64,
    renewal_id: i64,
    amount: &str,
) -> Result<usize> {
    fire(
        conn,
        Trigger::Renewed,
        subscriber_id,
        &renewal_id.to_string(),
        Some(amount),
        None,
    )
}

/// A payment (ledger operation `operation_id`) of `amount` was recorded.
pub fn payment_received(
    conn: &Connection,
    subscriber_id: i64,
    operation_id: i64,
    amount: &str,
) -> Result<usize> {
    fire(
        conn,
        Trigger::PaymentReceived,
        subscriber_id,
        &operation_id.to_string(),
        Some(amount),
        None,
    )
}

/// The expiry sweep expired the subscriber whose expiry was `expires_at`.
pub fn expired(conn: &Connection, subscriber_id: i64, expires_at: Option<i64>) -> Result<usize> {
    fire(
        conn,
        Trigger::Expired,
        subscriber_id,
        &expires_at.unwrap_or(0).to_string(),
        None,
        None,
    )
}

/// Subscribers were suspended, recorded as audit entry `audit_id`.
pub fn suspended(conn: &Connection, subscriber_ids: &[i64], audit_id: i64) -> Result<usize> {
    let mut n = 0;
    for id in subscriber_ids {
        n += fire(
            conn,
            Trigger::Suspended,
            *id,
            &audit_id.to_string(),
            None,
            None,
        )?;
    }
    Ok(n)
}

struct Sub {
    tenant_id: i64,
    path: String,
    reseller: String,
    name: String,
    username: String,
    phone: String,
    email: String,
    plan: String,
    expires_at: Option<i64>,
}

fn load(conn: &Connection, id: i64) -> Result<Option<Sub>> {
    Ok(conn
        .cached_row(
            "SELECT s.tenant_id, t.path, t.name, s.name, s.username, s.phone, s.email, coalesce(p.name, ''), s.expires_at
             FROM subscribers s JOIN tenants t ON t.id = s.tenant_id LEFT JOIN plans p ON p.id = s.plan_id
             WHERE s.id = ?1",
            [id],
            |r| {
                Ok(Sub {
                    tenant_id: r.get(0)?,
                    path: r.get(1)?,
                    reseller: r.get(2)?,
                    name: r.get(3)?,
                    username: r.get(4)?,
                    phone: r.get(5)?,
                    email: r.get(6)?,
                    plan: r.get(7)?,
                    expires_at: r.get(8)?,
                })
            },
        )
        .optional()?)
}

fn date(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

/// Enqueues the trigger's messages for one subscriber: one to its phone (WhatsApp when
/// a WhatsApp provider is in force, with the SMS text kept for the fallback; else SMS)
/// and one to its e-mail, each only where a provider is in force on the subscriber's
/// chain and the trigger is not turned off. How many were new.
pub fn fire(
    conn: &Connection,
    trigger: Trigger,
    subscriber_id: i64,
    event_ref: &str,
    amount: Option<&str>,
    now: Option<i64>,
) -> Result<usize> {
    let Some(sub) = load(conn, subscriber_id)? else {
        return Ok(0);
    };
    let channels = messages::channels_available(conn, &sub.path)?;
    if channels.is_empty() {
        return Ok(0);
    }
    let now = now.unwrap_or_else(crate::db::now);
    let (settings, _) = messages::resolve_settings(conn, &sub.path)?;
    let mut fields = Fields::new();
    fields.insert("name", sub.name.clone());
    fields.insert("username", sub.username.clone());
    fields.insert("plan", sub.plan.clone());
    fields.insert("expires_at", sub.expires_at.map(date).unwrap_or_default());
    fields.insert(
        "days_left",
        sub.expires_at
            .map(|e| ((e - now).max(0) + 86_399) / 86_400)
            .unwrap_or(0)
            .to_string(),
    );
    fields.insert("amount", amount.unwrap_or("").to_string());
    fields.insert("reseller", sub.reseller.clone());
    fields.insert(
        "portal_url",
        settings.portal_url.clone().unwrap_or_default(),
    );
    let has = |c: Channel| channels.contains(&c);
    let text = |c: Channel| -> Result<Option<messages::Effective>> {
        messages::resolve_template(conn, &sub.path, trigger, c)
    };
    let mut n = 0;
    let key = |contact: &str| format!("{}:{subscriber_id}:{event_ref}:{contact}", trigger.as_str());
    if !sub.phone.trim().is_empty() {
        let sms = if has(Channel::Sms) {
            text(Channel::Sms)?
        } else {
            None
        };
        let sms_body = sms.as_ref().map(|t| template::render(&t.body, &fields));
        let wa = if has(Channel::Whatsapp) {
            text(Channel::Whatsapp)?
        } else {
            None
        };
        let k = key("phone");
        if let Some(wa) = wa.filter(|w| w.whatsapp.is_some()) {
            let mut t = wa.whatsapp.clone().expect("filtered");
            t.params = t
                .params
                .iter()
                .map(|p| template::render(p, &fields))
                .collect();
            let body = template::render(&wa.body, &fields);
            n += messages::enqueue(
                conn,
                &NewMessage {
                    tenant_id: sub.tenant_id,
                    subscriber_id,
                    trigger,
                    idempotency_key: &k,
                    channel: Channel::Whatsapp,
                    recipient: sub.phone.trim(),
                    subject: None,
                    body: &body,
                    whatsapp: Some(&t),
                    fallback_body: sms_body.as_deref(),
                },
            )? as usize;
        } else if let Some(body) = &sms_body {
            n += messages::enqueue(
                conn,
                &NewMessage {
                    tenant_id: sub.tenant_id,
                    subscriber_id,
                    trigger,
                    idempotency_key: &k,
                    channel: Channel::Sms,
                    recipient: sub.phone.trim(),
                    subject: None,
                    body,
                    whatsapp: None,
                    fallback_body: None,
                },
            )? as usize;
        }
    }
    if !sub.email.trim().is_empty()
        && has(Channel::Email)
        && let Some(t) = text(Channel::Email)?
    {
        let subject = t.subject.as_deref().map(|s| template::render(s, &fields));
        let body = template::render(&t.body, &fields);
        let k = key("email");
        n += messages::enqueue(
            conn,
            &NewMessage {
                tenant_id: sub.tenant_id,
                subscriber_id,
                trigger,
                idempotency_key: &k,
                channel: Channel::Email,
                recipient: sub.email.trim(),
                subject: subject.as_deref(),
                body: &body,
                whatsapp: None,
                fallback_body: None,
            },
        )? as usize;
    }
    Ok(n)
}

/// One pass of the expiry reminders: every active subscriber whose expiry falls within
/// its reseller's `reminder_days` gets its reminder, once per expiry (the expiry is the
/// event's id). Reads up to `limit` subscribers after `after` (expiry, id): how many
/// messages were new, and where the next pass starts (`None`: done).
pub fn remind_due(
    conn: &Connection,
    now: i64,
    after: (i64, i64),
    limit: usize,
) -> Result<(usize, Option<(i64, i64)>)> {
    let max_days: i64 = conn.cached_row(
        "SELECT max(3, coalesce(max(reminder_days), 0)) FROM messaging_settings",
        [],
        |r| r.get(0),
    )?;
    // Only subscribers some provider can reach at all: tenants under one with a provider.
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.expires_at, t.path FROM subscribers s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.status = 'active' AND s.expires_at > ?1 AND s.expires_at <= ?2
           AND EXISTS (SELECT 1 FROM message_providers p JOIN tenants pt ON pt.id = p.tenant_id
                       WHERE t.path GLOB pt.path || '*')
           AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.idempotency_key IN
                 ('expiry_reminder:' || s.id || ':' || s.expires_at || ':phone',
                  'expiry_reminder:' || s.id || ':' || s.expires_at || ':email'))
           AND (s.expires_at, s.id) > (?4, ?5)
         ORDER BY s.expires_at, s.id LIMIT ?3",
    )?;
    let due: Vec<(i64, i64, String)> = stmt
        .query_map(
            params![now, now + max_days * 86_400, limit as i64, after.0, after.1],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    let next = (due.len() == limit)
        .then(|| due.last().map(|(id, e, _)| (*e, *id)))
        .flatten();
    let mut days: HashMap<String, i64> = HashMap::new();
    let mut n = 0;
    for (id, expires_at, path) in due {
        let d = match days.get(&path) {
            Some(d) => *d,
            None => {
                let d = messages::resolve_settings(conn, &path)?.0.reminder_days;
                days.insert(path.clone(), d);
                d
            }
        };
        if d == 0 || expires_at > now + d * 86_400 {
            continue;
        }
        n += fire(
            conn,
            Trigger::ExpiryReminder,
            id,
            &expires_at.to_string(),
            None,
            Some(now),
        )?;
    }
    Ok((n, next))
}

/// Runs [`remind_due`] until a pass finds nothing more, logging a failure (the expiry
/// sweep's loop calls it after each sweep).
pub async fn sweep_reminders(state: &crate::http::AppState) {
    let now = crate::db::now();
    let mut after = (0, 0);
    loop {
        match state
            .db
            .write(move |tx| remind_due(tx, now, after, 500))
            .await
        {
            Ok((n, next)) => {
                if n > 0 {
                    tracing::info!(messages = n, "expiry reminders enqueued");
                }
                match next {
                    Some(a) => after = a,
                    None => return,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "expiry reminders failed; retrying next interval");
                return;
            }
        }
    }
}
