//! MS-CHAPv2 (RFC 2759) as the authenticator side computes it, with the RADIUS
//! attribute layouts of RFC 2548.
//!
//! The NAS relays the peer's response: MS-CHAP-Challenge holds the 16-octet
//! Authenticator Challenge it sent, MS-CHAP2-Response the peer's answer. We recompute
//! the NT-Response from the clear-text password, and on success return the
//! Authenticator Response the peer uses to check us (MS-CHAP2-Success).

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit};
use md4::Md4;
use sha1::{Digest, Sha1};

use super::{Error, Result, constant_time_eq};

/// RFC 2759 §8.7 Magic1.
const MAGIC1: &[u8; 39] = b"Magic server to client signing constant";
/// RFC 2759 §8.7 Magic2.
const MAGIC2: &[u8; 41] = b"Pad to make it do more than one iteration";

/// RFC 3079 §3.4 Magic1, for the master key.
const MPPE_MASTER: &[u8; 27] = b"This is the MPPE Master Key";
/// RFC 3079 §3.4 Magic2: the server's receive key.
const MPPE_SERVER_RECEIVE: &[u8; 84] =
    b"On the client side, this is the send key; on the server side, it is the receive key.";
/// RFC 3079 §3.4 Magic3: the server's send key.
const MPPE_SERVER_SEND: &[u8; 84] =
    b"On the client side, this is the receive key; on the server side, it is the send key.";

/// The 128-bit MPPE start keys of one MS-CHAPv2 login (RFC 3079 §3.4), as the
/// authenticator side holds them: the NAS encrypts what it sends to the peer with
/// `send` and decrypts what it receives with `receive`.
#[derive(Clone, PartialEq, Eq)]
pub struct MppeKeys {
    /// MS-MPPE-Send-Key.
    pub send: [u8; 16],
    /// MS-MPPE-Recv-Key.
    pub receive: [u8; 16],
}

impl std::fmt::Debug for MppeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MppeKeys(..)")
    }
}

/// `GetMasterKey` then `GetAsymmetricStartKey` for both directions (RFC 3079 §3.4),
/// from the password and the peer's NT-Response.
pub fn mppe_keys(password: &str, nt_response: &[u8; 24]) -> MppeKeys {
    let password_hash_hash = hash_nt_password_hash(&nt_password_hash(password));
    let master = Sha1::new()
        .chain_update(password_hash_hash)
        .chain_update(nt_response)
        .chain_update(MPPE_MASTER)
        .finalize();
    let start_key = |magic: &[u8; 84]| {
        let digest = Sha1::new()
            .chain_update(&master[..16])
            .chain_update([0u8; 40])
            .chain_update(magic)
            .chain_update([0xF2u8; 40])
            .finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    };
    MppeKeys {
        send: start_key(MPPE_SERVER_SEND),
        receive: start_key(MPPE_SERVER_RECEIVE),
    }
}

/// An MS-MPPE-Send-Key or MS-MPPE-Recv-Key value (RFC 2548 §2.4.2): the salt, then the
/// key's length, the key and zero padding to 32 octets, hidden by the MD5 chain of the
/// RADIUS secret, the request's authenticator and the salt. `salt` must have its high
/// bit set and differ between the attributes of one packet.
pub fn hide_mppe_key(
    key: &[u8; 16],
    secret: &[u8],
    request_authenticator: &[u8; 16],
    salt: [u8; 2],
) -> [u8; 34] {
    use md5::Md5;
    debug_assert!(salt[0] & 0x80 != 0, "RFC 2548: the salt's high bit is set");
    let mut plain = [0u8; 32];
    plain[0] = 16;
    plain[1..17].copy_from_slice(key);
    let mut out = [0u8; 34];
    out[..2].copy_from_slice(&salt);
    let mut b = Md5::new()
        .chain_update(secret)
        .chain_update(request_authenticator)
        .chain_update(salt)
        .finalize();
    for block in 0..2 {
        let at = 2 + 16 * block;
        for i in 0..16 {
            out[at + i] = plain[16 * block + i] ^ b[i];
        }
        b = Md5::new()
            .chain_update(secret)
            .chain_update(&out[at..at + 16])
            .finalize();
    }
    out
}

