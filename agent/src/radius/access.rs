//! Access-Request: who asks, with which credentials, whether they get in, and what
//! the Access-Accept tells the NAS.
//!
//! [`decide`] is pure (state and clock come in as arguments) so every rule is tested
//! as data; the handler feeds it from the backend.

use std::net::Ipv4Addr;

use outpost_protocol::{
    NasKind, Rate, RejectReason, SiteSettings, SubscriberState, SubscriberStatus,
};
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};

use super::attrs::{self, VENDOR_MICROSOFT};
use super::{Error, chap, mschapv2, pap};

/// The credentials an Access-Request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User-Password, still hidden with the shared secret.
    Pap {
        /// The attribute value.
        hidden: Vec<u8>,
    },
    /// CHAP-Password and the challenge it answers.
    Chap {
        /// The CHAP-Password value: CHAP Identifier, then the response.
        chap_password: Vec<u8>,
        /// CHAP-Challenge, or the Request Authenticator when there is none.
        challenge: Vec<u8>,
    },
    /// MS-CHAP-Challenge and MS-CHAP2-Response.
    MsChapV2 {
        /// The Authenticator Challenge the NAS sent the peer.
        challenge: Vec<u8>,
        /// The peer's answer.
        response: mschapv2::Response,
    },
    /// No credentials, several kinds at once, or a kind we do not do (MS-CHAPv1,
    /// EAP); says which, for the log.
    Unsupported(&'static str),
}

/// The parts of an Access-Request that decide the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// User-Name; `None` when missing or not UTF-8 (no subscriber can match it).
    pub user_name: Option<String>,
    /// Calling-Station-Id: the subscriber's MAC address on PPPoE and IPoE.
    pub calling_station_id: Option<String>,
    /// How the subscriber proves who it is.
    pub credentials: Credentials,
}

impl AccessRequest {
    /// Reads the request's user, Calling-Station-Id and credentials.
    pub fn parse(packet: &Packet, request_authenticator: &[u8; 16]) -> Self {
        let user_name = rfc2865::lookup_user_name(packet).and_then(Result::ok);
        let calling_station_id = rfc2865::lookup_calling_station_id(packet).and_then(Result::ok);
        Self {
            user_name,
            calling_station_id,
            credentials: credentials(packet, request_authenticator),
        }
    }
}

fn credentials(packet: &Packet, request_authenticator: &[u8; 16]) -> Credentials {
    let ms = attrs::vendor_attributes(packet, VENDOR_MICROSOFT);
    let ms_attr = |typ| ms.iter().find(|(t, _)| *t == typ).map(|(_, v)| v.clone());
    if packet.lookup(rfc2869::EAP_MESSAGE_TYPE).is_some() {
        return Credentials::Unsupported("EAP");
    }
    if ms_attr(attrs::MS_CHAP_RESPONSE).is_some() {
        return Credentials::Unsupported("MS-CHAPv1");
    }
    let pap = packet
        .lookup(rfc2865::USER_PASSWORD_TYPE)
        .map(|a| a.encode_bytes());
    let chap = rfc2865::lookup_chap_password(packet);
    let mschap2 = ms_attr(attrs::MS_CHAP2_RESPONSE);
    match (pap, chap, mschap2) {
        (Some(hidden), None, None) => Credentials::Pap { hidden },
        (None, Some(chap_password), None) => {
            let challenge = rfc2865::lookup_chap_challenge(packet)
                .unwrap_or_else(|| request_authenticator.to_vec());
            Credentials::Chap {
                chap_password,
                challenge,
            }
        }
        (None, None, Some(response)) => {
            let Some(challenge) = ms_attr(attrs::MS_CHAP_CHALLENGE) else {
                return Credentials::Unsupported("MS-CHAP2-Response without MS-CHAP-Challenge");
            };
            match mschapv2::Response::parse(&response) {
                Ok(response) => Credentials::MsChapV2 {
                    challenge,
                    response,
                },
                Err(_) => Credentials::Unsupported("MS-CHAP2-Response is not 50 octets"),
            }
        }
        (None, None, None) => Credentials::Unsupported("no credentials"),
        _ => Credentials::Unsupported("more than one kind of credentials"),
    }
}

