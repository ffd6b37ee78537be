//! Packet authentication: Message-Authenticator (RFC 2869 §5.14, RFC 3579 §3.2), the
//! Accounting-Request Request Authenticator (RFC 2866 §3) and the Response
//! Authenticator (RFC 2865 §3).
//!
//! The `radius` crate computes the Response Authenticator at encode time but knows
//! nothing of Message-Authenticator, which has to be filled in first (the Response
//! Authenticator covers it). So replies are encoded by the crate with a zeroed
//! Message-Authenticator and then signed here, in place.
//!
//! All functions take a whole packet cut at its Length field.

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use super::attrs::{self, HEADER_LEN};
use super::constant_time_eq;

type HmacMd5 = Hmac<Md5>;

/// Whether a request's Authenticator field is a hash of the packet (Accounting-Request,
/// Disconnect-Request, CoA-Request) rather than random (Access-Request, Status-Server).
fn authenticator_is_hash(code: u8) -> bool {
    matches!(code, 4 | 40 | 43)
}

thread_local! {
    /// The HMAC keyed with the secret used last on this thread. Keying costs two MD5
    /// blocks of the four or five a Message-Authenticator takes, and a server thread
    /// answers the same few NASes over and over, so the keyed state is kept and cloned.
    static KEYED: RefCell<Option<(Vec<u8>, HmacMd5)>> = const { RefCell::new(None) };
}

/// An HMAC-MD5 keyed with `secret`, ready for the message.
fn keyed(secret: &[u8]) -> HmacMd5 {
    KEYED.with_borrow_mut(|keyed| match keyed {
        Some((key, mac)) if key.as_slice() == secret => mac.clone(),
        _ => {
            // HMAC accepts keys of any length, so this cannot fail.
            let mac = <HmacMd5 as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
            *keyed = Some((secret.to_vec(), mac.clone()));
            mac
        }
    })
}

/// HMAC-MD5 keyed with the shared secret over `packet`, which must already hold what
/// RFC 3579 §3.2 says goes in the Authenticator field and zeros in the
/// Message-Authenticator value.
pub fn message_authenticator(packet: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut mac = keyed(secret);
    mac.update(packet);
    mac.finalize().into_bytes().into()
}

/// Whether the Message-Authenticator whose value is at `offset` in `request` is right.
///
/// For Access-Request the HMAC covers the Request Authenticator as sent; for
/// Accounting-Request (and other requests whose authenticator is itself a hash of the
/// packet) the Authenticator field counts as zeros, as FreeRADIUS and RFC 5080 §2.2.2
/// do it.
pub fn verify_request_message_authenticator(request: &[u8], offset: usize, secret: &[u8]) -> bool {
    let Some(received) = request.get(offset..offset + 16) else {
        return false;
    };
    if request.len() < HEADER_LEN || offset < HEADER_LEN {
        return false;
    }
    // The packet as the NAS signed it, fed in pieces rather than copied and patched.
    let mut mac = keyed(secret);
    if authenticator_is_hash(request[0]) {
        mac.update(&request[..4]);
        mac.update(&[0; 16]);
        mac.update(&request[HEADER_LEN..offset]);
    } else {
        mac.update(&request[..offset]);
    }
    mac.update(&[0; 16]);
    mac.update(&request[offset + 16..]);
    let computed: [u8; 16] = mac.finalize().into_bytes().into();
    constant_time_eq(&computed, received)
}

/// The Request Authenticator an Accounting-Request must carry:
/// `MD5(Code + Identifier + Length + 16 zero octets + Attributes + Secret)`.
pub fn accounting_request_authenticator(request: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(&request[..4.min(request.len())]);
    md5.update([0u8; 16]);
    md5.update(request.get(HEADER_LEN..).unwrap_or_default());
    md5.update(secret);
    md5.finalize().into()
}

/// Whether an Accounting-Request's Request Authenticator is right (RFC 2866 §3).
pub fn verify_accounting_request(request: &[u8], secret: &[u8]) -> bool {
    request.len() >= HEADER_LEN
        && constant_time_eq(
            &accounting_request_authenticator(request, secret),
            &request[4..HEADER_LEN],
        )
}

/// Signs an encoded reply in place: fills its Message-Authenticator, if it has one
/// (its value may be anything, zeros by convention), then the Response Authenticator
/// `MD5(Code + Identifier + Length + Request Authenticator + Attributes + Secret)`.
/// Does nothing to a buffer shorter than a header.
pub fn sign_response(reply: &mut [u8], request_authenticator: &[u8; 16], secret: &[u8]) {
    if reply.len() < HEADER_LEN {
        return;
    }
    reply[4..HEADER_LEN].copy_from_slice(request_authenticator);
    if let Ok(Some(offset)) = attrs::message_authenticator_offset(reply) {
        reply[offset..offset + 16].fill(0);
        let mac = message_authenticator(reply, secret);
        reply[offset..offset + 16].copy_from_slice(&mac);
    }
    let digest: [u8; 16] = Md5::new()
        .chain_update(&*reply)
        .chain_update(secret)
        .finalize()
        .into();
    reply[4..HEADER_LEN].copy_from_slice(&digest);
}