/// The value of an MS-CHAP2-Response attribute (RFC 2548 §2.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The PPP CHAP Identifier; echoed in MS-CHAP2-Success and MS-CHAP-Error.
    pub ident: u8,
    /// Flags, reserved (zero).
    pub flags: u8,
    /// The peer's 16-octet challenge.
    pub peer_challenge: [u8; 16],
    /// The 24-octet NT-Response.
    pub nt_response: [u8; 24],
}

impl Response {
    /// Parses the 50-octet value: Ident, Flags, Peer-Challenge (16), Reserved (8),
    /// Response (24).
    pub fn parse(value: &[u8]) -> Result<Self> {
        let value: &[u8; 50] = value
            .try_into()
            .map_err(|_| Error::Malformed("MS-CHAP2-Response is not 50 octets"))?;
        let mut peer_challenge = [0; 16];
        peer_challenge.copy_from_slice(&value[2..18]);
        let mut nt_response = [0; 24];
        nt_response.copy_from_slice(&value[26..50]);
        Ok(Self {
            ident: value[0],
            flags: value[1],
            peer_challenge,
            nt_response,
        })
    }

    /// The 50-octet attribute value, as a NAS sends it.
    pub fn to_bytes(&self) -> [u8; 50] {
        let mut out = [0; 50];
        out[0] = self.ident;
        out[1] = self.flags;
        out[2..18].copy_from_slice(&self.peer_challenge);
        out[26..50].copy_from_slice(&self.nt_response);
        out
    }
}

/// The user name that enters the challenge hash: RFC 2759 §4 hashes the name without
/// any Windows domain (`DOMAIN\user` → `user`).
pub fn challenge_user_name(user_name: &str) -> &str {
    user_name
        .rsplit_once('\\')
        .map_or(user_name, |(_, user)| user)
}

/// `NtPasswordHash` (RFC 2759 §8.3): MD4 of the password in UTF-16LE.
pub fn nt_password_hash(password: &str) -> [u8; 16] {
    let mut md4 = Md4::new();
    for unit in password.encode_utf16() {
        md4.update(unit.to_le_bytes());
    }
    md4.finalize().into()
}

/// `HashNtPasswordHash` (RFC 2759 §8.4).
pub fn hash_nt_password_hash(password_hash: &[u8; 16]) -> [u8; 16] {
    Md4::digest(password_hash).into()
}

/// `ChallengeHash` (RFC 2759 §8.2): the first 8 octets of
/// `SHA1(PeerChallenge + AuthenticatorChallenge + UserName)`.
pub fn challenge_hash(
    peer_challenge: &[u8; 16],
    authenticator_challenge: &[u8; 16],
    user_name: &str,
) -> [u8; 8] {
    let digest = Sha1::new()
        .chain_update(peer_challenge)
        .chain_update(authenticator_challenge)
        .chain_update(user_name.as_bytes())
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// `ChallengeResponse` (RFC 2759 §8.5): the password hash, zero-padded to 21 octets,
/// as three DES keys each encrypting the 8-octet challenge.
pub fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut padded = [0u8; 21];
    padded[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for (key7, block) in padded.chunks_exact(7).zip(out.chunks_exact_mut(8)) {
        let mut key = [0u8; 7];
        key.copy_from_slice(key7);
        let des = Des::new(&des_key(&key).into());
        let mut b = (*challenge).into();
        des.encrypt_block(&mut b);
        block.copy_from_slice(&b);
    }
    out
}

/// Spreads 56 key bits over 8 octets, leaving the low (parity) bit of each clear: the
/// DES key schedule ignores it (RFC 2759 §8.6 `DesEncrypt`).
fn des_key(k: &[u8; 7]) -> [u8; 8] {
    [
        k[0],
        (k[0] << 7) | (k[1] >> 1),
        (k[1] << 6) | (k[2] >> 2),
        (k[2] << 5) | (k[3] >> 3),
        (k[3] << 4) | (k[4] >> 4),
        (k[4] << 3) | (k[5] >> 5),
        (k[5] << 2) | (k[6] >> 6),
        k[6] << 1,
    ]
    .map(|b| b & 0xFE)
}

/// `GenerateNTResponse` (RFC 2759 §8.1): what a peer knowing `password` answers.
pub fn generate_nt_response(
    authenticator_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user_name: &str,
    password: &str,
) -> [u8; 24] {
    let challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name);
    challenge_response(&challenge, &nt_password_hash(password))
}

