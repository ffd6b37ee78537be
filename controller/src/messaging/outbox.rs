//! The outbox worker: sends what the triggers queued.
//!
//! Each pass, in one write transaction, claims due messages — marks each `sending` with
//! a fresh attempt id and the attempt's start — and commits that before any request goes
//! out. Then it sends them concurrently, and writes each outcome in one more transaction,
//! only where the attempt id is still the message's (a late answer from an attempt given
//! up on changes nothing). So a crash leaves at most the messages in flight `sending`.
//!
//! **After a crash.** A message still `sending` once its attempt is older than
//! `stale_after` (longer than the request timeout: no request of the old process can
//! still be in flight) was interrupted between the send and the mark. What happens to it
//! depends on what the provider can promise ([`Recovery`]):
//! - a gateway that answers a repeated `Idempotency-Key` with the first answer
//!   (`honours_idempotency_key`): sent again with the same key, which every attempt
//!   carries — the gateway sends nothing twice. Only within `idempotency_window`: an
//!   attempt older than that (a controller down for a day) is failed as interrupted
//!   rather than risk a second copy;
//! - Twilio-style: it has no documented idempotency key, so the worker asks its message
//!   list (to the recipient, from our sender, since the day before the attempt) for the
//!   same text; found, the message is `sent` with that sid; not found, it is sent again;
//!   the list unreachable, it stays `sending` and is asked again later;
//! - SMTP: sent again with the same `Message-ID` (mail systems and clients drop a second
//!   copy of one Message-ID);
//! - WhatsApp Cloud and gateways without the key: no way to know or to deduplicate, so
//!   the message is `failed` with "interrupted, delivery unknown" in the log, never sent
//!   twice. Nothing is lost silently: the log says which.
//!
//! **Retries.** HTTP 5xx, 408, 429, timeouts and connection errors (SMTP 4xx) are
//! retried (a timeout to a Twilio-style API is checked first, as after a crash) after `backoff_base × 2^(attempt-1)` (at most `backoff_max`), up to
//! `max_attempts`; any other 4xx (SMTP 5xx) fails at once with the provider's answer.
//! A WhatsApp message its provider gives up on (refused, or out of attempts) goes out as
//! SMS when the WhatsApp provider has `fallback_to_sms` and an SMS provider is in force.
//!
//! **Rate.** A reseller's `per_minute` bounds the attempts started for its subscribers
//! in any minute; messages over it wait, the others go on.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::egress;
use super::providers::{self, Outcome, Outgoing, Recovery};
use super::{Channel, now_ms};
use crate::crypto::SecretBox;
use crate::db::Db;
use crate::db::messages::{self, Claimed, Mark, Resolved};
use crate::error::Result;

/// Woken by every enqueue, so a message goes out without waiting for the poll. The
/// enqueue runs inside a write transaction; the worker's claim is a write too, so it
/// runs after that commit and sees the message.
pub(crate) static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages sent at once.
    pub batch: usize,
    /// How long an idle worker sleeps before looking again (enqueues wake it sooner).
    pub poll: Duration,
    pub request_timeout: Duration,
    /// An attempt older than this and never marked was interrupted. Longer than
    /// `request_timeout`.
    pub stale_after: Duration,
    /// How long a provider keeps an idempotency key: an interrupted attempt older than
    /// this is not resent with it.
    pub idempotency_window: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_attempts: i64,
    /// Send to loopback, private and link-local addresses too (see [`super::egress`]);
    /// off by default.
    pub allow_private_destinations: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 16,
            poll: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            stale_after: Duration::from_secs(60),
            idempotency_window: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            max_attempts: 8,
            allow_private_destinations: false,
        }
    }
}

/// The worker. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    secrets: SecretBox,
    client: reqwest::Client,
    cfg: Arc<WorkerConfig>,
}

/// A claimed message with the providers it may use.
struct Job {
    msg: Claimed,
    provider: Option<Resolved>,
    /// The SMS provider, for a WhatsApp message that may fall back.
    sms: Option<Resolved>,
}

