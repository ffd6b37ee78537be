//! Attribute numbers and the few attribute encodings the `radius` crate lacks: a walk
//! over a packet's raw attributes (to find Message-Authenticator's offset, which the
//! crate's `Packet` hides) and vendor-specific attributes with binary values.

use radius::core::avp::AVP;
use radius::core::packet::Packet;

use super::{Error, Result};

/// Length of the RADIUS header: Code, Identifier, Length, Authenticator.
pub const HEADER_LEN: usize = 20;

/// Vendor-Specific (RFC 2865 §5.26).
pub const VENDOR_SPECIFIC: u8 = 26;
/// Message-Authenticator (RFC 2869 §5.14).
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
/// EAP-Message (RFC 3579); we do not do EAP.
pub const EAP_MESSAGE: u8 = 79;

/// Microsoft's SMI enterprise number (RFC 2548).
pub const VENDOR_MICROSOFT: u32 = 311;
/// MS-CHAP-Response (RFC 2548 §2.1.3): MS-CHAPv1, which we do not accept.
pub const MS_CHAP_RESPONSE: u8 = 1;
/// MS-CHAP-Error (RFC 2548 §2.1.5).
pub const MS_CHAP_ERROR: u8 = 2;
/// MS-CHAP-Challenge (RFC 2548 §2.1.6).
pub const MS_CHAP_CHALLENGE: u8 = 11;
/// MS-CHAP2-Response (RFC 2548 §2.3.2).
pub const MS_CHAP2_RESPONSE: u8 = 25;
/// MS-CHAP2-Success (RFC 2548 §2.3.3).
pub const MS_CHAP2_SUCCESS: u8 = 26;
/// MS-MPPE-Encryption-Policy (RFC 2548 §2.4.4): 1 allowed, 2 required.
pub const MS_MPPE_ENCRYPTION_POLICY: u8 = 7;
/// MS-MPPE-Encryption-Types (RFC 2548 §2.4.5): a bit set; 4 is 128-bit RC4.
pub const MS_MPPE_ENCRYPTION_TYPES: u8 = 8;
/// MS-MPPE-Send-Key (RFC 2548 §2.4.2).
pub const MS_MPPE_SEND_KEY: u8 = 16;
/// MS-MPPE-Recv-Key (RFC 2548 §2.4.3).
pub const MS_MPPE_RECV_KEY: u8 = 17;

/// MikroTik's SMI enterprise number.
pub const VENDOR_MIKROTIK: u32 = 14988;
/// Mikrotik-Rate-Limit: `rx/tx` as the router sees it.
pub const MIKROTIK_RATE_LIMIT: u8 = 8;

/// One attribute as it sits in a packet: its type and where its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute {
    /// The attribute type.
    pub typ: u8,
    /// Offset of the value from the start of the packet.
    pub value_offset: usize,
    /// Length of the value (the attribute's Length minus 2).
    pub value_len: usize,
}

/// The attributes of `packet` (header included, cut at its Length), in order. Stops at
/// the first attribute whose length does not fit; callers that need to know decode
/// with `Packet::decode` first, which refuses such packets.
pub fn raw_attributes(packet: &[u8]) -> impl Iterator<Item = RawAttribute> + '_ {
    let mut at = HEADER_LEN;
    std::iter::from_fn(move || {
        let typ = *packet.get(at)?;
        let len = usize::from(*packet.get(at + 1)?);
        if len < 2 || at + len > packet.len() {
            return None;
        }
        let attr = RawAttribute {
            typ,
            value_offset: at + 2,
            value_len: len - 2,
        };
        at += len;
        Some(attr)
    })
}

/// Where the value of the packet's Message-Authenticator is, if it has one.
///
/// RFC 3579 §3.2 allows at most one, of exactly 16 octets; anything else is malformed
/// rather than "absent", so a packet cannot dodge verification by carrying a bad one.
pub fn message_authenticator_offset(packet: &[u8]) -> Result<Option<usize>> {
    let mut found = None;
    for attr in raw_attributes(packet).filter(|a| a.typ == MESSAGE_AUTHENTICATOR) {
        if found.is_some() {
            return Err(Error::Malformed("more than one Message-Authenticator"));
        }
        if attr.value_len != 16 {
            return Err(Error::Malformed("Message-Authenticator is not 16 octets"));
        }
        found = Some(attr.value_offset);
    }
    Ok(found)
}

/// The sub-attributes `(type, value)` of every Vendor-Specific attribute of `vendor` in
/// `packet`, in order. A Vendor-Specific attribute whose sub-attributes do not follow
/// the RFC 2865 §5.26 layout is skipped whole: some vendors use other layouts, and such
/// a value is not one we understand.
pub fn vendor_attributes(packet: &Packet, vendor: u32) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    for avp in packet.lookup_all(VENDOR_SPECIFIC) {
        let value = avp.encode_bytes();
        if let Some(subs) = split_vendor_specific(&value, vendor) {
            out.extend(subs);
        }
    }
    out
}

/// The first sub-attribute `typ` of `vendor` in `packet`.
pub fn vendor_attribute(packet: &Packet, vendor: u32, typ: u8) -> Option<Vec<u8>> {
    vendor_attributes(packet, vendor)
        .into_iter()
        .find(|(t, _)| *t == typ)
        .map(|(_, v)| v)
}