/// `GenerateAuthenticatorResponse` (RFC 2759 §8.7): the 42-character `S=<40 hex>` that
/// proves to the peer that we know its password too.
pub fn authenticator_response(
    password: &str,
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    authenticator_challenge: &[u8; 16],
    user_name: &str,
) -> String {
    let password_hash_hash = hash_nt_password_hash(&nt_password_hash(password));
    let digest = Sha1::new()
        .chain_update(password_hash_hash)
        .chain_update(nt_response)
        .chain_update(MAGIC1)
        .finalize();
    let challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name);
    let digest = Sha1::new()
        .chain_update(digest)
        .chain_update(challenge)
        .chain_update(MAGIC2)
        .finalize();
    format!("S={}", hex::encode_upper(digest))
}

/// Checks `response` to `authenticator_challenge` for `user_name` (the RADIUS User-Name;
/// any domain is removed here) against `password`. On success returns the
/// MS-CHAP2-Success value: the Ident, then the Authenticator Response.
pub fn verify(
    authenticator_challenge: &[u8],
    response: &Response,
    user_name: &str,
    password: &str,
) -> Result<Option<Vec<u8>>> {
    let authenticator_challenge: &[u8; 16] = authenticator_challenge
        .try_into()
        .map_err(|_| Error::Malformed("MS-CHAP-Challenge is not 16 octets for MS-CHAPv2"))?;
    let user_name = challenge_user_name(user_name);
    let expected = generate_nt_response(
        authenticator_challenge,
        &response.peer_challenge,
        user_name,
        password,
    );
    if !constant_time_eq(&expected, &response.nt_response) {
        return Ok(None);
    }
    let auth = authenticator_response(
        password,
        &response.nt_response,
        &response.peer_challenge,
        authenticator_challenge,
        user_name,
    );
    let mut success = Vec::with_capacity(1 + auth.len());
    success.push(response.ident);
    success.extend_from_slice(auth.as_bytes());
    Ok(Some(success))
}

