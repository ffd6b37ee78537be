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

/// The pattern every `name` field declares (reseller, site, NAS, plan, user, token):
/// at least one character that is neither a space nor a control character, and no
/// control character. It is what `db::tenant::validate_name` accepts (a test holds the
/// two together, and that every `name` in the document declares exactly this). Spaces
/// are listed rather than written `\s`, whose meaning differs between regex engines.
pub const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$";

/// A `name` (reseller, site, NAS, plan, user, token): 1 to 120 characters matching
/// [`NAME_PATTERN`]; read by `db::tenant::validate_name`.
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        text(120).into()
    }
}
impl utoipa::ToSchema for Name {}

/// A reason shown on statements (refund, adjustment): 1 to 500 characters matching
/// [`NAME_PATTERN`]; read by `http::balances::note` as required.
pub struct Reason;

impl utoipa::PartialSchema for Reason {
    fn schema() -> RefOr<Schema> {
        text(500).into()
    }
}
impl utoipa::ToSchema for Reason {}

/// A string of 1 to `max` characters that [`NAME_PATTERN`] admits.
fn text(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(NAME_PATTERN))
}

/// A TCP port a WAN check connects to: 1 to 65535.
pub struct TcpPort;

impl utoipa::PartialSchema for TcpPort {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(65535))
            .into()
    }
}
impl utoipa::ToSchema for TcpPort {}

/// The most TCP ports one plan or subscriber may have probed.
pub const MAX_TCP_PORTS: usize = 16;

/// Checks a list of WAN-check ports (at most [`MAX_TCP_PORTS`], none 0) and gives it as
/// stored: sorted, without repeats, as a JSON array.
pub fn tcp_ports_json(ports: &[u16]) -> crate::error::Result<String> {
    if ports.len() > MAX_TCP_PORTS || ports.contains(&0) {
        return Err(crate::error::Error::invalid(format!(
            "wan_tcp_ports holds at most {MAX_TCP_PORTS} ports, each 1 to 65535"
        )));
    }
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    Ok(serde_json::to_string(&p).expect("a list of numbers serializes"))
}

/// Reads a stored list of WAN-check ports (`None` when none is set).
pub fn tcp_ports_read(stored: Option<String>) -> Option<Vec<u16>> {
    stored.and_then(|s| serde_json::from_str(&s).ok())
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

/// An address block a reseller's logins may come from: an IPv4 or IPv6 address, or a
/// CIDR block of either (`203.0.113.0/24`, `2001:db8::/32`). Written as
/// [`ip_block_pattern`] says, and read by [`parse_ip_block`] with that same pattern.
pub struct IpBlock;

/// The pattern of [`IpBlock`]: dotted decimal without leading zeros, or IPv6 in its
/// eight-group and `::` forms (no embedded IPv4, no zone), each with an optional prefix
/// length in range, without leading zeros.
pub fn ip_block_pattern() -> String {
    let o = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let v4 = format!("{o}(?:\\.{o}){{3}}");
    let h = "[0-9A-Fa-f]{1,4}";
    let v6 = [
        format!("(?:{h}:){{7}}{h}"),
        format!("(?:{h}:){{1,7}}:"),
        format!("(?:{h}:){{1,6}}:{h}"),
        format!("(?:{h}:){{1,5}}(?::{h}){{1,2}}"),
        format!("(?:{h}:){{1,4}}(?::{h}){{1,3}}"),
        format!("(?:{h}:){{1,3}}(?::{h}){{1,4}}"),
        format!("(?:{h}:){{1,2}}(?::{h}){{1,5}}"),
        format!("{h}:(?::{h}){{1,6}}"),
        format!(":(?:(?::{h}){{1,7}}|:)"),
    ]
    .join("|");
    let p4 = "(?:3[0-2]|[12]?[0-9])";
    let p6 = "(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])";
    format!("^(?:{v4}(?:/{p4})?|(?:{v6})(?:/{p6})?)$")
}

fn ip_block_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(&ip_block_pattern()).expect("the pattern compiles"))
}

