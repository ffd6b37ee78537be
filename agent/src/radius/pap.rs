//! PAP: recovering the User-Password hidden by the NAS (RFC 2865 §5.2).
//!
//! The `radius` crate has a decoder too, but it accepts values whose length is not a
//! multiple of 16 and cuts the password at its first NUL; this one refuses the former
//! (the NAS and we disagree on the secret or the packet is forged) and strips only the
//! trailing padding.

use md5::{Digest, Md5};

use super::{Error, Result};

/// The clear-text password in a User-Password value, given the NAS's shared secret
/// and the request's Request Authenticator.
///
/// `b1 = MD5(S + RA)`, `p1 = c1 xor b1`, `bi = MD5(S + c(i-1))`, `pi = ci xor bi`; the
/// clear text was padded with NULs to a multiple of 16, which are removed.
pub fn decode_user_password(
    hidden: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<Vec<u8>> {
    if hidden.len() < 16 || hidden.len() > 128 || !hidden.len().is_multiple_of(16) {
        return Err(Error::Malformed(
            "User-Password is not 16..=128 octets in blocks of 16",
        ));
    }
    let mut clear = Vec::with_capacity(hidden.len());
    let mut previous: &[u8] = request_authenticator;
    for block in hidden.chunks_exact(16) {
        let b = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        clear.extend(block.iter().zip(b.iter()).map(|(c, b)| c ^ b));
        previous = block;
    }
    while clear.last() == Some(&0) {
        clear.pop();
    }
    Ok(clear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::avp::AVP;

    /// RFC 2865 §7.1: user "nemo", password "arctangent", secret "xyzzy5461".
    #[test]
    fn decodes_the_rfc_2865_example() {
        let authenticator: [u8; 16] = hex::decode("0f403f9473978057bd83d5cb98f4227a")
            .unwrap()
            .try_into()
            .unwrap();
        let hidden = hex::decode("0dbe708d93d413ce3196e43f782a0aee").unwrap();
        assert_eq!(
            decode_user_password(&hidden, b"xyzzy5461", &authenticator).unwrap(),
            b"arctangent"
        );
    }

    /// Cross-checks against the codec's independent encoder, over passwords that end
    /// exactly on a block boundary and that span several blocks.
    #[test]
    fn decodes_what_the_codec_encodes() {
        let authenticator = [7u8; 16];
        for password in [
            &b"x"[..],
            b"0123456789abcdef",
            b"0123456789abcdef0",
            &[b'p'; 128],
        ] {
            let avp = AVP::from_user_password(2, password, b"s3cret", &authenticator).unwrap();
            let hidden = avp.encode_bytes();
            assert_eq!(
                decode_user_password(&hidden, b"s3cret", &authenticator).unwrap(),
                password
            );
            assert_ne!(
                decode_user_password(&hidden, b"wrong", &authenticator).unwrap(),
                password
            );
        }
    }

    #[test]
    fn refuses_lengths_that_are_not_whole_blocks() {
        for len in [0, 15, 17, 144] {
            assert!(
                decode_user_password(&vec![0; len], b"s", &[0; 16]).is_err(),
                "{len}"
            );
        }
    }
}