/// Signs an encoded request in place the way a NAS does: fills its
/// Message-Authenticator if it has one, then, for an Accounting-Request, its Request
/// Authenticator. An Access-Request keeps the random authenticator it was built with.
///
/// The server never sends requests; tests and the fuzz target use this to make
/// packets that get past authentication.
pub fn sign_request(request: &mut [u8], secret: &[u8]) {
    if request.len() < HEADER_LEN {
        return;
    }
    let hashed = authenticator_is_hash(request[0]);
    if hashed {
        request[4..HEADER_LEN].fill(0);
    }
    if let Ok(Some(offset)) = attrs::message_authenticator_offset(request) {
        request[offset..offset + 16].fill(0);
        let mac = message_authenticator(request, secret);
        request[offset..offset + 16].copy_from_slice(&mac);
    }
    if hashed {
        let authenticator = accounting_request_authenticator(request, secret);
        request[4..HEADER_LEN].copy_from_slice(&authenticator);
    }
}

/// Whether `reply` is a correctly signed answer to a request whose authenticator was
/// `request_authenticator`: its Response Authenticator and, when present, its
/// Message-Authenticator. What a NAS checks; used by tests.
pub fn verify_response(reply: &[u8], request_authenticator: &[u8; 16], secret: &[u8]) -> bool {
    if reply.len() < HEADER_LEN {
        return false;
    }
    let mut copy = reply.to_vec();
    sign_response(&mut copy, request_authenticator, secret);
    constant_time_eq(&copy, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::code::Code;
    use radius::core::packet::Packet;
    use radius::core::{rfc2865, rfc2866, rfc2869};

    #[test]
    fn hmac_md5_matches_an_independent_computation() {
        // Python: hmac.new(b"xyzzy5461", bytes(range(40)), hashlib.md5).hexdigest()
        let data: Vec<u8> = (0..40).collect();
        assert_eq!(
            hex::encode(message_authenticator(&data, b"xyzzy5461")),
            "b6f9fef18e0de3cecde6a7a7bc96bfdd"
        );
    }

    /// RFC 2865 §7.1: our Response Authenticator equals the RFC's own reply bytes.
    #[test]
    fn response_authenticator_matches_rfc_2865_example() {
        let request_authenticator: [u8; 16] = hex::decode("0f403f9473978057bd83d5cb98f4227a")
            .unwrap()
            .try_into()
            .unwrap();
        let expected_full = hex::decode(
            "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103",
        )
        .unwrap();
        let mut reply = expected_full.clone();
        reply[4..20].fill(0xEE);
        sign_response(&mut reply, &request_authenticator, b"xyzzy5461");
        assert_eq!(reply, expected_full);
        assert!(verify_response(
            &reply,
            &request_authenticator,
            b"xyzzy5461"
        ));
        assert!(!verify_response(&reply, &[0; 16], b"xyzzy5461"));
    }

    #[test]
    fn response_message_authenticator_covers_the_request_authenticator() {
        let request = Packet::new(Code::AccessRequest, b"s");
        let mut reply = request.make_response_packet(Code::AccessAccept);
        rfc2869::add_message_authenticator(&mut reply, &[0; 16]);
        rfc2865::add_session_timeout(&mut reply, 60);
        let mut bytes = reply.encode().unwrap();
        let request_authenticator: [u8; 16] =
            request.get_authenticator().as_slice().try_into().unwrap();
        sign_response(&mut bytes, &request_authenticator, b"s");
        // Recompute by hand: Authenticator field = Request Authenticator, MA zeroed.
        let mut by_hand = bytes.clone();
        by_hand[4..20].copy_from_slice(&request_authenticator);
        by_hand[22..38].fill(0);
        assert_eq!(bytes[22..38], message_authenticator(&by_hand, b"s"));
        assert!(verify_response(&bytes, &request_authenticator, b"s"));
        let mut tampered = bytes.clone();
        tampered[22] ^= 1;
        assert!(!verify_response(&tampered, &request_authenticator, b"s"));
    }

    /// The codec's encoder computes the accounting Request Authenticator on its own.
    #[test]
    fn accounting_request_authenticator_matches_the_codec() {
        let mut packet = Packet::new(Code::AccountingRequest, b"acct");
        rfc2866::add_acct_status_type(&mut packet, rfc2866::ACCT_STATUS_TYPE_START);
        rfc2866::add_acct_session_id(&mut packet, "s1");
        let bytes = packet.encode().unwrap();
        assert!(verify_accounting_request(&bytes, b"acct"));
        assert!(!verify_accounting_request(&bytes, b"other"));
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(!verify_accounting_request(&tampered, b"acct"));
        assert!(!verify_accounting_request(&bytes[..10], b"acct"));
    }

    #[test]
    fn signed_requests_verify_and_tampering_is_caught() {
        for code in [Code::AccessRequest, Code::AccountingRequest] {
            let mut packet = Packet::new(code, b"k");
            rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
            rfc2865::add_user_name(&mut packet, "amina");
            let mut bytes = packet.encode().unwrap();
            sign_request(&mut bytes, b"k");
            let offset = attrs::message_authenticator_offset(&bytes)
                .unwrap()
                .unwrap();
            assert!(
                verify_request_message_authenticator(&bytes, offset, b"k"),
                "{code:?}"
            );
            assert!(
                !verify_request_message_authenticator(&bytes, offset, b"K"),
                "{code:?}"
            );
            let mut tampered = bytes.clone();
            *tampered.last_mut().unwrap() ^= 0x20;
            assert!(
                !verify_request_message_authenticator(&tampered, offset, b"k"),
                "{code:?}"
            );
            if code == Code::AccountingRequest {
                assert!(verify_accounting_request(&bytes, b"k"));
            }
        }
    }

    #[test]
    fn out_of_range_offsets_do_not_verify() {
        assert!(!verify_request_message_authenticator(&[1; 30], 20, b"k"));
        assert!(!verify_request_message_authenticator(&[1; 10], 0, b"k"));
    }
}
