//! Schemas of request values whose rules JSON Schema has no one keyword for. Each is a
//! marker named in a field's `#[schema(value_type = …)]`; the field keeps its Rust type,
//! and the code that reads it enforces the same rule (named on each marker).

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};

fn string_format(f: KnownFormat) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(f)))
}

/// An IPv4 or IPv6 address (read as `std::net::IpAddr`).
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(string_format(KnownFormat::Ipv4))
            .item(string_format(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address"))
            .into()
    }
}
impl utoipa::ToSchema for IpAddress {}

/// An IPv4 address a subscriber can be given: not 0.0.0.0, 255.255.255.255, loopback
/// (127/8) or multicast (224/4); read by `db::subscriber::parse_ipv4`.
pub struct SubscriberIpv4;

/// The pattern of [`SubscriberIpv4`], in dotted decimal without leading zeros.
pub fn subscriber_ipv4_pattern() -> String {
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let nonzero = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]?)";
    let not255 = "(?:25[0-4]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    // First octets that may be anything after: 1-126, 128-223, 240-254.
    let first = "(?:[1-9]|[1-9][0-9]|1[01][0-9]|12[0-6]|12[89]|1[3-9][0-9]|2[01][0-9]|22[0-3]|24[0-9]|25[0-4])";
    format!(
        "^(?:{first}\\.{octet}\\.{octet}\\.{octet}\
         |0\\.(?:{nonzero}\\.{octet}\\.{octet}|0\\.(?:{nonzero}\\.{octet}|0\\.{nonzero}))\
         |255\\.(?:{not255}\\.{octet}\\.{octet}|255\\.(?:{not255}\\.{octet}|255\\.{not255})))$"
    )
}

impl utoipa::PartialSchema for SubscriberIpv4 {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(subscriber_ipv4_pattern()))
            .description(Some(
                "An IPv4 address, not 0.0.0.0, 255.255.255.255, loopback or multicast",
            ))
            .examples([serde_json::json!("198.51.100.23")])
            .into()
    }
}
impl utoipa::ToSchema for SubscriberIpv4 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_address_pattern_is_what_parse_ipv4_accepts() {
        let re = regex::Regex::new(&subscriber_ipv4_pattern()).unwrap();
        let mut seen = 0;
        for a in [
            0u8, 1, 9, 10, 99, 100, 126, 127, 128, 199, 200, 223, 224, 239, 240, 254, 255,
        ] {
            for b in [0u8, 1, 255] {
                for c in [0u8, 254, 255] {
                    for d in [0u8, 1, 254, 255] {
                        let s = format!("{a}.{b}.{c}.{d}");
                        let server = crate::db::subscriber::parse_ipv4(&s).is_ok();
                        assert_eq!(re.is_match(&s), server, "{s}");
                        seen += 1;
                    }
                }
            }
        }
        for s in [
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            " 1.2.3.4",
            "1.2.3.4 ",
            "256.1.1.1",
            "a.b.c.d",
            "",
        ] {
            assert!(!re.is_match(s), "{s}");
            assert!(crate::db::subscriber::parse_ipv4(s).is_err(), "{s}");
        }
        assert!(seen > 500);
    }
}
