//! Arbitrary bytes into the RADIUS server's datagram handler, the same
//! `Handler::handle` the server's sockets call.
//!
//! The first input byte steers, the rest is the datagram:
//! - bits 0-1: which socket it arrived on (auth, acct, both);
//! - bit 2: re-sign it with the NAS's secret first (Message-Authenticator and the
//!   accounting Request Authenticator), so mutations get past authentication and
//!   reach the decision and accounting code;
//! - bit 3: send it from an address that is not a NAS;
//! - bit 4: the NAS requires Message-Authenticator;
//! - bit 5: handle it twice (a retransmission, answered from the reply cache).

#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use outpost_agent::radius::{Backend, BackendError, Config, Handler, Listener, authenticator};
use outpost_protocol::{
    EventBody, NasKind, NasState, Rate, SiteSettings, SubscriberState, SubscriberStatus,
};

const SECRET: &str = "fuzz-secret";

/// One NAS and one subscriber, and a journal that forgets: the fuzzer is after the
/// handler's parsing and decisions, not the store's disk writes (which would slow
/// every run by an fsync).
struct FuzzBackend {
    nas: Arc<NasState>,
    subscriber: Arc<SubscriberState>,
}

impl Backend for FuzzBackend {
    fn nas(&self, ip: std::net::IpAddr) -> Option<Arc<NasState>> {
        (self.nas.ip.parse::<std::net::IpAddr>() == Ok(ip)).then(|| self.nas.clone())
    }
    fn subscriber(&self, username: &str) -> Option<Arc<SubscriberState>> {
        (self.subscriber.username == username).then(|| self.subscriber.clone())
    }
    fn settings(&self) -> SiteSettings {
        SiteSettings {
            acct_interim_interval_secs: 300,
            shaping_enabled: false,
        }
    }
    fn online_sessions(&self, _username: &str) -> u32 {
        0
    }
    fn record(&self, _event: EventBody) -> Result<(), BackendError> {
        Ok(())
    }
    fn close_nas_sessions(&self, _nas_ip: &str, _reason: &str) -> Result<u32, BackendError> {
        Ok(0)
    }
}

fn backend(require_message_authenticator: bool) -> FuzzBackend {
    FuzzBackend {
        nas: Arc::new(NasState {
            id: 1,
            ip: "192.0.2.1".into(),
            secret: SECRET.into(),
            kind: NasKind::Mikrotik,
            coa_port: 3799,
            require_message_authenticator,
        }),
        subscriber: Arc::new(SubscriberState {
            id: 1,
            username: "amina".into(),
            password: "pa55".into(),
            status: SubscriberStatus::Active,
            expires_at: None,
            static_ipv4: Some("100.64.0.9".into()),
            mac: Some("AA:BB:CC:00:11:22".into()),
            rate: Some(Rate {
                download_kbps: 10_000,
                upload_kbps: 2_000,
                burst_download_kbps: None,
                burst_upload_kbps: None,
            }),
            max_sessions: 1,
            tenant_id: 1,
            wan_check: false,
            wan_tcp_ports: None,
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, datagram)) = data.split_first() else {
        return;
    };
    let listener = [
        Listener::Auth,
        Listener::Acct,
        Listener::Both,
        Listener::Both,
    ][usize::from(steer & 3)];
    let mut datagram = datagram.to_vec();
    if steer & 4 != 0 {
        authenticator::sign_request(&mut datagram, SECRET.as_bytes());
    }
    let src: SocketAddr = if steer & 8 != 0 {
        "198.51.100.7:1645".parse().unwrap()
    } else {
        "192.0.2.1:40000".parse().unwrap()
    };
    // A fresh handler per input keeps runs reproducible (no reply cache carried over).
    let handler = Handler::new(Arc::new(backend(steer & 16 != 0)), &Config::default());
    let first = handler.handle(listener, src, &datagram);
    if steer & 32 != 0 {
        let second = handler.handle(listener, src, &datagram);
        assert_eq!(first, second, "a retransmission must get the same answer");
    }
});
