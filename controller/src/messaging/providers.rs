//! The provider shapes a reseller configures, and one send over each.
//!
//! - `http`: the reseller's own gateway, described as the common ISP panels do it — a
//!   URL, a method, headers and a body with placeholders (`{{to}}`, `{{text}}`,
//!   `{{subject}}`, `{{secret}}`, `{{key}}`), each value escaped for where it lands (JSON
//!   string, form or URL encoding, raw text).
//! - `twilio`: a Twilio-style SMS API — a form-encoded POST to
//!   `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with basic auth.
//! - `whatsapp_cloud`: the WhatsApp Cloud API — `POST {base_url}/{phone_number_id}/messages`
//!   with a bearer token and `type: template` (an approved template and its parameters).
//! - `smtp`: e-mail with `lettre`, plain, STARTTLS or TLS.
//!
//! Base URLs are part of the configuration, so a test points them at a local server.
//!
//! Every HTTP send carries the message's idempotency key in an `Idempotency-Key` header
//! (and the generic template can place `{{key}}` anywhere). What a retry after a crash
//! does with it depends on the provider; see [`ProviderConfig::recovery`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Channel;
use crate::error::{Error, Result};

/// The header every HTTP send carries the message's idempotency key in.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A provider's settings, without its credential (`secret`, stored sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// The reseller's own HTTP gateway (SMS or WhatsApp).
    Http {
        /// `http(s)://…`; may hold placeholders (URL-encoded when filled).
        url: String,
        method: HttpMethod,
        /// Header values may hold placeholders (`Authorization: Bearer {{secret}}`).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// The request body with placeholders; empty for none.
        #[serde(default)]
        body: String,
        /// How the body is written, and so how each value is escaped in it.
        body_type: BodyType,
        /// The gateway answers a repeated `Idempotency-Key` with the first answer and
        /// sends nothing again: a send interrupted by a crash is then retried with the
        /// same key. Without it, an interrupted send is not retried (it may have gone).
        #[serde(default)]
        honours_idempotency_key: bool,
    },
    /// A Twilio-style SMS API.
    Twilio {
        /// Default `https://api.twilio.com`.
        base_url: Option<String>,
        account_sid: String,
        /// The sender number or alphanumeric id.
        from: String,
    },
    /// The WhatsApp Cloud API, approved template messages.
    WhatsappCloud {
        /// Default `https://graph.facebook.com/v21.0`.
        base_url: Option<String>,
        phone_number_id: String,
        /// When WhatsApp refuses a message (or gives up on it), send the SMS text
        /// through the SMS provider instead.
        #[serde(default)]
        fallback_to_sms: bool,
    },
    /// E-mail over SMTP.
    Smtp {
        host: String,
        port: u16,
        tls: SmtpTls,
        /// The login; the password is the secret.
        username: Option<String>,
        /// `Name <address@domain>` or `address@domain`.
        from: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    /// `application/json`: values are escaped as JSON string contents; the filled body
    /// must be JSON.
    Json,
    /// `application/x-www-form-urlencoded`: values are percent-encoded.
    Form,
    /// `text/plain`: values as they are.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// STARTTLS on the submission port.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// What to do with a message found "sending" after a crash (its attempt older than the
/// request timeout, so no request of the old process can still be in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Send again with the same idempotency key: the provider answers a repeated key
    /// with the first answer and sends nothing twice (within its idempotency window).
    ResendSameKey,
    /// Ask the provider whether it took the message (Twilio-style: its message list by
    /// recipient and time), and send again only if it did not.
    Check,
    /// SMTP has no idempotency key: send again with the same `Message-ID` (mail systems
    /// and clients drop a second copy of one Message-ID).
    ResendSameMessageId,
    /// The provider neither deduplicates nor can be asked: mark the message failed as
    /// "interrupted, delivery unknown" rather than risk a duplicate.
    GiveUp,
}

