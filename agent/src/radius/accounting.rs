//! Accounting-Request (RFC 2866) into the protocol's [`Accounting`] record.

use outpost_protocol::{Accounting, AcctStatus};
use radius::core::avp::AVPType;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2866, rfc2869, rfc6911};

use super::attrs::u32_value;
use super::{Error, Result};

/// What an Accounting-Request asks us to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountingRequest {
    /// Start, Interim-Update or Stop of one session.
    Session(Accounting),
    /// Accounting-On or Accounting-Off: the NAS (re)started or is stopping, so none of
    /// its sessions are online any more.
    NasRestart {
        /// `Accounting-On` or `Accounting-Off`, for the journal.
        reason: &'static str,
    },
}

/// How far from the agent's clock a NAS's Event-Timestamp is believed: a NAS whose
/// clock was never set (many CPE-class routers boot in 1970) would otherwise date its
/// traffic decades away and order its records by nonsense. Outside this window the
/// receipt time less Acct-Delay-Time stands in.
const BELIEVABLE_PAST_SECS: i64 = 7 * 86_400;
const BELIEVABLE_FUTURE_SECS: i64 = 300;

/// Reads an Accounting-Request from the NAS at `nas_ip` (the address it is known by in
/// the NAS list, so its sessions can all be found again at Accounting-On), received at
/// `now` (Unix seconds, the agent's clock).
///
/// A request missing Acct-Status-Type, or a session record missing Acct-Session-Id,
/// is malformed; so is a status type we cannot record (RFC 2866 says not to
/// acknowledge what was not recorded).
pub fn parse(packet: &Packet, nas_ip: &str, now: i64) -> Result<AccountingRequest> {
    let status_type = integer(packet, rfc2866::ACCT_STATUS_TYPE_TYPE).ok_or(Error::Malformed(
        "Acct-Status-Type missing or not an integer",
    ))?;
    let status = match status_type {
        rfc2866::ACCT_STATUS_TYPE_START => AcctStatus::Start,
        rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE => AcctStatus::InterimUpdate,
        rfc2866::ACCT_STATUS_TYPE_STOP => AcctStatus::Stop,
        rfc2866::ACCT_STATUS_TYPE_ACCOUNTING_ON => {
            return Ok(AccountingRequest::NasRestart {
                reason: "Accounting-On",
            });
        }
        rfc2866::ACCT_STATUS_TYPE_ACCOUNTING_OFF => {
            return Ok(AccountingRequest::NasRestart {
                reason: "Accounting-Off",
            });
        }
        _ => return Err(Error::Malformed("Acct-Status-Type we do not record")),
    };
    let session_id = string(packet, rfc2866::ACCT_SESSION_ID_TYPE)
        .filter(|s| !s.is_empty())
        .ok_or(Error::Malformed("Acct-Session-Id missing"))?;
    Ok(AccountingRequest::Session(Accounting {
        status,
        // RFC 2866 lets User-Name be absent; the record is still worth keeping.
        username: string(packet, rfc2865::USER_NAME_TYPE).unwrap_or_default(),
        session_id,
        nas_ip: nas_ip.to_owned(),
        framed_ip: rfc2865::lookup_framed_ip_address(packet)
            .and_then(Result::ok)
            .map(|ip| ip.to_string()),
        framed_ipv6: rfc6911::lookup_framed_ipv6_address(packet)
            .and_then(Result::ok)
            .map(|ip| ip.to_string()),
        calling_station_id: string(packet, rfc2865::CALLING_STATION_ID_TYPE),
        session_time: integer(packet, rfc2866::ACCT_SESSION_TIME_TYPE).map_or(0, u64::from),
        input_octets: octets(
            packet,
            rfc2866::ACCT_INPUT_OCTETS_TYPE,
            rfc2869::ACCT_INPUT_GIGAWORDS_TYPE,
        ),
        output_octets: octets(
            packet,
            rfc2866::ACCT_OUTPUT_OCTETS_TYPE,
            rfc2869::ACCT_OUTPUT_GIGAWORDS_TYPE,
        ),
        terminate_cause: integer(packet, rfc2866::ACCT_TERMINATE_CAUSE_TYPE)
            .map(terminate_cause_name),
        event_time: Some(event_time(packet, now)),
    }))
}

