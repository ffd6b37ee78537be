//! `outpost-protocol` rows with the values most tests want. Tests override what they
//! are about with struct update syntax:
//! `SubscriberState { status: Suspended, ..subscriber(4, "suspended", "pw") }`.

use std::time::{SystemTime, UNIX_EPOCH};

use outpost_protocol::{
    Accounting, AcctStatus, NasKind, NasState, Rate, SiteSettings, StateKind, StateResponse,
    SubscriberState, SubscriberStatus,
};

/// Unix seconds now, the clock the agent enforces expiry with.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An accounting record of `username`'s session `session_id` on the NAS at `nas_ip`,
/// with no addresses and zero counters.
pub fn accounting(
    status: AcctStatus,
    username: &str,
    session_id: &str,
    nas_ip: &str,
) -> Accounting {
    Accounting {
        status,
        username: username.into(),
        session_id: session_id.into(),
        nas_ip: nas_ip.into(),
        framed_ip: None,
        framed_ipv6: None,
        calling_station_id: None,
        session_time: 0,
        input_octets: 0,
        output_octets: 0,
        terminate_cause: None,
        event_time: None,
    }
}

/// A plan's rate without bursts.
pub fn rate(download_kbps: u64, upload_kbps: u64) -> Rate {
    Rate {
        download_kbps,
        upload_kbps,
        burst_download_kbps: None,
        burst_upload_kbps: None,
    }
}

/// An active subscriber of tenant 1 on 10/2 Mbit/s, one session allowed, expiring a day
/// from now, no static address or MAC binding, not WAN-checked.
pub fn subscriber(id: i64, username: &str, password: &str) -> SubscriberState {
    SubscriberState {
        id,
        username: username.into(),
        password: password.into(),
        status: SubscriberStatus::Active,
        expires_at: Some(unix_now() + 86_400),
        static_ipv4: None,
        mac: None,
        rate: Some(rate(10_000, 2_000)),
        max_sessions: 1,
        tenant_id: 1,
        wan_check: false,
        wan_tcp_ports: None,
    }
}

/// A NAS at `ip` speaking `kind`, CoA on 3799, Message-Authenticator not required.
pub fn nas(id: i64, ip: &str, secret: &str, kind: NasKind) -> NasState {
    NasState {
        id,
        ip: ip.into(),
        secret: secret.into(),
        kind,
        coa_port: 3799,
        require_message_authenticator: false,
    }
}

/// Site settings: interim updates every `acct_interim_interval_secs`, no shaping.
pub fn settings(acct_interim_interval_secs: u32) -> SiteSettings {
    SiteSettings {
        acct_interim_interval_secs,
        shaping_enabled: false,
    }
}

/// A full state at `revision`: these subscribers and NAS, [`settings`]`(300)`, no brands.
pub fn snapshot(
    revision: u64,
    subscribers: Vec<SubscriberState>,
    nas: Vec<NasState>,
) -> StateResponse {
    StateResponse {
        kind: StateKind::Snapshot,
        revision,
        subscribers,
        removed_subscribers: Vec::new(),
        nas,
        removed_nas: Vec::new(),
        settings: Some(settings(300)),
        brands: Vec::new(),
        notices: None,
    }
}

/// A change at `revision`: these rows upserted, nothing removed, settings unchanged.
pub fn delta(
    revision: u64,
    subscribers: Vec<SubscriberState>,
    nas: Vec<NasState>,
) -> StateResponse {
    StateResponse {
        kind: StateKind::Delta,
        settings: None,
        ..snapshot(revision, subscribers, nas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_is_active_and_not_yet_expired() {
        let s = subscriber(3, "amina", "pw");
        assert_eq!((s.id, s.username.as_str()), (3, "amina"));
        assert_eq!(s.status, SubscriberStatus::Active);
        assert!(s.expires_at.unwrap() > unix_now());
    }

    #[test]
    fn a_delta_carries_no_settings_and_a_snapshot_does() {
        let n = nas(1, "127.0.0.1", "s", NasKind::Mikrotik);
        assert_eq!(
            snapshot(1, vec![], vec![n.clone()]).settings,
            Some(settings(300))
        );
        let d = delta(2, vec![], vec![n]);
        assert_eq!((d.kind, d.settings), (StateKind::Delta, None));
    }
}
