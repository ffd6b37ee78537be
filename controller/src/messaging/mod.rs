//! Messages to subscribers, per reseller: SMS, WhatsApp and e-mail.
//!
//! - [`template`]: the sandboxed `{{field}}` texts resellers edit, and their checks.
//! - [`providers`]: the provider shapes (a generic HTTP template, a Twilio-style SMS API,
//!   the WhatsApp Cloud API with approved templates, SMTP) and one send over each.
//! - [`triggers`]: what enqueues a message (expiry reminder, expired, suspended, renewed,
//!   payment received), inside the transaction of the event itself.
//! - [`outbox`]: the worker that sends what is queued, with retries, the per-reseller
//!   rate limit, the WhatsApp→SMS fallback and crash recovery.
//! - [`egress`]: which addresses the outbox may connect to (public ones unless the
//!   operator allows private ones).
//!
//! Storage is in `db::messages`, the audited changes in `ops::messaging`, the API in
//! `http::messaging`.

pub mod egress;
pub mod outbox;
pub mod providers;
pub mod template;
pub mod triggers;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a message reaches the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Whatsapp, Channel::Email];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Email => "email",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The event a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// N days before expiry (the reseller's `reminder_days`).
    ExpiryReminder,
    Expired,
    Suspended,
    Renewed,
    PaymentReceived,
}

impl Trigger {
    pub const ALL: [Trigger; 5] = [
        Trigger::ExpiryReminder,
        Trigger::Expired,
        Trigger::Suspended,
        Trigger::Renewed,
        Trigger::PaymentReceived,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::ExpiryReminder => "expiry_reminder",
            Trigger::Expired => "expired",
            Trigger::Suspended => "suspended",
            Trigger::Renewed => "renewed",
            Trigger::PaymentReceived => "payment_received",
        }
    }
    pub fn parse(s: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The built-in text (SMS, WhatsApp log line and e-mail body) and e-mail subject.
    pub fn default_text(self) -> (&'static str, &'static str) {
        match self {
            Trigger::ExpiryReminder => (
                "Dear {{name}}, your {{plan}} service ({{username}}) expires on {{expires_at}}, in {{days_left}} days. Renew at {{portal_url}} - {{reseller}}",
                "Your internet service expires on {{expires_at}}",
            ),
            Trigger::Expired => (
                "Dear {{name}}, your {{plan}} service ({{username}}) expired on {{expires_at}}. Renew at {{portal_url}} - {{reseller}}",
                "Your internet service has expired",
            ),
            Trigger::Suspended => (
                "Dear {{name}}, your service ({{username}}) is suspended. Contact {{reseller}}: {{portal_url}}",
                "Your internet service is suspended",
            ),
            Trigger::Renewed => (
                "Dear {{name}}, your {{plan}} service ({{username}}) is renewed until {{expires_at}} ({{amount}}). Thank you - {{reseller}}",
                "Your internet service is renewed",
            ),
            Trigger::PaymentReceived => (
                "Dear {{name}}, we received your payment of {{amount}} for {{username}}. Thank you - {{reseller}}",
                "Payment received",
            ),
        }
    }

    /// The built-in WhatsApp template: its name (the reseller has it approved under
    /// this name, or sets its own) and parameters.
    pub fn default_whatsapp(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Trigger::ExpiryReminder => (
                "expiry_reminder",
                &["{{name}}", "{{plan}}", "{{expires_at}}", "{{days_left}}"],
            ),
            Trigger::Expired => (
                "service_expired",
                &["{{name}}", "{{plan}}", "{{expires_at}}"],
            ),
            Trigger::Suspended => ("service_suspended", &["{{name}}", "{{username}}"]),
            Trigger::Renewed => (
                "service_renewed",
                &["{{name}}", "{{plan}}", "{{expires_at}}", "{{amount}}"],
            ),
            Trigger::PaymentReceived => ("payment_received", &["{{name}}", "{{amount}}"]),
        }
    }
}

/// Milliseconds since the epoch: the outbox's clock (latency is measured in it).
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_templates() {
        for t in Trigger::ALL {
            let (body, subject) = t.default_text();
            template::validate("body", body, 2000).unwrap();
            template::validate("subject", subject, 200).unwrap();
            for p in t.default_whatsapp().1 {
                template::validate("param", p, 200).unwrap();
            }
        }
    }
}