/// When the record's event happened: Event-Timestamp (RFC 2869 §5.3) when believable,
/// else the receipt time less Acct-Delay-Time (RFC 2866 §5.2: how long the NAS has been
/// trying to send it, updated on each retransmission, so a retransmission computes the
/// same time as the first try).
fn event_time(packet: &Packet, now: i64) -> i64 {
    if let Some(ts) = integer(packet, rfc2869::EVENT_TIMESTAMP_TYPE).map(i64::from)
        && (now - BELIEVABLE_PAST_SECS..=now + BELIEVABLE_FUTURE_SECS).contains(&ts)
    {
        return ts;
    }
    let delay = integer(packet, rfc2866::ACCT_DELAY_TIME_TYPE).map_or(0, i64::from);
    now - delay.min(BELIEVABLE_PAST_SECS)
}

fn integer(packet: &Packet, typ: AVPType) -> Option<u32> {
    u32_value(&packet.lookup(typ)?.encode_bytes())
}

/// Text attributes as text; bytes that are not UTF-8 are kept visibly replaced rather
/// than losing the whole record.
fn string(packet: &Packet, typ: AVPType) -> Option<String> {
    Some(String::from_utf8_lossy(&packet.lookup(typ)?.encode_bytes()).into_owned())
}

/// Octet counters wrap at 2^32; the Gigawords attribute counts the wraps (RFC 2869 §5.1).
fn octets(packet: &Packet, low: AVPType, gigawords: AVPType) -> u64 {
    let low = integer(packet, low).map_or(0, u64::from);
    let high = integer(packet, gigawords).map_or(0, u64::from);
    (high << 32) | low
}