const HTTP_PLACEHOLDERS: &[&str] = &["to", "text", "subject", "secret", "key"];

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Http { .. } => "http",
            ProviderConfig::Twilio { .. } => "twilio",
            ProviderConfig::WhatsappCloud { .. } => "whatsapp_cloud",
            ProviderConfig::Smtp { .. } => "smtp",
        }
    }

    pub fn recovery(&self) -> Recovery {
        match self {
            ProviderConfig::Http {
                honours_idempotency_key: true,
                ..
            } => Recovery::ResendSameKey,
            ProviderConfig::Http { .. } | ProviderConfig::WhatsappCloud { .. } => Recovery::GiveUp,
            ProviderConfig::Twilio { .. } => Recovery::Check,
            ProviderConfig::Smtp { .. } => Recovery::ResendSameMessageId,
        }
    }

    pub fn falls_back_to_sms(&self) -> bool {
        matches!(
            self,
            ProviderConfig::WhatsappCloud {
                fallback_to_sms: true,
                ..
            }
        )
    }

    /// Checks a configuration a reseller saves for `channel`, with its `secret`.
    pub fn validate(&self, channel: Channel, secret: Option<&str>) -> Result<()> {
        let fits = match self {
            ProviderConfig::Http { .. } => matches!(channel, Channel::Sms | Channel::Whatsapp),
            ProviderConfig::Twilio { .. } => channel == Channel::Sms,
            ProviderConfig::WhatsappCloud { .. } => channel == Channel::Whatsapp,
            ProviderConfig::Smtp { .. } => channel == Channel::Email,
        };
        if !fits {
            return Err(Error::invalid(format!(
                "a '{}' provider cannot send on the '{}' channel",
                self.kind(),
                channel.as_str()
            )));
        }
        if let Some(s) = secret
            && (s.is_empty() || s.len() > 4096 || s.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "secret must be 1 to 4096 characters without control characters",
            ));
        }
        let short = |what: &str, v: &str| -> Result<()> {
            if v.trim().is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "{what} must be 1 to 200 characters without control characters"
                )));
            }
            Ok(())
        };
        match self {
            ProviderConfig::Http {
                url,
                headers,
                body,
                body_type,
                ..
            } => {
                check_placeholders("url", url)?;
                // The URL must still be one with every placeholder filled.
                let filled = fill(url, &sample(), Escape::Url);
                check_url("url", &filled)?;
                if headers.len() > 20 {
                    return Err(Error::invalid("at most 20 headers"));
                }
                for (k, v) in headers {
                    if k.is_empty()
                        || !k
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        || reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    {
                        return Err(Error::invalid(format!(
                            "headers: '{k}' is not a header name"
                        )));
                    }
                    check_placeholders(&format!("headers.{k}"), v)?;
                    if v.chars().any(char::is_control) {
                        return Err(Error::invalid(format!(
                            "headers.{k}: no control characters"
                        )));
                    }
                }
                if body.len() > 8192 {
                    return Err(Error::invalid("body: at most 8192 bytes"));
                }
                check_placeholders("body", body)?;
                if *body_type == BodyType::Json && !body.is_empty() {
                    let filled = fill(body, &sample(), Escape::Json);
                    serde_json::from_str::<serde_json::Value>(&filled).map_err(|e| {
                        Error::unprocessable(
                            "bad_json",
                            format!("body: with its placeholders filled it is not JSON: {e}"),
                        )
                    })?;
                }
            }
            ProviderConfig::Twilio {
                base_url,
                account_sid,
                from,
            } => {
                if let Some(u) = base_url {
                    check_url("base_url", u)?;
                }
                short("account_sid", account_sid)?;
                if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(Error::invalid("account_sid: letters and digits only"));
                }
                short("from", from)?;
                if secret.is_none() {
                    return Err(Error::invalid("secret: the auth token is required"));
                }
            }
            ProviderConfig::WhatsappCloud {
                base_url,
                phone_number_id,
                ..
            } => {
                if let Some(u) = base_url {
                    check_url("base_url", u)?;
                }
                short("phone_number_id", phone_number_id)?;
                if !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::invalid("phone_number_id: digits only"));
                }
                if secret.is_none() {
                    return Err(Error::invalid("secret: the access token is required"));
                }
            }
            ProviderConfig::Smtp {
                host,
                port,
                username,
                from,
                ..
            } => {
                short("host", host)?;
                if host.contains(['/', ' ', ':']) && host.parse::<std::net::IpAddr>().is_err() {
                    return Err(Error::invalid("host: a host name or an address"));
                }
                if *port == 0 {
                    return Err(Error::invalid("port must be between 1 and 65535"));
                }
                if let Some(u) = username {
                    short("username", u)?;
                }
                from.parse::<lettre::message::Mailbox>()
                    .map_err(|e| Error::invalid(format!("from: not an e-mail address ({e})")))?;
            }
        }
        Ok(())
    }
}

