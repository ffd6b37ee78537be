//! The enforcement policy as a pure function: from the desired state, the online
//! sessions and the agent's clock to an [`Enforcement`], every address to hold in the
//! walled garden, with whose it is and why. Tested as data; no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use outpost_protocol::{Rate, SubscriberState, SubscriberStatus};

use crate::store::OnlineSession;

/// Why a subscriber is in the walled garden; shown on the suspended page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Suspended,
    Disabled,
    Expired,
}

impl Reason {
    /// The word used in events and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Suspended => "suspended",
            Reason::Disabled => "disabled",
            Reason::Expired => "expired",
        }
    }
}

/// Whether `sub` is cut off at `now`, and why. Expiry is the agent's own clock against
/// the synced `expires_at`, the same rule RADIUS applies.
pub fn standing(sub: &SubscriberState, now: i64) -> Option<Reason> {
    match sub.status {
        SubscriberStatus::Suspended => Some(Reason::Suspended),
        SubscriberStatus::Disabled => Some(Reason::Disabled),
        SubscriberStatus::Expired => Some(Reason::Expired),
        SubscriberStatus::Active if sub.expires_at.is_some_and(|at| at <= now) => {
            Some(Reason::Expired)
        }
        SubscriberStatus::Active => None,
    }
}

/// One address in the walled garden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    pub subscriber_id: i64,
    pub tenant_id: i64,
    pub reason: Reason,
}

/// What the site should enforce at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// Every blocked address and whose it is.
    pub blocked: BTreeMap<IpAddr, Cutoff>,
    /// Blocked subscribers and why (with or without a known address).
    pub reasons: HashMap<i64, Reason>,
    /// Active subscribers' plan rates, to notice a plan change.
    pub rates: HashMap<i64, Option<Rate>>,
    /// When the next active subscriber expires (unix seconds), to wake then.
    pub next_expiry: Option<i64>,
    /// Active subscribers with a plan rate and an IPv4 address, when the agent shapes.
    pub shaped: BTreeMap<i64, crate::shape::Shaped>,
}

/// Where a subscriber's addresses come from: the static IP the controller set, and
/// whatever accounting reported for its online sessions.
pub fn addresses(sub: &SubscriberState, sessions: &[OnlineSession]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Some(ip) = sub.static_ipv4.as_deref().and_then(|ip| ip.parse().ok()) {
        out.push(ip);
    }
    for s in sessions {
        out.extend(s.framed_ip);
        out.extend(s.framed_ipv6);
    }
    out.sort();
    out.dedup();
    out
}