/// Reads an [`IpBlock`]: `None` unless it is written as the pattern says. A bare address
/// is the block of that one host; host bits of a block are cleared.
pub fn parse_ip_block(s: &str) -> Option<ipnet::IpNet> {
    if !ip_block_re().is_match(s) {
        return None;
    }
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
        .map(|n| n.trunc())
}

impl utoipa::PartialSchema for IpBlock {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ip_block_pattern()))
            .description(Some(
                "An IPv4 or IPv6 address, or a CIDR block of either (203.0.113.0/24, 2001:db8::/32)",
            ))
            .examples([serde_json::json!("203.0.113.0/24")])
            .into()
    }
}
impl utoipa::ToSchema for IpBlock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_their_pattern_says() {
        let re = regex::Regex::new(NAME_PATTERN).unwrap();
        let mut odd: Vec<char> = (0u32..0x3100).filter_map(char::from_u32).collect();
        odd.extend(['\u{FEFF}', '\u{200B}', '\u{180E}']);
        for c in odd {
            for s in [
                format!("{c}"),
                format!("a{c}"),
                format!("{c}a{c}"),
                format!("{c}{c}"),
            ] {
                let server = crate::db::tenant::validate_name("name", &s, 120).is_ok();
                assert_eq!(re.is_match(&s), server, "{s:?} (U+{:04X})", c as u32);
            }
        }
    }

    #[test]
    fn every_name_in_the_document_declares_the_name_pattern() {
        let (_, spec) = crate::http::api_router().split_for_parts();
        let doc = serde_json::to_value(&spec).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert_eq!(schemas["Name"]["pattern"], NAME_PATTERN);
        assert_eq!(schemas["Name"]["maxLength"], 120);
        assert_eq!(schemas["Reason"]["pattern"], NAME_PATTERN);
        // A `name` is the Name schema, directly or as `oneOf [null, Name]` in a patch.
        let refers_to_name = |v: &serde_json::Value| {
            v["$ref"] == "#/components/schemas/Name"
                || v["oneOf"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["$ref"] == "#/components/schemas/Name"))
        };
        let mut seen = 0;
        for (schema_name, schema) in schemas {
            // Other things called name: a brand's (optional text, "" clears it) and a
            // subscriber's (the person's name, optional).
            if ["BrandSettings", "NewSubscriber", "SubscriberPatch"].contains(&schema_name.as_str())
            {
                continue;
            }
            let name = &schema["properties"]["name"];
            // Responses' names are plain strings; what a request declares is a rule.
            if name.is_null()
                || name
                    .as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "type" || k == "description"))
            {
                continue;
            }
            assert!(
                refers_to_name(name) && name.get("pattern").is_none(),
                "{schema_name}.name is {name}"
            );
            seen += 1;
        }
        assert!(seen >= 8, "{seen} name fields");
    }

    #[test]
    fn every_block_the_pattern_admits_is_read() {
        use rand::{Rng, SeedableRng};
        let re = regex::Regex::new(&ip_block_pattern()).unwrap();
        for s in [
            "203.0.113.0/24",
            "203.0.113.7",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::",
            "::1",
            "::/0",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "1::8",
            "fe80::1/64",
            "ABCD::ef/128",
        ] {
            assert!(re.is_match(s), "{s}");
            assert!(parse_ip_block(s).is_some(), "{s}");
        }
        for s in [
            "",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "010.0.0.1",
            "1.2.3",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "::/129",
            "::/01",
            "12345::",
            "g::",
        ] {
            assert!(!re.is_match(s), "{s}");
            assert!(parse_ip_block(s).is_none(), "{s}");
        }
        // Random strings of the characters addresses are made of: whatever the pattern
        // admits, the parser reads.
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let alphabet = b"0123456789abcdefABCDEF:./";
        let mut admitted = 0;
        for _ in 0..200_000 {
            let n = rng.gen_range(1..=24);
            let s: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect();
            if re.is_match(&s) {
                admitted += 1;
                assert!(
                    s.parse::<ipnet::IpNet>().is_ok() || s.parse::<std::net::IpAddr>().is_ok(),
                    "{s} matches the pattern but does not parse"
                );
            }
        }
        assert!(admitted > 0);
    }

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