fn check_url(what: &str, u: &str) -> Result<()> {
    let parsed =
        reqwest::Url::parse(u).map_err(|e| Error::invalid(format!("{what}: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::invalid(format!(
            "{what}: an http:// or https:// URL"
        )));
    }
    Ok(())
}

fn check_placeholders(what: &str, s: &str) -> Result<()> {
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            Error::unprocessable("bad_template", format!("{what}: a '{{{{' is not closed"))
        })?;
        let name = after[..close].trim();
        if !HTTP_PLACEHOLDERS.contains(&name) {
            return Err(Error::unprocessable(
                "bad_template",
                format!(
                    "{what}: unknown placeholder '{{{{{name}}}}}'; use {{{{to}}}}, {{{{text}}}}, {{{{subject}}}}, {{{{secret}}}} or {{{{key}}}}"
                ),
            ));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Escape {
    Json,
    Url,
    Raw,
}

fn sample() -> BTreeMap<&'static str, String> {
    HTTP_PLACEHOLDERS
        .iter()
        .map(|p| (*p, "x\"y".to_string()))
        .collect()
}

/// Fills `{{name}}` placeholders, escaping each value for where it lands.
fn fill(template: &str, values: &BTreeMap<&'static str, String>, esc: Escape) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let v = values
            .get(after[..close].trim())
            .map(String::as_str)
            .unwrap_or("");
        match esc {
            Escape::Raw => out.push_str(v),
            Escape::Json => {
                let q = serde_json::to_string(v).expect("a string serializes");
                out.push_str(&q[1..q.len() - 1]);
            }
            Escape::Url => out.extend(url::form_urlencoded::byte_serialize(v.as_bytes())),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// A WhatsApp approved template and its filled parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaTemplate {
    pub name: String,
    pub language: String,
    pub params: Vec<String>,
}

/// One message as a provider sends it.
pub struct Outgoing<'a> {
    /// The message's idempotency key, the same on every attempt.
    pub key: &'a str,
    pub to: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub whatsapp: Option<&'a WaTemplate>,
}

/// What a send came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider took it (HTTP 2xx, SMTP 250).
    Sent {
        provider_message_id: Option<String>,
        answer: String,
    },
    /// Worth another attempt: HTTP 5xx, 408, 429, a refused connection, an SMTP 4xx.
    Retry(String),
    /// No answer after the request went out (a timeout, a connection cut): the provider
    /// may have taken it. Retried like [`Outcome::Retry`] where a resend cannot
    /// duplicate; checked first where the provider can be asked.
    Unknown(String),
    /// The provider refused it for good: HTTP 4xx, SMTP 5xx, a bad address.
    Permanent(String),
}

/// Keeps a provider's answer short enough for the log.
fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 500 {
        return s.to_string();
    }
    let mut end = 500;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Sends one message through one provider. Never panics on what the provider answers.