impl Outbox {
    pub fn new(db: Db, secrets: SecretBox, cfg: WorkerConfig) -> Outbox {
        assert!(
            cfg.stale_after > cfg.request_timeout,
            "stale_after must be longer than request_timeout"
        );
        let mut client = reqwest::Client::builder().connect_timeout(cfg.request_timeout);
        if !cfg.allow_private_destinations {
            // Names resolve to public addresses only, and a redirect (which could name a
            // private address literally) is not followed: the 3xx is the answer.
            client = client
                .dns_resolver(std::sync::Arc::new(super::egress::PublicOnly))
                .redirect(reqwest::redirect::Policy::none());
        }
        let client = client.build().expect("the HTTP client builds");
        Outbox {
            db,
            secrets,
            client,
            cfg: Arc::new(cfg),
        }
    }

    /// Sends for as long as the server runs.
    pub async fn run(self) {
        loop {
            let sleep = match self.pass().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => self.idle_for().await,
                Err(e) => {
                    tracing::error!(error = %e, "outbox pass failed; retrying");
                    self.cfg.poll
                }
            };
            tokio::select! {
                _ = WAKE.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// How long to sleep: until the next due message, at most `poll`.
    async fn idle_for(&self) -> Duration {
        match self.db.read(messages::next_due).await {
            Ok(Some(at)) => Duration::from_millis(
                (at - now_ms()).clamp(0, self.cfg.poll.as_millis() as i64) as u64,
            )
            .max(Duration::from_millis(5)),
            _ => self.cfg.poll,
        }
    }

    /// One pass: claim (committed), send, mark. How many attempts it made.
    pub async fn pass(&self) -> Result<usize> {
        let cfg = self.cfg.clone();
        let secrets = self.secrets.clone();
        let jobs = self
            .db
            .write(move |tx| {
                let now = now_ms();
                let mut claimed = messages::claim_interrupted(
                    tx,
                    now,
                    cfg.stale_after.as_millis() as i64,
                    cfg.batch,
                )?;
                let room = cfg.batch.saturating_sub(claimed.len());
                if room > 0 {
                    claimed.extend(messages::claim_due(tx, now, room)?);
                }
                let mut jobs = Vec::with_capacity(claimed.len());
                for msg in claimed {
                    let provider =
                        messages::resolve_provider(tx, &msg.tenant_path, msg.channel, &secrets)?;
                    let sms = if msg.channel == Channel::Whatsapp && msg.fallback_body.is_some() {
                        messages::resolve_provider(tx, &msg.tenant_path, Channel::Sms, &secrets)?
                    } else {
                        None
                    };
                    jobs.push(Job { msg, provider, sms });
                }
                Ok(jobs)
            })
            .await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let n = jobs.len();
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let me = self.clone();
            set.spawn(async move {
                let mark = me.attempt(&job).await;
                (job.msg, mark)
            });
        }
        let mut marks = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            marks.push(r?);
        }
        self.db
            .write(move |tx| {
                for (msg, mark) in &marks {
                    if let Some(m) = mark {
                        messages::mark(tx, msg, m)?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }

    /// One attempt at one message: what to write (`None`: leave it `sending`, to be
    /// looked at again after `stale_after`).
    async fn attempt(&self, job: &Job) -> Option<Mark> {
        let msg = &job.msg;
        let Some(p) = &job.provider else {
            return Some(Mark::Failed {
                provider_id: None,
                answer: format!("no {} provider is configured", msg.channel.as_str()),
            });
        };
        let timeout = self.cfg.request_timeout;
        if msg.recovering {
            let age = now_ms() - msg.sending_since;
            let beyond_window = age > self.cfg.idempotency_window.as_millis() as i64;
            match p.config.recovery() {
                Recovery::ResendSameKey | Recovery::ResendSameMessageId if beyond_window => {
                    return Some(Mark::Failed {
                        provider_id: Some(p.id),
                        answer: "interrupted mid-send longer ago than the provider's idempotency window; not resent, to avoid a duplicate (delivery unknown)".into(),
                    });
                }
                Recovery::ResendSameKey | Recovery::ResendSameMessageId => {
                    tracing::info!(
                        message = msg.id,
                        "resending an interrupted message with its key"
                    );
                }
                Recovery::Check => {
                    if let Err(why) =
                        egress::check(&p.config, self.cfg.allow_private_destinations).await
                    {
                        return Some(Mark::Failed {
                            provider_id: Some(p.id),
                            answer: why,
                        });
                    }
                    match providers::twilio_find(
                        &self.client,
                        &p.config,
                        p.secret.as_deref(),
                        &msg.recipient,
                        &msg.body,
                        msg.sending_since,
                        timeout,
                    )
                    .await
                    {
                        Ok(Some(sid)) => {
                            return Some(Mark::Sent {
                                provider_id: p.id,
                                provider_message_id: Some(sid),
                                answer: "found in the provider's message list after an interrupted attempt".into(),
                            });
                        }
                        Ok(None) => {
                            tracing::info!(
                                message = msg.id,
                                "interrupted message not at the provider; sending"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(message = msg.id, error = %e, "cannot check an interrupted message; asking again later");
                            return None;
                        }
                    }
                }
                Recovery::GiveUp => {
                    return Some(Mark::Failed {
                        provider_id: Some(p.id),
                        answer: "interrupted mid-send; this provider neither deduplicates nor can be asked, so it was not resent, to avoid a duplicate (delivery unknown)".into(),
                    });
                }
            }
        }
        let allow_private = self.cfg.allow_private_destinations;
        let out = match egress::check(&p.config, allow_private).await {
            // Refused before any request: nothing went out, so nothing to retry.
            Err(why) => Outcome::Permanent(why),
            Ok(()) => {
                providers::send(
                    &self.client,
                    &p.config,
                    p.secret.as_deref(),
                    &Outgoing {
                        key: &msg.idempotency_key,
                        to: &msg.recipient,
                        subject: msg.subject.as_deref(),
                        body: &msg.body,
                        whatsapp: msg.whatsapp.as_ref(),
                    },
                    timeout,
                    allow_private,
                )
                .await
            }
        };
        tracing::debug!(message = msg.id, outcome = ?out, "outbox attempt");
        let may_fall_back =
            p.config.falls_back_to_sms() && job.sms.is_some() && msg.fallback_body.is_some();
        let out = match out {
            // The provider may have taken it: where it can be asked, leave the message
            // `sending`, so it is checked (after `stale_after`) as a crash's would be,
            // rather than resent blind.
            Outcome::Unknown(answer) if p.config.recovery() == Recovery::Check => {
                tracing::info!(
                    message = msg.id,
                    answer,
                    "no answer; checking with the provider later"
                );
                return None;
            }
            Outcome::Unknown(answer) => Outcome::Retry(answer),
            other => other,
        };
        Some(match out {
            Outcome::Unknown(_) => unreachable!("mapped above"),
            Outcome::Sent {
                provider_message_id,
                answer,
            } => Mark::Sent {
                provider_id: p.id,
                provider_message_id,
                answer,
            },
            Outcome::Permanent(answer) if may_fall_back => Mark::FallBackToSms { answer },
            Outcome::Permanent(answer) => Mark::Failed {
                provider_id: Some(p.id),
                answer,
            },
            Outcome::Retry(answer) if msg.attempts >= self.cfg.max_attempts => {
                let answer = format!("gave up after {} attempts: {answer}", msg.attempts);
                if may_fall_back {
                    Mark::FallBackToSms { answer }
                } else {
                    Mark::Failed {
                        provider_id: Some(p.id),
                        answer,
                    }
                }
            }
            Outcome::Retry(answer) => Mark::Retry {
                provider_id: Some(p.id),
                answer,
                at: now_ms() + self.backoff(msg.attempts).as_millis() as i64,
            },
        })
    }

    /// The wait after `attempts` attempts: base × 2^(attempts-1), at most `backoff_max`.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let exp = attempts.clamp(1, 30) as u32 - 1;
        self.cfg
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.cfg.backoff_max)
    }
}