fn split_vendor_specific(value: &[u8], vendor: u32) -> Option<Vec<(u8, Vec<u8>)>> {
    let (id, mut rest) = value.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*id) != vendor {
        return None;
    }
    let mut subs = Vec::new();
    while !rest.is_empty() {
        let [typ, len, ..] = *rest else { return None };
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            return None;
        }
        subs.push((typ, rest[2..len].to_vec()));
        rest = &rest[len..];
    }
    Some(subs)
}

/// A Vendor-Specific attribute carrying one sub-attribute with a binary value (the
/// crate's `StringVSA` only takes `&str`, and MS-CHAP2-Success starts with a raw byte).
///
/// Values longer than 247 octets do not fit one attribute; the caller only builds short
/// ones, and the codec refuses a too-long attribute at encode time rather than truncating.
pub fn vendor_specific(vendor: u32, typ: u8, value: &[u8]) -> AVP {
    let mut bytes = Vec::with_capacity(6 + value.len());
    bytes.extend_from_slice(&vendor.to_be_bytes());
    bytes.push(typ);
    // Saturate rather than wrap: a wrapped length would make a well-framed but wrong
    // packet, while an oversized value makes the codec refuse the whole attribute.
    bytes.push(u8::try_from(value.len() + 2).unwrap_or(u8::MAX));
    bytes.extend_from_slice(value);
    AVP::from_bytes(VENDOR_SPECIFIC, &bytes)
}

/// Reads a 4-octet integer attribute value.
pub(crate) fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(
        *value.first_chunk::<4>().filter(|_| value.len() == 4)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::code::Code;

    #[test]
    fn walks_raw_attributes_and_stops_at_bad_framing() {
        let mut p = vec![1, 7, 0, 0];
        p.extend([0u8; 16]);
        p.extend([1, 5, b'b', b'o', b'b']);
        p.extend([80, 18]);
        p.extend([0xAA; 16]);
        p.extend([9, 1]); // length 1 is invalid
        let attrs: Vec<_> = raw_attributes(&p).collect();
        assert_eq!(
            attrs,
            [
                RawAttribute {
                    typ: 1,
                    value_offset: 22,
                    value_len: 3
                },
                RawAttribute {
                    typ: 80,
                    value_offset: 27,
                    value_len: 16
                }
            ]
        );
        assert_eq!(message_authenticator_offset(&p).unwrap(), Some(27));
    }

    #[test]
    fn refuses_duplicate_or_short_message_authenticator() {
        let mut p = vec![1, 7, 0, 0];
        p.extend([0u8; 16]);
        let mut twice = p.clone();
        for _ in 0..2 {
            twice.extend([80, 18]);
            twice.extend([0u8; 16]);
        }
        assert!(message_authenticator_offset(&twice).is_err());
        let mut short = p.clone();
        short.extend([80, 6, 0, 0, 0, 0]);
        assert!(message_authenticator_offset(&short).is_err());
        assert_eq!(message_authenticator_offset(&p).unwrap(), None);
    }

    #[test]
    fn vendor_specific_round_trips_through_the_codec() {
        let mut packet = Packet::new(Code::AccessAccept, b"s");
        packet.add(vendor_specific(
            VENDOR_MICROSOFT,
            MS_CHAP2_SUCCESS,
            b"\x07S=00",
        ));
        packet.add(vendor_specific(
            VENDOR_MIKROTIK,
            MIKROTIK_RATE_LIMIT,
            b"1k/2k",
        ));
        let bytes = packet.encode().unwrap();
        let decoded = Packet::decode(&bytes, b"s").unwrap();
        assert_eq!(
            vendor_attribute(&decoded, VENDOR_MICROSOFT, MS_CHAP2_SUCCESS).as_deref(),
            Some(&b"\x07S=00"[..])
        );
        assert_eq!(
            vendor_attribute(&decoded, VENDOR_MIKROTIK, MIKROTIK_RATE_LIMIT).as_deref(),
            Some(&b"1k/2k"[..])
        );
        assert_eq!(vendor_attribute(&decoded, VENDOR_MIKROTIK, 1), None);
    }

    #[test]
    fn splits_several_sub_attributes_and_skips_foreign_layouts() {
        let mut v = VENDOR_MICROSOFT.to_be_bytes().to_vec();
        v.extend([11, 4, 1, 2, 25, 3, 9]);
        assert_eq!(
            split_vendor_specific(&v, VENDOR_MICROSOFT),
            Some(vec![(11, vec![1, 2]), (25, vec![9])])
        );
        assert_eq!(split_vendor_specific(&v, VENDOR_MIKROTIK), None);
        let mut bad = VENDOR_MICROSOFT.to_be_bytes().to_vec();
        bad.extend([11, 9, 1]);
        assert_eq!(split_vendor_specific(&bad, VENDOR_MICROSOFT), None);
        assert_eq!(split_vendor_specific(&[0, 0], VENDOR_MICROSOFT), None);
    }

    #[test]
    fn reads_only_four_octet_integers() {
        assert_eq!(u32_value(&[0, 0, 1, 0]), Some(256));
        assert_eq!(u32_value(&[0, 0, 1]), None);
        assert_eq!(u32_value(&[0, 0, 1, 0, 0]), None);
    }
}