/// The policy: from each subscriber's standing and addresses to a [`Enforcement`].
/// `sessions_of` gives a subscriber's online sessions by username.
pub fn decide<'a>(
    subscribers: impl IntoIterator<Item = &'a SubscriberState>,
    sessions_of: impl Fn(&str) -> Vec<OnlineSession>,
    now: i64,
    shaping: bool,
) -> Enforcement {
    let mut p = Enforcement::default();
    for sub in subscribers {
        match standing(sub, now) {
            Some(reason) => {
                p.reasons.insert(sub.id, reason);
                let cut = Cutoff {
                    subscriber_id: sub.id,
                    tenant_id: sub.tenant_id,
                    reason,
                };
                for ip in addresses(sub, &sessions_of(&sub.username)) {
                    // Two subscribers claiming one address (a stale session, a static IP
                    // reused): blocked either way; the lower id names the page.
                    p.blocked
                        .entry(ip)
                        .and_modify(|c| {
                            if cut.subscriber_id < c.subscriber_id {
                                *c = cut;
                            }
                        })
                        .or_insert(cut);
                }
            }
            None => {
                p.rates.insert(sub.id, sub.rate);
                if shaping && let Some(rate) = sub.rate {
                    let ip = addresses(sub, &sessions_of(&sub.username))
                        .into_iter()
                        .find_map(|ip| match ip {
                            IpAddr::V4(v4) => Some(v4),
                            IpAddr::V6(_) => None,
                        });
                    if let Some(ip) = ip {
                        p.shaped.insert(
                            sub.id,
                            crate::shape::Shaped {
                                subscriber_id: sub.id,
                                ip,
                                rate,
                            },
                        );
                    }
                }
                if let Some(at) = sub.expires_at {
                    p.next_expiry = Some(p.next_expiry.map_or(at, |n: i64| n.min(at)));
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: i64, status: SubscriberStatus, ip: Option<&str>) -> SubscriberState {
        SubscriberState {
            status,
            expires_at: None,
            static_ipv4: ip.map(Into::into),
            rate: None,
            tenant_id: 10 + id,
            ..outpost_testkit::fixtures::subscriber(id, &format!("u{id}"), "pw")
        }
    }

    fn session(user: &str, v4: Option<&str>, v6: Option<&str>) -> OnlineSession {
        OnlineSession {
            nas_ip: "192.0.2.1".into(),
            session_id: format!("s-{user}"),
            username: user.into(),
            framed_ip: v4.map(|a| a.parse().unwrap()),
            framed_ipv6: v6.map(|a| a.parse().unwrap()),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn standing_follows_status_and_the_agent_clock() {
        let mut s = sub(1, SubscriberStatus::Active, None);
        assert_eq!(standing(&s, 100), None);
        s.expires_at = Some(100);
        assert_eq!(standing(&s, 99), None);
        assert_eq!(standing(&s, 100), Some(Reason::Expired));
        for (status, reason) in [
            (SubscriberStatus::Suspended, Reason::Suspended),
            (SubscriberStatus::Disabled, Reason::Disabled),
            (SubscriberStatus::Expired, Reason::Expired),
        ] {
            s.status = status;
            s.expires_at = None;
            assert_eq!(standing(&s, 0), Some(reason));
        }
    }

    #[test]
    fn blocked_addresses_come_from_static_ips_and_sessions() {
        let subs = vec![
            sub(1, SubscriberStatus::Suspended, Some("100.64.0.2")),
            sub(2, SubscriberStatus::Active, Some("100.64.0.3")),
            sub(3, SubscriberStatus::Disabled, None),
            sub(4, SubscriberStatus::Expired, None),
        ];
        let sessions = |u: &str| match u {
            "u1" => vec![session("u1", Some("100.64.1.1"), None)],
            "u2" => vec![session("u2", Some("100.64.1.2"), None)],
            "u3" => vec![session("u3", Some("100.64.1.3"), Some("2001:db8::3"))],
            _ => vec![],
        };
        let p = decide(&subs, sessions, 0, false);
        let blocked: Vec<(IpAddr, i64)> = p
            .blocked
            .iter()
            .map(|(ip, c)| (*ip, c.subscriber_id))
            .collect();
        assert_eq!(
            blocked,
            vec![
                (ip("100.64.0.2"), 1),
                (ip("100.64.1.1"), 1),
                (ip("100.64.1.3"), 3),
                (ip("2001:db8::3"), 3),
            ]
        );
        assert_eq!(p.blocked[&ip("100.64.1.3")].reason, Reason::Disabled);
        assert_eq!(p.blocked[&ip("100.64.1.3")].tenant_id, 13);
        // Blocked without a known address is still a blocked subscriber (RADIUS refuses it).
        assert_eq!(p.reasons.get(&4), Some(&Reason::Expired));
        assert!(p.rates.contains_key(&2) && !p.rates.contains_key(&1));
    }

    #[test]
    fn shaping_takes_active_subscribers_with_a_rate_and_an_ipv4_address() {
        let rate = Rate {
            download_kbps: 8_000,
            upload_kbps: 4_000,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        };
        let mut with_static = sub(1, SubscriberStatus::Active, Some("100.64.0.2"));
        with_static.rate = Some(rate);
        let mut dynamic = sub(2, SubscriberStatus::Active, None);
        dynamic.rate = Some(rate);
        let mut suspended = sub(3, SubscriberStatus::Suspended, Some("100.64.0.4"));
        suspended.rate = Some(rate);
        let no_rate = sub(4, SubscriberStatus::Active, Some("100.64.0.5"));
        let mut v6_only = sub(5, SubscriberStatus::Active, None);
        v6_only.rate = Some(rate);
        let subs = [with_static, dynamic, suspended, no_rate, v6_only];
        let sessions = |u: &str| match u {
            "u2" => vec![session("u2", Some("100.64.1.2"), None)],
            "u5" => vec![session("u5", None, Some("2001:db8::5"))],
            _ => vec![],
        };
        let p = decide(&subs, sessions, 0, true);
        let shaped: Vec<(i64, String)> = p
            .shaped
            .values()
            .map(|s| (s.subscriber_id, s.ip.to_string()))
            .collect();
        assert_eq!(
            shaped,
            vec![(1, "100.64.0.2".to_string()), (2, "100.64.1.2".to_string())]
        );
        assert!(decide(&subs, sessions, 0, false).shaped.is_empty());
    }

    #[test]
    fn the_next_expiry_is_the_earliest_active_one() {
        let mut a = sub(1, SubscriberStatus::Active, None);
        a.expires_at = Some(500);
        let mut b = sub(2, SubscriberStatus::Active, None);
        b.expires_at = Some(300);
        let mut gone = sub(3, SubscriberStatus::Active, Some("100.64.0.9"));
        gone.expires_at = Some(100);
        let p = decide(&[a, b, gone], |_| vec![], 200, false);
        assert_eq!(p.next_expiry, Some(300));
        assert_eq!(p.blocked[&ip("100.64.0.9")].reason, Reason::Expired);
    }
}
