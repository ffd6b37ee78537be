//! Which CPEs to probe: each active subscriber the controller marks for WAN checks (its
//! resellers have them, and it is not "never probe"), at its static IP or else the
//! address its online session has now. Anything outside the site's subscriber networks is refused,
//! whatever the store says: the agent must never become a scanner.

use std::net::IpAddr;

use ipnet::IpNet;
use outpost_protocol::SubscriberStatus;

use crate::store::Store;

/// One CPE to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub subscriber_id: i64,
    pub tenant_id: i64,
    pub address: IpAddr,
    /// The TCP ports its plan or the subscriber names; `None`: the site's list.
    pub tcp_ports: Option<Vec<u16>>,
}

/// A CPE address refused because no subscriber network holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub subscriber_id: i64,
    pub address: IpAddr,
}

/// Whether `addr` may be probed.
pub fn allowed(networks: &[IpNet], addr: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(&addr))
}

/// The targets of the store now, ordered by subscriber id, and those refused.
pub fn collect(store: &Store, networks: &[IpNet]) -> (Vec<Target>, Vec<Refused>) {
    let mut subs = store.subscribers();
    subs.sort_by_key(|s| s.id);
    let (mut targets, mut refused) = (Vec::new(), Vec::new());
    for s in subs {
        if s.status != SubscriberStatus::Active || !s.wan_check {
            continue;
        }
        let address = s
            .static_ipv4
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .or_else(|| {
                let sessions = store.sessions_of(&s.username);
                sessions
                    .iter()
                    .find_map(|x| x.framed_ip)
                    .or_else(|| sessions.iter().find_map(|x| x.framed_ipv6))
            });
        let Some(address) = address else { continue };
        if allowed(networks, address) {
            targets.push(Target {
                subscriber_id: s.id,
                tenant_id: s.tenant_id,
                address,
                tcp_ports: s.wan_tcp_ports.clone(),
            });
        } else {
            refused.push(Refused {
                subscriber_id: s.id,
                address,
            });
        }
    }
    (targets, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol as proto;
    use outpost_testkit::fixtures::accounting;

    #[test]
    fn targets_come_from_the_store_and_outside_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db"), 100).unwrap();
        let sub = |id: i64, ip: Option<&str>, status| proto::SubscriberState {
            static_ipv4: ip.map(Into::into),
            status,
            tenant_id: 2,
            wan_check: id != 6,
            ..outpost_testkit::fixtures::subscriber(id, &format!("u{id}"), "pw")
        };
        store
            .apply(&proto::StateResponse {
                kind: proto::StateKind::Snapshot,
                revision: 1,
                subscribers: vec![
                    sub(1, Some("100.64.0.1"), SubscriberStatus::Active),
                    sub(2, Some("8.8.8.8"), SubscriberStatus::Active),
                    sub(3, None, SubscriberStatus::Active),
                    sub(4, Some("100.64.0.4"), SubscriberStatus::Suspended),
                    sub(5, None, SubscriberStatus::Active),
                    // Its reseller has no WAN checks, or it is marked "never probe".
                    sub(6, Some("100.64.0.6"), SubscriberStatus::Active),
                ],
                removed_subscribers: vec![],
                nas: vec![],
                removed_nas: vec![],
                settings: None,
                brands: vec![],
                notices: None,
            })
            .unwrap();
        // Subscriber 3 is online with an address from the pool.
        use crate::radius::Backend;
        store
            .record(proto::EventBody::Accounting(proto::Accounting {
                framed_ip: Some("100.64.0.3".into()),
                ..accounting(proto::AcctStatus::Start, "u3", "s3", "192.0.2.1")
            }))
            .unwrap();
        let nets: Vec<IpNet> = vec!["100.64.0.0/10".parse().unwrap()];
        let (targets, refused) = collect(&store, &nets);
        let ids: Vec<(i64, String)> = targets
            .iter()
            .map(|t| (t.subscriber_id, t.address.to_string()))
            .collect();
        assert_eq!(
            ids,
            vec![(1, "100.64.0.1".into()), (3, "100.64.0.3".into())],
            "static, then session address; suspended, unchecked and addressless skipped"
        );
        assert_eq!(
            refused,
            vec![Refused {
                subscriber_id: 2,
                address: "8.8.8.8".parse().unwrap()
            }]
        );
    }
}