/// An Access-Request let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The MS-CHAP2-Success value, for MS-CHAPv2.
    pub mschap2_success: Option<Vec<u8>>,
    /// The MPPE keys of an MS-CHAPv2 login, which the NAS needs to encrypt a PPTP or
    /// L2TP session (RFC 3079); sent hidden in MS-MPPE-Send-Key and -Recv-Key.
    pub mppe: Option<mschapv2::MppeKeys>,
}

/// An Access-Request turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why; journaled, never sent to the NAS.
    pub reason: RejectReason,
    /// The MS-CHAP-Error value, for MS-CHAPv2 (the same for every reason).
    pub mschap_error: Option<Vec<u8>>,
}

/// Whether `request` gets in, given the subscriber its User-Name names (if any), the
/// NAS's `secret`, the request's authenticator and the agent's clock `now` (unix
/// seconds). `online_sessions` is asked last, only for an otherwise good request.
///
/// Credentials are checked before the account's standing, so a journaled "suspended"
/// or "expired" means the subscriber itself tried, not someone guessing passwords.
pub fn decide(
    request: &AccessRequest,
    subscriber: Option<&SubscriberState>,
    online_sessions: impl FnOnce(&str) -> u32,
    secret: &[u8],
    request_authenticator: &[u8; 16],
    now: i64,
) -> Result<Grant, Refusal> {
    let mschap_error = match &request.credentials {
        Credentials::MsChapV2 {
            challenge,
            response,
        } => Some(mschapv2::error_value(response.ident, challenge)),
        _ => None,
    };
    let refuse = |reason| Refusal {
        reason,
        mschap_error: mschap_error.clone(),
    };
    let (Some(user_name), Some(subscriber)) = (request.user_name.as_deref(), subscriber) else {
        return Err(refuse(RejectReason::UnknownUser));
    };
    let password = subscriber.password.as_str();
    let mut mschap2_success = None;
    let mut mppe = None;
    let verified: Result<bool, Error> = match &request.credentials {
        Credentials::Pap { hidden } => {
            pap::decode_user_password(hidden, secret, request_authenticator)
                .map(|clear| super::constant_time_eq(&clear, password.as_bytes()))
        }
        Credentials::Chap {
            chap_password,
            challenge,
        } => chap::verify(chap_password, challenge, password.as_bytes()),
        Credentials::MsChapV2 {
            challenge,
            response,
        } => mschapv2::verify(challenge, response, user_name, password).map(|success| {
            mschap2_success = success;
            if mschap2_success.is_some() {
                mppe = Some(mschapv2::mppe_keys(password, &response.nt_response));
            }
            mschap2_success.is_some()
        }),
        Credentials::Unsupported(_) => return Err(refuse(RejectReason::UnsupportedAuth)),
    };
    match verified {
        Ok(true) => {}
        Ok(false) => return Err(refuse(RejectReason::WrongPassword)),
        // Credentials we cannot even parse are not a wrong password.
        Err(_) => return Err(refuse(RejectReason::UnsupportedAuth)),
    }
    match subscriber.status {
        SubscriberStatus::Active => {}
        SubscriberStatus::Disabled => return Err(refuse(RejectReason::Disabled)),
        SubscriberStatus::Suspended => return Err(refuse(RejectReason::Suspended)),
        SubscriberStatus::Expired => return Err(refuse(RejectReason::Expired)),
    }
    // The agent's own clock: expiry cuts people off on time even while the controller
    // has not yet said "expired".
    if subscriber.expires_at.is_some_and(|at| at <= now) {
        return Err(refuse(RejectReason::Expired));
    }
    if let Some(bound) = subscriber.mac.as_deref()
        && request.calling_station_id.as_deref().map(normalize_mac) != Some(normalize_mac(bound))
    {
        return Err(refuse(RejectReason::MacMismatch));
    }
    if online_sessions(user_name) >= subscriber.max_sessions {
        return Err(refuse(RejectReason::SessionLimit));
    }
    Ok(Grant {
        mschap2_success,
        mppe,
    })
}

