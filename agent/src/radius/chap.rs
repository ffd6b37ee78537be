//! CHAP with MD5 (RFC 1994 §4.1), as carried in RADIUS (RFC 2865 §5.3, §5.40).

use md5::{Digest, Md5};

use super::{Error, Result, constant_time_eq};

/// The CHAP response the peer should have sent: `MD5(Identifier + secret + Challenge)`.
pub fn response(identifier: u8, password: &[u8], challenge: &[u8]) -> [u8; 16] {
    Md5::new()
        .chain_update([identifier])
        .chain_update(password)
        .chain_update(challenge)
        .finalize()
        .into()
}

/// Whether a CHAP-Password value (the CHAP Identifier then the 16-octet response)
/// answers `challenge` with `password`.
///
/// The challenge is CHAP-Challenge when the request has one, otherwise its Request
/// Authenticator (RFC 2865 §2.2).
pub fn verify(chap_password: &[u8], challenge: &[u8], password: &[u8]) -> Result<bool> {
    let [identifier, received @ ..] = chap_password else {
        return Err(Error::Malformed("CHAP-Password is empty"));
    };
    if received.len() != 16 {
        return Err(Error::Malformed("CHAP-Password is not 17 octets"));
    }
    if challenge.is_empty() {
        return Err(Error::Malformed("CHAP-Challenge is empty"));
    }
    Ok(constant_time_eq(
        &response(*identifier, password, challenge),
        received,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected value computed independently (Python `hashlib.md5`).
    #[test]
    fn response_is_md5_of_identifier_secret_challenge() {
        let challenge: Vec<u8> = (0..16).collect();
        assert_eq!(
            hex::encode(response(0x2a, b"secret", &challenge)),
            "03dc98c5a832692b49df73cf48fcb4e9"
        );
    }

    #[test]
    fn verifies_only_the_right_password_and_identifier() {
        let challenge = [9u8; 16];
        let mut value = vec![5];
        value.extend(response(5, b"pw", &challenge));
        assert!(verify(&value, &challenge, b"pw").unwrap());
        assert!(!verify(&value, &challenge, b"pW").unwrap());
        value[0] = 6;
        assert!(!verify(&value, &challenge, b"pw").unwrap());
        assert!(verify(&value[..10], &challenge, b"pw").is_err());
        assert!(verify(&[], &challenge, b"pw").is_err());
        assert!(verify(&value, &[], b"pw").is_err());
    }
}