pub async fn send(
    client: &reqwest::Client,
    cfg: &ProviderConfig,
    secret: Option<&str>,
    msg: &Outgoing<'_>,
    timeout: Duration,
    allow_private: bool,
) -> Outcome {
    match cfg {
        ProviderConfig::Smtp {
            host,
            port,
            tls,
            username,
            from,
        } => {
            send_smtp(
                host,
                *port,
                *tls,
                username.as_deref(),
                secret,
                from,
                msg,
                timeout,
                allow_private,
            )
            .await
        }
        _ => match http_request(client, cfg, secret, msg) {
            Ok(req) => http_outcome(cfg, req.timeout(timeout).send().await).await,
            Err(e) => Outcome::Permanent(e),
        },
    }
}

fn http_request(
    client: &reqwest::Client,
    cfg: &ProviderConfig,
    secret: Option<&str>,
    msg: &Outgoing<'_>,
) -> std::result::Result<reqwest::RequestBuilder, String> {
    let req = match cfg {
        ProviderConfig::Http {
            url,
            method,
            headers,
            body,
            body_type,
            ..
        } => {
            let mut values = BTreeMap::new();
            values.insert("to", msg.to.to_string());
            values.insert("text", msg.body.to_string());
            values.insert("subject", msg.subject.unwrap_or("").to_string());
            values.insert("secret", secret.unwrap_or("").to_string());
            values.insert("key", msg.key.to_string());
            let url = fill(url, &values, Escape::Url);
            let m = match method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Put => reqwest::Method::PUT,
            };
            let mut req = client.request(m, &url);
            for (k, v) in headers {
                let v = fill(v, &values, Escape::Raw);
                if v.chars().any(char::is_control) {
                    return Err(format!("header {k}: a value with a control character"));
                }
                req = req.header(k.as_str(), v);
            }
            if !body.is_empty() {
                let (esc, ct) = match body_type {
                    BodyType::Json => (Escape::Json, "application/json"),
                    BodyType::Form => (Escape::Url, "application/x-www-form-urlencoded"),
                    BodyType::Text => (Escape::Raw, "text/plain; charset=utf-8"),
                };
                req = req
                    .header(reqwest::header::CONTENT_TYPE, ct)
                    .body(fill(body, &values, esc));
            }
            req
        }
        ProviderConfig::Twilio {
            base_url,
            account_sid,
            from,
        } => {
            let base = base_url.as_deref().unwrap_or("https://api.twilio.com");
            client
                .post(format!(
                    "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                    base.trim_end_matches('/')
                ))
                .basic_auth(account_sid, secret)
                .form(&[("To", msg.to), ("From", from.as_str()), ("Body", msg.body)])
        }
        ProviderConfig::WhatsappCloud {
            base_url,
            phone_number_id,
            ..
        } => {
            let base = base_url
                .as_deref()
                .unwrap_or("https://graph.facebook.com/v21.0");
            let Some(t) = msg.whatsapp else {
                return Err("no WhatsApp template for this message".into());
            };
            let params: Vec<serde_json::Value> = t
                .params
                .iter()
                .map(|p| serde_json::json!({ "type": "text", "text": p }))
                .collect();
            let to: String = msg.to.chars().filter(char::is_ascii_digit).collect();
            client
                .post(format!(
                    "{}/{phone_number_id}/messages",
                    base.trim_end_matches('/')
                ))
                .bearer_auth(secret.unwrap_or(""))
                .json(&serde_json::json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": to,
                    "type": "template",
                    "template": {
                        "name": t.name,
                        "language": { "code": t.language },
                        "components": [{ "type": "body", "parameters": params }],
                    },
                }))
        }
        ProviderConfig::Smtp { .. } => unreachable!("SMTP is not HTTP"),
    };
    Ok(req.header(IDEMPOTENCY_HEADER, msg.key))
}