/// The MS-CHAP-Error value for a refused MS-CHAPv2 attempt: error 691 ("access denied")
/// whatever the reason, so the NAS learns nothing about why, and `R=0` so the peer does
/// not retry with the same credentials (RFC 2759 §6).
pub fn error_value(ident: u8, authenticator_challenge: &[u8]) -> Vec<u8> {
    let mut out = vec![ident];
    out.extend_from_slice(
        format!(
            "E=691 R=0 C={} V=3",
            hex::encode_upper(authenticator_challenge)
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    const AUTH_CHALLENGE: &str = "5B5D7C7D7B3F2F3E3C2C602132262628";
    const PEER_CHALLENGE: &str = "21402324255E262A28295F2B3A337C7E";

    /// Every intermediate value of RFC 2759 §9.2.
    #[test]
    fn matches_rfc_2759_section_9_2() {
        let (auth, peer) = (h::<16>(AUTH_CHALLENGE), h::<16>(PEER_CHALLENGE));
        assert_eq!(
            challenge_hash(&peer, &auth, "User"),
            h::<8>("D02E4386BCE91226")
        );
        let hash = nt_password_hash("clientPass");
        assert_eq!(hash, h::<16>("44EBBA8D5312B8D611474411F56989AE"));
        let nt = generate_nt_response(&auth, &peer, "User", "clientPass");
        assert_eq!(
            nt,
            h::<24>("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
        );
        assert_eq!(
            hash_nt_password_hash(&hash),
            h::<16>("41C00C584BD2D91C4017A2A12FA59F3F")
        );
        assert_eq!(
            authenticator_response("clientPass", &nt, &peer, &auth, "User"),
            "S=407A5589115FD0D6209F510FE9C04566932CDA56"
        );
    }

    /// RFC 3079 §3.5.3's sample 128-bit key derivation (the same user, password and
    /// challenges as RFC 2759 §9.2).
    #[test]
    fn mppe_keys_match_rfc_3079_section_3_5_3() {
        let nt_response: [u8; 24] = h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF");
        assert_eq!(
            hash_nt_password_hash(&nt_password_hash("clientPass")),
            h::<16>("41C00C584BD2D91C4017A2A12FA59F3F")
        );
        let master = Sha1::new()
            .chain_update(h::<16>("41C00C584BD2D91C4017A2A12FA59F3F"))
            .chain_update(nt_response)
            .chain_update(MPPE_MASTER)
            .finalize();
        assert_eq!(master[..16], h::<16>("FDECE3717A8C838CB388E527AE3CDD31"));
        let keys = mppe_keys("clientPass", &nt_response);
        assert_eq!(keys.send, h::<16>("8B7CDC149B993A1BA118CB153F56DCCB"));
        assert_ne!(keys.send, keys.receive);
    }

    /// RFC 2548 §2.4.2, undone the way the NAS does it.
    #[test]
    fn a_hidden_mppe_key_comes_back_with_the_secret_only() {
        use md5::Md5;
        let key = h::<16>("8B7CDC149B993A1BA118CB153F56DCCB");
        let ra = [7u8; 16];
        let hidden = hide_mppe_key(&key, b"s3cret", &ra, [0x81, 0x02]);
        let reveal = |secret: &[u8]| {
            let mut plain = Vec::new();
            let mut b = Md5::new()
                .chain_update(secret)
                .chain_update(ra)
                .chain_update(&hidden[..2])
                .finalize();
            for c in hidden[2..].chunks(16) {
                plain.extend(c.iter().zip(b.iter()).map(|(c, b)| c ^ b));
                b = Md5::new().chain_update(secret).chain_update(c).finalize();
            }
            plain
        };
        let plain = reveal(b"s3cret");
        assert_eq!(
            (plain[0], &plain[1..17], &plain[17..]),
            (16, &key[..], &[0u8; 15][..])
        );
        assert_ne!(&reveal(b"other")[1..17], &key[..]);
    }

    #[test]
    fn verify_returns_the_success_value_only_for_the_right_password() {
        let response = Response {
            ident: 0x1f,
            flags: 0,
            peer_challenge: h(PEER_CHALLENGE),
            nt_response: h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"),
        };
        let auth = h::<16>(AUTH_CHALLENGE);
        let success = verify(&auth, &response, "User", "clientPass")
            .unwrap()
            .unwrap();
        assert_eq!(success[0], 0x1f);
        assert_eq!(&success[1..], b"S=407A5589115FD0D6209F510FE9C04566932CDA56");
        // The domain does not enter the challenge hash.
        assert!(
            verify(&auth, &response, "CORP\\User", "clientPass")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            verify(&auth, &response, "User", "clientpass").unwrap(),
            None
        );
        assert_eq!(
            verify(&auth, &response, "user", "clientPass").unwrap(),
            None
        );
        assert!(verify(&auth[..8], &response, "User", "clientPass").is_err());
    }

    #[test]
    fn response_attribute_round_trips() {
        let r = Response {
            ident: 3,
            flags: 0,
            peer_challenge: [1; 16],
            nt_response: [2; 24],
        };
        let bytes = r.to_bytes();
        assert_eq!(&bytes[18..26], &[0; 8], "reserved octets");
        assert_eq!(Response::parse(&bytes).unwrap(), r);
        assert!(Response::parse(&bytes[..49]).is_err());
    }

    #[test]
    fn des_key_spreads_seven_octets_over_eight() {
        assert_eq!(des_key(&[0xFF; 7]), [0xFE; 8]);
        assert_eq!(
            des_key(&[0x80, 0, 0, 0, 0, 0, 0x01]),
            [0x80, 0, 0, 0, 0, 0, 0, 0x02]
        );
    }

    #[test]
    fn non_ascii_passwords_hash_as_utf16le() {
        // "ü" is U+00FC: one UTF-16 unit, FC 00.
        assert_eq!(
            nt_password_hash("ü"),
            <[u8; 16]>::from(Md4::digest([0xFC, 0x00]))
        );
    }

    #[test]
    fn error_value_names_no_reason() {
        let e = error_value(9, &[0xAB; 16]);
        assert_eq!(e[0], 9);
        assert_eq!(
            std::str::from_utf8(&e[1..]).unwrap(),
            format!("E=691 R=0 C={} V=3", "AB".repeat(16))
        );
    }
}