/// A MAC address in one spelling: NASes send `AA-BB-CC-DD-EE-FF`, `aa:bb:…`,
/// `aabb.ccdd.eeff` or bare hex for the same device.
pub fn normalize_mac(mac: &str) -> String {
    mac.chars()
        .filter(|c| !matches!(c, ':' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `Mikrotik-Rate-Limit`: `rx/tx` from the router's side, so upload first
/// (`2000k/10000k` is 2 Mbit/s up, 10 Mbit/s down).
pub fn mikrotik_rate_limit(rate: &Rate) -> String {
    format!("{}k/{}k", rate.upload_kbps, rate.download_kbps)
}

/// accel-ppp's shaper reads `Filter-Id` as `down/up` in kbit/s.
pub fn accel_ppp_filter_id(rate: &Rate) -> String {
    format!("{}/{}", rate.download_kbps, rate.upload_kbps)
}

/// The Class the NAS echoes in accounting, naming the subscriber by id (stable across
/// renames).
pub fn class(subscriber: &SubscriberState) -> String {
    format!("outpost:subscriber:{}", subscriber.id)
}

/// Adds what an Access-Accept tells the NAS about `subscriber`: its static address,
/// how long until it expires, how often to send interim accounting, its speed in the
/// NAS's dialect (unless the agent shapes it itself) and a Class naming it.
pub fn add_accept_attributes(
    reply: &mut Packet,
    subscriber: &SubscriberState,
    nas_kind: NasKind,
    settings: &SiteSettings,
    now: i64,
) {
    if let Some(ip) = subscriber.static_ipv4.as_deref() {
        match ip.parse::<Ipv4Addr>() {
            Ok(ip) => rfc2865::add_framed_ip_address(reply, &ip),
            // The controller validates addresses; if one slips through, let the
            // subscriber in with a pool address rather than lock them out.
            Err(_) => tracing::warn!(static_ipv4 = ip, "static IPv4 is not an address; not sent"),
        }
    }
    if let Some(expires_at) = subscriber.expires_at {
        let left = u32::try_from(expires_at.saturating_sub(now).max(1)).unwrap_or(u32::MAX);
        rfc2865::add_session_timeout(reply, left);
    }
    if settings.acct_interim_interval_secs > 0 {
        rfc2869::add_acct_interim_interval(reply, settings.acct_interim_interval_secs);
    }
    if let (Some(rate), false) = (subscriber.rate.as_ref(), settings.shaping_enabled) {
        match nas_kind {
            NasKind::Mikrotik => reply.add(attrs::vendor_specific(
                attrs::VENDOR_MIKROTIK,
                attrs::MIKROTIK_RATE_LIMIT,
                mikrotik_rate_limit(rate).as_bytes(),
            )),
            NasKind::AccelPpp => rfc2865::add_filter_id(reply, &accel_ppp_filter_id(rate)),
            // No vendor dialect to speak: a generic NAS gets no rate attribute.
            NasKind::Generic => {}
        }
    }
    rfc2865::add_class(reply, class(subscriber).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::code::Code;

    const SECRET: &[u8] = b"s3cret";
    const RA: [u8; 16] = [0x11; 16];
    const NOW: i64 = 1_800_000_000;

    fn subscriber() -> SubscriberState {
        SubscriberState {
            expires_at: Some(NOW + 3600),
            static_ipv4: Some("100.64.0.9".into()),
            ..outpost_testkit::fixtures::subscriber(42, "amina", "pa55")
        }
    }

    fn pap(user: &str, password: &str) -> AccessRequest {
        let hidden =
            radius::core::avp::AVP::from_user_password(2, password.as_bytes(), SECRET, &RA)
                .unwrap()
                .encode_bytes();
        AccessRequest {
            user_name: Some(user.into()),
            calling_station_id: None,
            credentials: Credentials::Pap { hidden },
        }
    }

    fn reason(request: &AccessRequest, sub: &SubscriberState, online: u32) -> Option<RejectReason> {
        decide(request, Some(sub), |_| online, SECRET, &RA, NOW)
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn pap_with_the_right_password_gets_in() {
        assert_eq!(reason(&pap("amina", "pa55"), &subscriber(), 0), None);
        assert_eq!(
            reason(&pap("amina", "pa56"), &subscriber(), 0),
            Some(RejectReason::WrongPassword)
        );
        assert_eq!(
            reason(&pap("amina", "pa5"), &subscriber(), 0),
            Some(RejectReason::WrongPassword)
        );
    }

    #[test]
    fn unknown_users_are_refused_before_anything_else() {
        let r = decide(&pap("nobody", "x"), None, |_| 0, SECRET, &RA, NOW).unwrap_err();
        assert_eq!(
            r,
            Refusal {
                reason: RejectReason::UnknownUser,
                mschap_error: None
            }
        );
        let nameless = AccessRequest {
            user_name: None,
            ..pap("amina", "pa55")
        };
        assert_eq!(
            reason(&nameless, &subscriber(), 0),
            Some(RejectReason::UnknownUser)
        );
    }

    #[test]
    fn standing_is_checked_after_the_password() {
        for (status, expected) in [
            (SubscriberStatus::Suspended, RejectReason::Suspended),
            (SubscriberStatus::Disabled, RejectReason::Disabled),
            (SubscriberStatus::Expired, RejectReason::Expired),
        ] {
            let sub = SubscriberState {
                status,
                ..subscriber()
            };
            assert_eq!(reason(&pap("amina", "pa55"), &sub, 0), Some(expected));
            assert_eq!(
                reason(&pap("amina", "bad"), &sub, 0),
                Some(RejectReason::WrongPassword)
            );
        }
    }

    #[test]
    fn expiry_follows_the_agent_clock_to_the_second() {
        let at = |expires_at| SubscriberState {
            expires_at: Some(expires_at),
            ..subscriber()
        };
        assert_eq!(
            reason(&pap("amina", "pa55"), &at(NOW), 0),
            Some(RejectReason::Expired)
        );
        assert_eq!(
            reason(&pap("amina", "pa55"), &at(NOW - 1), 0),
            Some(RejectReason::Expired)
        );
        assert_eq!(reason(&pap("amina", "pa55"), &at(NOW + 1), 0), None);
        let never = SubscriberState {
            expires_at: None,
            ..subscriber()
        };
        assert_eq!(reason(&pap("amina", "pa55"), &never, 0), None);
    }

    #[test]
    fn mac_binding_compares_any_spelling() {
        let sub = SubscriberState {
            mac: Some("AA:BB:CC:00:11:22".into()),
            ..subscriber()
        };
        let from = |mac: Option<&str>| AccessRequest {
            calling_station_id: mac.map(Into::into),
            ..pap("amina", "pa55")
        };
        assert_eq!(reason(&from(Some("aa-bb-cc-00-11-22")), &sub, 0), None);
        assert_eq!(reason(&from(Some("aabb.cc00.1122")), &sub, 0), None);
        assert_eq!(
            reason(&from(Some("AA:BB:CC:00:11:23")), &sub, 0),
            Some(RejectReason::MacMismatch)
        );
        assert_eq!(
            reason(&from(None), &sub, 0),
            Some(RejectReason::MacMismatch)
        );
    }

    #[test]
    fn session_limit_counts_online_sessions() {
        let sub = SubscriberState {
            max_sessions: 2,
            ..subscriber()
        };
        assert_eq!(reason(&pap("amina", "pa55"), &sub, 1), None);
        assert_eq!(
            reason(&pap("amina", "pa55"), &sub, 2),
            Some(RejectReason::SessionLimit)
        );
        // Not even asked when the password is wrong.
        let r = decide(
            &pap("amina", "no"),
            Some(&sub),
            |_| panic!("asked"),
            SECRET,
            &RA,
            NOW,
        );
        assert_eq!(r.unwrap_err().reason, RejectReason::WrongPassword);
    }

    #[test]
    fn chap_uses_the_request_authenticator_without_chap_challenge() {
        let mut packet = Packet::new_with_identifier(Code::AccessRequest, SECRET, 1);
        rfc2865::add_user_name(&mut packet, "amina");
        let mut value = vec![7];
        value.extend(chap::response(7, b"pa55", packet.get_authenticator()));
        rfc2865::add_chap_password(&mut packet, &value);
        let ra: [u8; 16] = packet.get_authenticator().as_slice().try_into().unwrap();
        let request = AccessRequest::parse(&packet, &ra);
        assert!(matches!(request.credentials, Credentials::Chap { .. }));
        assert_eq!(
            decide(&request, Some(&subscriber()), |_| 0, SECRET, &ra, NOW),
            Ok(Grant {
                mschap2_success: None,
                mppe: None
            })
        );

        rfc2865::add_chap_challenge(&mut packet, b"another challenge");
        let request = AccessRequest::parse(&packet, &ra);
        assert_eq!(
            decide(&request, Some(&subscriber()), |_| 0, SECRET, &ra, NOW)
                .unwrap_err()
                .reason,
            RejectReason::WrongPassword
        );
    }

    #[test]
    fn mschapv2_grants_carry_the_success_value_and_refusals_an_error() {
        let sub = SubscriberState {
            username: "User".into(),
            password: "clientPass".into(),
            ..subscriber()
        };
        let auth: [u8; 16] = hex::decode("5B5D7C7D7B3F2F3E3C2C602132262628")
            .unwrap()
            .try_into()
            .unwrap();
        let peer: [u8; 16] = hex::decode("21402324255E262A28295F2B3A337C7E")
            .unwrap()
            .try_into()
            .unwrap();
        let response = mschapv2::Response {
            ident: 5,
            flags: 0,
            peer_challenge: peer,
            nt_response: mschapv2::generate_nt_response(&auth, &peer, "User", "clientPass"),
        };
        let mut packet = Packet::new(Code::AccessRequest, SECRET);
        rfc2865::add_user_name(&mut packet, "User");
        packet.add(attrs::vendor_specific(
            VENDOR_MICROSOFT,
            attrs::MS_CHAP_CHALLENGE,
            &auth,
        ));
        packet.add(attrs::vendor_specific(
            VENDOR_MICROSOFT,
            attrs::MS_CHAP2_RESPONSE,
            &response.to_bytes(),
        ));
        let request = AccessRequest::parse(&packet, &RA);
        let grant = decide(&request, Some(&sub), |_| 0, SECRET, &RA, NOW).unwrap();
        assert_eq!(
            grant.mschap2_success.unwrap(),
            b"\x05S=407A5589115FD0D6209F510FE9C04566932CDA56"
        );

        let suspended = SubscriberState {
            status: SubscriberStatus::Suspended,
            ..sub
        };
        let refusal = decide(&request, Some(&suspended), |_| 0, SECRET, &RA, NOW).unwrap_err();
        assert_eq!(refusal.reason, RejectReason::Suspended);
        assert!(refusal.mschap_error.unwrap().starts_with(b"\x05E=691 R=0"));
    }

    #[test]
    fn unsupported_or_mixed_credentials_are_refused_as_such() {
        let parse = |add: &dyn Fn(&mut Packet)| {
            let mut p = Packet::new(Code::AccessRequest, SECRET);
            rfc2865::add_user_name(&mut p, "amina");
            add(&mut p);
            AccessRequest::parse(&p, &RA).credentials
        };
        assert_eq!(parse(&|_| {}), Credentials::Unsupported("no credentials"));
        assert_eq!(
            parse(&|p| {
                rfc2865::add_user_password(p, b"x").unwrap();
                rfc2865::add_chap_password(p, &[0; 17]);
            }),
            Credentials::Unsupported("more than one kind of credentials")
        );
        assert_eq!(
            parse(&|p| p.add(attrs::vendor_specific(
                VENDOR_MICROSOFT,
                attrs::MS_CHAP_RESPONSE,
                &[0; 50]
            ))),
            Credentials::Unsupported("MS-CHAPv1")
        );
        assert_eq!(
            parse(&|p| rfc2869::add_eap_message(p, &[2, 0, 0, 5, 1])),
            Credentials::Unsupported("EAP")
        );
        assert_eq!(
            parse(&|p| p.add(attrs::vendor_specific(
                VENDOR_MICROSOFT,
                attrs::MS_CHAP2_RESPONSE,
                &[0; 50]
            ))),
            Credentials::Unsupported("MS-CHAP2-Response without MS-CHAP-Challenge")
        );
        let request = AccessRequest {
            credentials: Credentials::Unsupported("EAP"),
            ..pap("amina", "pa55")
        };
        assert_eq!(
            reason(&request, &subscriber(), 0),
            Some(RejectReason::UnsupportedAuth)
        );
        // A malformed PAP value is not a wrong password either.
        let request = AccessRequest {
            credentials: Credentials::Pap {
                hidden: vec![0; 15],
            },
            ..pap("amina", "pa55")
        };
        assert_eq!(
            reason(&request, &subscriber(), 0),
            Some(RejectReason::UnsupportedAuth)
        );
    }

    #[track_caller]
    fn assert_no_mikrotik_attributes(reply: &Packet) {
        assert_eq!(
            attrs::vendor_attributes(reply, attrs::VENDOR_MIKROTIK),
            vec![]
        );
    }

    fn accept(kind: NasKind, settings: SiteSettings, sub: &SubscriberState) -> Packet {
        let mut reply = Packet::new(Code::AccessAccept, SECRET);
        add_accept_attributes(&mut reply, sub, kind, &settings, NOW);
        Packet::decode(&reply.encode().unwrap(), SECRET).unwrap()
    }

    fn settings() -> SiteSettings {
        SiteSettings {
            acct_interim_interval_secs: 300,
            shaping_enabled: false,
        }
    }

    #[test]
    fn mikrotik_accept_carries_rate_limit_upload_first() {
        let reply = accept(NasKind::Mikrotik, settings(), &subscriber());
        let rate =
            attrs::vendor_attribute(&reply, attrs::VENDOR_MIKROTIK, attrs::MIKROTIK_RATE_LIMIT)
                .unwrap();
        assert_eq!(rate, b"2000k/10000k");
        assert_eq!(rfc2865::lookup_filter_id(&reply), None);
        assert_eq!(
            rfc2865::lookup_framed_ip_address(&reply).unwrap().unwrap(),
            Ipv4Addr::new(100, 64, 0, 9)
        );
        assert_eq!(
            rfc2865::lookup_session_timeout(&reply).unwrap().unwrap(),
            3600
        );
        assert_eq!(
            rfc2869::lookup_acct_interim_interval(&reply)
                .unwrap()
                .unwrap(),
            300
        );
        assert_eq!(
            rfc2865::lookup_class(&reply).unwrap(),
            b"outpost:subscriber:42"
        );
    }

    #[test]
    fn accel_ppp_accept_carries_filter_id_download_first() {
        let reply = accept(NasKind::AccelPpp, settings(), &subscriber());
        assert_eq!(
            rfc2865::lookup_filter_id(&reply).unwrap().unwrap(),
            "10000/2000"
        );
        assert_no_mikrotik_attributes(&reply);
    }

    #[test]
    fn no_rate_attribute_when_the_agent_shapes_or_the_nas_is_generic() {
        let shaping = SiteSettings {
            shaping_enabled: true,
            ..settings()
        };
        let reply = accept(NasKind::Mikrotik, shaping, &subscriber());
        assert_no_mikrotik_attributes(&reply);
        let reply = accept(NasKind::Generic, settings(), &subscriber());
        assert_eq!(rfc2865::lookup_filter_id(&reply), None);
        assert_no_mikrotik_attributes(&reply);
    }

    #[test]
    fn optional_attributes_are_left_out_when_unset() {
        let sub = SubscriberState {
            expires_at: None,
            static_ipv4: None,
            rate: None,
            ..subscriber()
        };
        let none = SiteSettings {
            acct_interim_interval_secs: 0,
            ..settings()
        };
        let reply = accept(NasKind::Mikrotik, none, &sub);
        assert!(rfc2865::lookup_framed_ip_address(&reply).is_none());
        assert!(rfc2865::lookup_session_timeout(&reply).is_none());
        assert!(rfc2869::lookup_acct_interim_interval(&reply).is_none());
        assert_no_mikrotik_attributes(&reply);
        assert!(rfc2865::lookup_class(&reply).is_some());
        let bad_ip = SubscriberState {
            static_ipv4: Some("not-an-ip".into()),
            ..subscriber()
        };
        assert!(
            rfc2865::lookup_framed_ip_address(&accept(NasKind::Mikrotik, settings(), &bad_ip))
                .is_none()
        );
    }
}