async fn http_outcome(
    cfg: &ProviderConfig,
    res: std::result::Result<reqwest::Response, reqwest::Error>,
) -> Outcome {
    let res = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Unknown("timed out".into()),
        Err(e) if e.is_connect() => {
            return Outcome::Retry(format!("cannot connect: {}", inner(&e)));
        }
        Err(e) if e.is_builder() => {
            return Outcome::Permanent(format!("bad request: {}", inner(&e)));
        }
        Err(e) => return Outcome::Unknown(format!("request failed: {}", inner(&e))),
    };
    let status = res.status();
    let text = match res.text().await {
        Ok(t) => t,
        Err(e) if status.is_success() => {
            // Taken, but the answer was cut: it is sent, with no provider id.
            return Outcome::Sent {
                provider_message_id: None,
                answer: format!("{status}; answer unreadable: {}", inner(&e)),
            };
        }
        Err(e) => {
            return Outcome::Unknown(format!("{status}; answer unreadable: {}", inner(&e)));
        }
    };
    let answer = clip(&format!("{} {}", status.as_u16(), text));
    if status.is_success() {
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let id = json.as_ref().and_then(|j| match cfg {
            ProviderConfig::Twilio { .. } => j["sid"].as_str().map(str::to_string),
            ProviderConfig::WhatsappCloud { .. } => {
                j["messages"][0]["id"].as_str().map(str::to_string)
            }
            _ => ["id", "message_id", "sid"]
                .iter()
                .find_map(|k| j[k].as_str().map(str::to_string)),
        });
        return Outcome::Sent {
            provider_message_id: id,
            answer,
        };
    }
    if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Retry(answer)
    } else {
        Outcome::Permanent(answer)
    }
}

/// Asks a Twilio-style API whether it took a message to `to` with `body` at or after
/// `since_ms` (its message list, filtered by recipient and sender): the check a message
/// left "sending" by a crash gets before it is sent again. `Ok(Some(sid))`: it did.
pub async fn twilio_find(
    client: &reqwest::Client,
    cfg: &ProviderConfig,
    secret: Option<&str>,
    to: &str,
    body: &str,
    since_ms: i64,
    timeout: Duration,
) -> std::result::Result<Option<String>, String> {
    let ProviderConfig::Twilio {
        base_url,
        account_sid,
        from,
    } = cfg
    else {
        return Err("not a Twilio-style provider".into());
    };
    let base = base_url.as_deref().unwrap_or("https://api.twilio.com");
    let day = time::OffsetDateTime::from_unix_timestamp(since_ms / 1000 - 86_400)
        .map_err(|e| e.to_string())?
        .date();
    let res = client
        .get(format!(
            "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
            base.trim_end_matches('/')
        ))
        .basic_auth(account_sid, secret)
        .query(&[
            ("To", to),
            ("From", from.as_str()),
            ("DateSent>", &day.to_string()),
            ("PageSize", "50"),
        ])
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| inner(&e))?;
    if !res.status().is_success() {
        return Err(format!("message list answered {}", res.status()));
    }
    let j: serde_json::Value = res.json().await.map_err(|e| inner(&e))?;
    let found = j["messages"].as_array().and_then(|list| {
        list.iter()
            .find(|m| m["body"].as_str() == Some(body))
            .and_then(|m| m["sid"].as_str().map(str::to_string))
    });
    Ok(found)
}