/// Acct-Terminate-Cause by its RFC 2866 §5.10 name, or the number when unknown.
pub fn terminate_cause_name(cause: u32) -> String {
    const NAMES: [&str; 18] = [
        "User-Request",
        "Lost-Carrier",
        "Lost-Service",
        "Idle-Timeout",
        "Session-Timeout",
        "Admin-Reset",
        "Admin-Reboot",
        "Port-Error",
        "NAS-Error",
        "NAS-Request",
        "NAS-Reboot",
        "Port-Unneeded",
        "Port-Preempted",
        "Port-Suspended",
        "Service-Unavailable",
        "Callback",
        "User-Error",
        "Host-Request",
    ];
    usize::try_from(cause)
        .ok()
        .and_then(|c| c.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| cause.to_string(), |name| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::code::Code;
    use std::net::Ipv4Addr;

    const NOW: i64 = 1_800_000_000;

    fn request(status: u32) -> Packet {
        let mut p = Packet::new(Code::AccountingRequest, b"s");
        rfc2866::add_acct_status_type(&mut p, status);
        p
    }

    #[test]
    fn reads_a_stop_record_with_gigawords() {
        let mut p = request(rfc2866::ACCT_STATUS_TYPE_STOP);
        rfc2865::add_user_name(&mut p, "amina");
        rfc2866::add_acct_session_id(&mut p, "81200004");
        rfc2865::add_framed_ip_address(&mut p, &Ipv4Addr::new(100, 64, 0, 9));
        rfc2865::add_calling_station_id(&mut p, "AA:BB:CC:00:11:22");
        rfc2866::add_acct_session_time(&mut p, 3600);
        rfc2866::add_acct_input_octets(&mut p, 5);
        rfc2869::add_acct_input_gigawords(&mut p, 2);
        rfc2866::add_acct_output_octets(&mut p, 7);
        rfc2866::add_acct_terminate_cause(&mut p, rfc2866::ACCT_TERMINATE_CAUSE_LOST_CARRIER);
        assert_eq!(
            parse(&p, "192.0.2.1", NOW).unwrap(),
            AccountingRequest::Session(Accounting {
                status: AcctStatus::Stop,
                username: "amina".into(),
                session_id: "81200004".into(),
                nas_ip: "192.0.2.1".into(),
                framed_ip: Some("100.64.0.9".into()),
                framed_ipv6: None,
                calling_station_id: Some("AA:BB:CC:00:11:22".into()),
                session_time: 3600,
                input_octets: (2 << 32) + 5,
                output_octets: 7,
                terminate_cause: Some("Lost-Carrier".into()),
                event_time: Some(NOW),
            })
        );
    }

    #[test]
    fn event_time_is_the_nas_timestamp_when_believable_else_receipt_less_delay() {
        let at = |extra: &dyn Fn(&mut Packet)| {
            let mut p = request(rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE);
            rfc2866::add_acct_session_id(&mut p, "x");
            extra(&mut p);
            let AccountingRequest::Session(a) = parse(&p, "n", NOW).unwrap() else {
                panic!("not a session")
            };
            a.event_time.unwrap()
        };
        let stamp = |t: i64| {
            move |p: &mut Packet| {
                p.add(radius::core::avp::AVP::from_u32(
                    rfc2869::EVENT_TIMESTAMP_TYPE,
                    t as u32,
                ))
            }
        };
        let delay = |d: u32| move |p: &mut Packet| rfc2866::add_acct_delay_time(p, d);
        assert_eq!(at(&|_| {}), NOW, "neither: received now");
        assert_eq!(at(&stamp(NOW - 3600)), NOW - 3600, "an hour-old record");
        assert_eq!(at(&delay(90)), NOW - 90, "retried for 90 s");
        assert_eq!(
            at(&|p| {
                stamp(NOW - 600)(p);
                delay(90)(p)
            }),
            NOW - 600,
            "the timestamp wins"
        );
        // A NAS clock in 1970, or far ahead: not believed.
        assert_eq!(at(&stamp(86_400)), NOW);
        assert_eq!(at(&stamp(NOW + 3600)), NOW);
        assert_eq!(
            at(&|p| {
                stamp(5)(p);
                delay(30)(p)
            }),
            NOW - 30
        );
        // An absurd delay is bounded like the timestamp is.
        assert_eq!(at(&delay(u32::MAX)), NOW - BELIEVABLE_PAST_SECS);
    }

    #[test]
    fn start_and_interim_need_only_a_session_id() {
        for (status, expected) in [
            (rfc2866::ACCT_STATUS_TYPE_START, AcctStatus::Start),
            (
                rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE,
                AcctStatus::InterimUpdate,
            ),
        ] {
            let mut p = request(status);
            rfc2866::add_acct_session_id(&mut p, "x");
            let AccountingRequest::Session(a) = parse(&p, "n", NOW).unwrap() else {
                panic!("not a session")
            };
            assert_eq!(
                (
                    a.status,
                    a.username.as_str(),
                    a.input_octets,
                    a.terminate_cause
                ),
                (expected, "", 0, None)
            );
        }
    }

    #[test]
    fn accounting_on_and_off_restart_the_nas() {
        assert_eq!(
            parse(&request(rfc2866::ACCT_STATUS_TYPE_ACCOUNTING_ON), "n", NOW).unwrap(),
            AccountingRequest::NasRestart {
                reason: "Accounting-On"
            }
        );
        assert_eq!(
            parse(&request(rfc2866::ACCT_STATUS_TYPE_ACCOUNTING_OFF), "n", NOW).unwrap(),
            AccountingRequest::NasRestart {
                reason: "Accounting-Off"
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_record() {
        assert!(
            parse(&Packet::new(Code::AccountingRequest, b"s"), "n", NOW).is_err(),
            "no status type"
        );
        assert!(
            parse(&request(rfc2866::ACCT_STATUS_TYPE_START), "n", NOW).is_err(),
            "no session id"
        );
        assert!(
            parse(&request(rfc2866::ACCT_STATUS_TYPE_FAILED), "n", NOW).is_err(),
            "failed"
        );
        let mut short = Packet::new(Code::AccountingRequest, b"s");
        short.add(radius::core::avp::AVP::from_u16(
            rfc2866::ACCT_STATUS_TYPE_TYPE,
            1,
        ));
        assert!(parse(&short, "n", NOW).is_err(), "2-octet status type");
    }

    #[test]
    fn terminate_causes_have_their_rfc_names() {
        assert_eq!(terminate_cause_name(1), "User-Request");
        assert_eq!(terminate_cause_name(18), "Host-Request");
        assert_eq!(terminate_cause_name(0), "0");
        assert_eq!(terminate_cause_name(19), "19");
        assert_eq!(terminate_cause_name(u32::MAX), u32::MAX.to_string());
    }
}