#[allow(clippy::too_many_arguments)]
async fn send_smtp(
    host: &str,
    port: u16,
    tls: SmtpTls,
    username: Option<&str>,
    password: Option<&str>,
    from: &str,
    msg: &Outgoing<'_>,
    timeout: Duration,
    allow_private: bool,
) -> Outcome {
    use lettre::message::{Mailbox, Message, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let from: Mailbox = match from.parse() {
        Ok(m) => m,
        Err(e) => return Outcome::Permanent(format!("from: {e}")),
    };
    let to: Mailbox = match msg.to.parse() {
        Ok(m) => m,
        Err(e) => return Outcome::Permanent(format!("recipient '{}': {e}", msg.to)),
    };
    // The same Message-ID on every attempt: a copy sent again after a crash is the
    // same message to the mail systems and clients that deduplicate by it.
    let domain = from.email.domain().to_string();
    let email = match Message::builder()
        .from(from)
        .to(to)
        .subject(msg.subject.unwrap_or(""))
        .message_id(Some(format!("<{}@{domain}>", message_id_part(msg.key))))
        .header(ContentType::TEXT_PLAIN)
        .body(msg.body.to_string())
    {
        Ok(m) => m,
        Err(e) => return Outcome::Permanent(format!("cannot build the e-mail: {e}")),
    };
    // Connect to the address the egress check passed, not to whatever the host name
    // resolves to a moment later; TLS still verifies the certificate for the host name.
    let addr = match super::egress::resolve(host, port, allow_private).await {
        Ok(addrs) => addrs[0],
        Err(e) => return Outcome::Permanent(e),
    };
    let tls = match tls {
        SmtpTls::None => Ok(Tls::None),
        SmtpTls::Starttls => TlsParameters::new(host.to_string()).map(Tls::Required),
        SmtpTls::Tls => TlsParameters::new(host.to_string()).map(Tls::Wrapper),
    };
    let mut builder = match tls {
        Ok(tls) => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout)),
        Err(e) => return Outcome::Permanent(format!("smtp: {e}")),
    };
    if let (Some(u), Some(p)) = (username, password) {
        builder = builder.credentials(Credentials::new(u.to_string(), p.to_string()));
    }
    match builder.build().send(email).await {
        Ok(r) => Outcome::Sent {
            provider_message_id: None,
            answer: clip(&format!(
                "{} {}",
                r.code(),
                r.message().collect::<Vec<_>>().join(" ")
            )),
        },
        Err(e) if e.is_permanent() => Outcome::Permanent(clip(&format!("smtp: {}", inner(&e)))),
        Err(e) => Outcome::Retry(clip(&format!("smtp: {}", inner(&e)))),
    }
}

/// The local part of a Message-ID from an idempotency key (letters, digits, `.-_`).
fn message_id_part(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '.'
            }
        })
        .collect()
}

fn inner(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(body: &str, body_type: BodyType) -> ProviderConfig {
        ProviderConfig::Http {
            url: "http://127.0.0.1:9/send?to={{to}}".into(),
            method: HttpMethod::Post,
            headers: BTreeMap::from([("X-Key".to_string(), "{{secret}}".to_string())]),
            body: body.into(),
            body_type,
            honours_idempotency_key: false,
        }
    }

    #[test]
    fn values_are_escaped_for_where_they_land() {
        let mut v = BTreeMap::new();
        v.insert("text", "a \"b\" & c".to_string());
        assert_eq!(
            fill(r#"{"t":"{{text}}"}"#, &v, Escape::Json),
            r#"{"t":"a \"b\" & c"}"#
        );
        assert_eq!(fill("t={{ text }}", &v, Escape::Url), "t=a+%22b%22+%26+c");
    }

    #[test]
    fn checks_urls_placeholders_and_json() {
        let ok = http(r#"{"to":"{{to}}","text":"{{text}}"}"#, BodyType::Json);
        ok.validate(Channel::Sms, None).unwrap();
        assert!(ok.validate(Channel::Email, None).is_err());
        let e = http(r#"{"to":"{{to}}""#, BodyType::Json)
            .validate(Channel::Sms, None)
            .unwrap_err();
        assert_eq!(e.code, "bad_json");
        let e = http("{{password}}", BodyType::Text)
            .validate(Channel::Sms, None)
            .unwrap_err();
        assert_eq!(e.code, "bad_template");
        let mut bad = ok.clone();
        if let ProviderConfig::Http { url, .. } = &mut bad {
            *url = "ftp://x/".into();
        }
        assert!(bad.validate(Channel::Sms, None).is_err());
        let t = ProviderConfig::Twilio {
            base_url: Some("not a url".into()),
            account_sid: "AC1".into(),
            from: "+15550100".into(),
        };
        assert!(t.validate(Channel::Sms, Some("tok")).is_err());
    }
}
