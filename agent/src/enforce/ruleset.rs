//! The enforcement ruleset as plain data: what the `inet outpost` table holds apart from
//! the elements of its two sets. Nothing here talks to the kernel; [`super::nft`] applies it.
//!
//! ```text
//! table inet outpost {
//!   set blocked4 { type ipv4_addr; size 1048576; }      # the addresses cut off
//!   set blocked6 { type ipv6_addr; size 1048576; }
//!   chain forward { type filter hook forward priority -10; policy accept;
//!     ip saddr @blocked4 goto blocked_out4               # every packet, so open flows die too
//!     ip6 saddr @blocked6 goto blocked_out6
//!     ip daddr @blocked4 goto blocked_in4
//!     ip6 daddr @blocked6 goto blocked_in6 }
//!   chain blocked_out4 {                                 # from a blocked subscriber
//!     ip daddr { <resolvers> } udp dport 53 accept
//!     ip daddr { <resolvers> } tcp dport 53 accept
//!     ip daddr { <allow> } accept
//!     meta l4proto tcp counter reject with tcp reset
//!     counter drop }
//!   chain blocked_in4 {                                  # towards a blocked subscriber
//!     ip saddr { <resolvers> } udp sport 53 accept
//!     ip saddr { <resolvers> } tcp sport 53 accept
//!     ip saddr { <allow> } accept
//!     counter drop }
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     [iifname { <subscriber_interfaces> }] ip saddr @blocked4 ip daddr != { <allow> }
//!       tcp dport 80 counter redirect to :<portal_port> }
//!   (and the ip6 twins)
//! }
//! ```
//!
//! The forward chain hooks at priority -10, before the usual `filter` (0), so a blocked
//! subscriber is handled before any operator rule accepts the flow. Nothing filters the
//! box's own input: DHCP, the portal and the agent itself keep working. The redirected
//! portal connection arrives at the `input` hook on `portal_port`; a box whose own input
//! policy is restrictive must accept that port itself (that table is the operator's).
//!
//! The first rule of `forward` carries a comment with a fingerprint of the whole
//! skeleton, so a later start can tell "in place and current" from "missing or
//! different" with one terse listing, without comparing nft's normalised expressions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem,
};
use nftables::schema::{
    Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Set, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, Match, NAT, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the IPv4 set of blocked addresses.
pub const SET4: &str = "blocked4";
/// Name of the IPv6 set of blocked addresses.
pub const SET6: &str = "blocked6";
/// Priority of the forward chain: before `filter` (0), so we decide first.
pub const FORWARD_PRIORITY: i32 = -10;
/// Priority of the NAT chain: `dstnat`.
pub const DSTNAT_PRIORITY: i32 = -100;
/// The prefix of the fingerprint comment on the first rule of `forward`.
pub const FINGERPRINT_PREFIX: &str = "outpost skeleton ";
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The `[enforce]` section of the agent's config: how the agent cuts off subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforceConfig {
    /// The one nftables table (family `inet`) the agent owns. Default `outpost`.
    #[serde(default = "default_table")]
    pub table: String,
    /// DNS servers a blocked subscriber may still reach (UDP and TCP port 53).
    #[serde(default)]
    pub resolvers: Vec<IpAddr>,
    /// Networks (CIDR) a blocked subscriber may still reach, e.g. the payment portal.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Local port of the "service suspended" page on this box; a blocked subscriber's
    /// HTTP (TCP 80) is redirected here. Default 8081.
    #[serde(default = "default_portal_port")]
    pub portal_port: u16,
    /// When set, the HTTP redirect only applies to traffic entering from these
    /// interfaces (the subscriber side). Blocking itself applies everywhere.
    #[serde(default)]
    pub subscriber_interfaces: Vec<String>,
    /// Capacity of each set (declared `size`; the kernel refuses elements beyond it).
    /// Default 1,048,576.
    #[serde(default = "default_set_size")]
    pub set_size: u32,
}

fn default_table() -> String {
    "outpost".into()
}
fn default_portal_port() -> u16 {
    8081
}
fn default_set_size() -> u32 {
    1 << 20
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            table: default_table(),
            resolvers: Vec::new(),
            allow: Vec::new(),
            portal_port: default_portal_port(),
            subscriber_interfaces: Vec::new(),
            set_size: default_set_size(),
        }
    }
}

/// A config that cannot make a ruleset.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The table name is empty, too long, or has characters nft would need quoted.
    #[error("enforce.table {0:?}: use 1 to 64 of [A-Za-z0-9_-], starting with a letter")]
    TableName(String),
    /// An interface name the kernel would refuse.
    #[error(
        "enforce.subscriber_interfaces: {0:?} is not an interface name (1 to 15 of [A-Za-z0-9_.-])"
    )]
    InterfaceName(String),
    /// Port 0 cannot be redirected to.
    #[error("enforce.portal_port must not be 0")]
    PortalPort,
    /// A set of size 0 cannot hold anyone.
    #[error("enforce.set_size must be at least 1")]
    SetSize,
}

impl EnforceConfig {
    /// Checks what serde cannot: names the kernel accepts, a usable port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.table;
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.starts_with(|c: char| c.is_ascii_alphabetic())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ConfigError::TableName(t.clone()));
        }
        for i in &self.subscriber_interfaces {
            let ok = !i.is_empty()
                && i.len() <= IFNAME_MAX
                && i.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(ConfigError::InterfaceName(i.clone()));
            }
        }
        if self.portal_port == 0 {
            return Err(ConfigError::PortalPort);
        }
        if self.set_size == 0 {
            return Err(ConfigError::SetSize);
        }
        Ok(())
    }
}

/// One chain of the skeleton: its declaration and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// The declaration (hook, type and priority for base chains).
    pub chain: Chain<'static>,
    /// The rules, first to last.
    pub rules: Vec<Rule<'static>>,
}

/// Everything in our table except set elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The table.
    pub table: Table<'static>,
    /// `blocked4` and `blocked6`.
    pub sets: Vec<Set<'static>>,
    /// Chains in the order they must be created (jump targets first).
    pub chains: Vec<ChainSpec>,
    /// Hex digest over the above; carried in the comment of the first `forward` rule.
    pub fingerprint: String,
}

/// What exists of our table in the kernel (read by [`super::netlink::Conn::table_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Chain name to its number of rules.
    pub chains: BTreeMap<String, usize>,
    /// Set name to its key type as nft prints it (`ipv4_addr`).
    pub sets: BTreeMap<String, String>,
    /// Comments of rules in `forward`.
    pub forward_comments: Vec<String>,
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}
fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}
fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}
fn anon_set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}
fn net_expr(net: &IpNet) -> Expression<'static> {
    if net.prefix_len() == net.max_prefix_len() {
        s(net.addr().to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(net.trunc().addr().to_string())),
            len: u32::from(net.prefix_len()),
        }))
    }
}
fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

/// One address family's view of the config.
struct Family {
    /// `ip` or `ip6`.
    proto: &'static str,
    set: &'static str,
    suffix: &'static str,
    resolvers: Vec<Expression<'static>>,
    allow: Vec<Expression<'static>>,
}

impl Ruleset {
    /// Builds the ruleset for a validated config.
    pub fn new(cfg: &EnforceConfig) -> Result<Ruleset, ConfigError> {
        cfg.validate()?;
        let table_name = cfg.table.clone();
        let families = [
            Family {
                proto: "ip",
                set: SET4,
                suffix: "4",
                resolvers: cfg
                    .resolvers
                    .iter()
                    .filter(|a| a.is_ipv4())
                    .map(|a| s(a.to_string()))
                    .collect(),
                allow: cfg
                    .allow
                    .iter()
                    .filter(|n| matches!(n, IpNet::V4(_)))
                    .map(net_expr)
                    .collect(),
            },
            Family {
                proto: "ip6",
                set: SET6,
                suffix: "6",
                resolvers: cfg
                    .resolvers
                    .iter()
                    .filter(|a| a.is_ipv6())
                    .map(|a| s(a.to_string()))
                    .collect(),
                allow: cfg
                    .allow
                    .iter()
                    .filter(|n| matches!(n, IpNet::V6(_)))
                    .map(net_expr)
                    .collect(),
            },
        ];
        let chain = |name: &str| Chain {
            family: NfFamily::INet,
            table: Cow::Owned(table_name.clone()),
            name: Cow::Owned(name.to_string()),
            ..Chain::default()
        };
        let rule = |chain: &str, expr: Vec<Statement<'static>>| Rule {
            family: NfFamily::INet,
            table: Cow::Owned(table_name.clone()),
            chain: Cow::Owned(chain.to_string()),
            expr: Cow::Owned(expr),
            ..Rule::default()
        };

        let mut chains = Vec::new();
        let mut forward_rules = Vec::new();
        let mut prerouting_rules = Vec::new();
        for f in &families {
            let out = format!("blocked_out{}", f.suffix);
            let inn = format!("blocked_in{}", f.suffix);
            let set_ref = s(format!("@{}", f.set));
            let addr_in = |field: &'static str, addrs: &[Expression<'static>]| {
                matches(
                    payload(f.proto, field),
                    Operator::EQ,
                    anon_set(addrs.to_vec()),
                )
            };

            let mut out_rules = Vec::new();
            let mut in_rules = Vec::new();
            if !f.resolvers.is_empty() {
                for l4 in ["udp", "tcp"] {
                    out_rules.push(rule(
                        &out,
                        vec![
                            addr_in("daddr", &f.resolvers),
                            matches(payload(l4, "dport"), Operator::EQ, Expression::Number(53)),
                            Statement::Accept(None),
                        ],
                    ));
                    in_rules.push(rule(
                        &inn,
                        vec![
                            addr_in("saddr", &f.resolvers),
                            matches(payload(l4, "sport"), Operator::EQ, Expression::Number(53)),
                            Statement::Accept(None),
                        ],
                    ));
                }
            }
            if !f.allow.is_empty() {
                out_rules.push(rule(
                    &out,
                    vec![addr_in("daddr", &f.allow), Statement::Accept(None)],
                ));
                in_rules.push(rule(
                    &inn,
                    vec![addr_in("saddr", &f.allow), Statement::Accept(None)],
                ));
            }
            // A reset ends the subscriber's TCP at once instead of leaving it to time out.
            out_rules.push(rule(
                &out,
                vec![
                    matches(
                        Expression::Named(NamedExpression::Meta(Meta {
                            key: MetaKey::L4proto,
                        })),
                        Operator::EQ,
                        s("tcp"),
                    ),
                    counter(),
                    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
                ],
            ));
            out_rules.push(rule(&out, vec![counter(), Statement::Drop(None)]));
            in_rules.push(rule(&inn, vec![counter(), Statement::Drop(None)]));
            chains.push(ChainSpec {
                chain: chain(&out),
                rules: out_rules,
            });
            chains.push(ChainSpec {
                chain: chain(&inn),
                rules: in_rules,
            });

            forward_rules.push((f.proto, "saddr", set_ref.clone(), out));
            forward_rules.push((f.proto, "daddr", set_ref.clone(), inn));

            let mut redirect = Vec::new();
            if !cfg.subscriber_interfaces.is_empty() {
                redirect.push(matches(
                    Expression::Named(NamedExpression::Meta(Meta {
                        key: MetaKey::Iifname,
                    })),
                    Operator::EQ,
                    anon_set(
                        cfg.subscriber_interfaces
                            .iter()
                            .map(|i| s(i.clone()))
                            .collect(),
                    ),
                ));
            }
            redirect.push(matches(payload(f.proto, "saddr"), Operator::EQ, set_ref));
            if !f.allow.is_empty() {
                redirect.push(matches(
                    payload(f.proto, "daddr"),
                    Operator::NEQ,
                    anon_set(f.allow.clone()),
                ));
            }
            redirect.push(matches(
                payload("tcp", "dport"),
                Operator::EQ,
                Expression::Number(80),
            ));
            redirect.push(counter());
            redirect.push(Statement::Redirect(Some(NAT {
                addr: None,
                family: None,
                port: Some(Expression::Number(u32::from(cfg.portal_port))),
                flags: None,
            })));
            prerouting_rules.push(rule("prerouting", redirect));
        }
        // Sources first: a packet between two blocked subscribers is handled as "from a
        // blocked address", which never lets it through to anything but DNS/allowed.
        forward_rules.sort_by_key(|(_, dir, _, _)| if *dir == "saddr" { 0 } else { 1 });
        let forward_rules: Vec<Rule<'static>> = forward_rules
            .into_iter()
            .map(|(proto, dir, set_ref, target)| {
                rule(
                    "forward",
                    vec![
                        matches(payload(proto, dir), Operator::EQ, set_ref),
                        Statement::Goto(nftables::stmt::JumpTarget {
                            target: Cow::Owned(target),
                        }),
                    ],
                )
            })
            .collect();
        chains.push(ChainSpec {
            chain: Chain {
                _type: Some(NfChainType::Filter),
                hook: Some(NfHook::Forward),
                prio: Some(FORWARD_PRIORITY),
                policy: Some(NfChainPolicy::Accept),
                ..chain("forward")
            },
            rules: forward_rules,
        });
        chains.push(ChainSpec {
            chain: Chain {
                _type: Some(NfChainType::NAT),
                hook: Some(NfHook::Prerouting),
                prio: Some(DSTNAT_PRIORITY),
                policy: Some(NfChainPolicy::Accept),
                ..chain("prerouting")
            },
            rules: prerouting_rules,
        });

        let set = |name: &'static str, ty: SetType| Set {
            family: NfFamily::INet,
            table: Cow::Owned(table_name.clone()),
            name: Cow::Borrowed(name),
            set_type: SetTypeValue::Single(ty),
            size: Some(cfg.set_size),
            ..Set::default()
        };
        let mut rs = Ruleset {
            table: Table {
                family: NfFamily::INet,
                name: Cow::Owned(table_name.clone()),
                handle: None,
            },
            sets: vec![set(SET4, SetType::Ipv4Addr), set(SET6, SetType::Ipv6Addr)],
            chains,
            fingerprint: String::new(),
        };
        rs.fingerprint = rs.compute_fingerprint();
        let comment = format!("{FINGERPRINT_PREFIX}{}", rs.fingerprint);
        let forward = rs
            .chains
            .iter_mut()
            .find(|c| c.chain.name == "forward")
            .expect("built above");
        forward.rules[0].comment = Some(Cow::Owned(comment));
        Ok(rs)
    }

    fn compute_fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&self.table).expect("serialisable"));
        for set in &self.sets {
            h.update(serde_json::to_vec(set).expect("serialisable"));
        }
        for c in &self.chains {
            h.update(serde_json::to_vec(&c.chain).expect("serialisable"));
            for r in &c.rules {
                h.update(serde_json::to_vec(r).expect("serialisable"));
            }
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table.name
    }

    /// Whether `existing` is this skeleton: every set and chain with the right number of
    /// rules, nothing else, and the current fingerprint on `forward`.
    pub fn is_current(&self, existing: &Existing) -> bool {
        self.differences(existing).is_empty()
    }

    /// How `existing` differs from this skeleton, in words (empty when it is current).
    pub fn differences(&self, existing: &Existing) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sets {
            let want = set_type_name(&s.set_type);
            match existing.sets.get(s.name.as_ref()) {
                None => out.push(format!("set {} missing", s.name)),
                Some(t) if *t != want => {
                    out.push(format!("set {} has type {t}, not {want}", s.name))
                }
                Some(_) => {}
            }
        }
        for name in existing.sets.keys() {
            if !self.sets.iter().any(|s| s.name == name.as_str()) {
                out.push(format!("unexpected set {name}"));
            }
        }
        for c in &self.chains {
            match existing.chains.get(c.chain.name.as_ref()) {
                None => out.push(format!("chain {} missing", c.chain.name)),
                Some(n) if *n != c.rules.len() => out.push(format!(
                    "chain {} has {n} rules, not {}",
                    c.chain.name,
                    c.rules.len()
                )),
                Some(_) => {}
            }
        }
        for name in existing.chains.keys() {
            if !self.chains.iter().any(|c| c.chain.name == name.as_str()) {
                out.push(format!("unexpected chain {name}"));
            }
        }
        let comment = format!("{FINGERPRINT_PREFIX}{}", self.fingerprint);
        if !existing.forward_comments.contains(&comment) {
            out.push(format!(
                "forward lacks the comment {comment:?} (has {:?})",
                existing.forward_comments
            ));
        }
        out
    }

    /// One atomic batch that turns whatever `existing` holds of our table into this
    /// skeleton while keeping the elements of `blocked4`/`blocked6`: chains are flushed,
    /// deleted and recreated (a base chain's hook or priority cannot be changed in place),
    /// sets are only added (a no-op when they exist), foreign objects in our table are
    /// removed. Since nft sends it as one transaction, no packet ever sees a half-state.
    pub fn rewrite_batch(&self, existing: &Existing) -> Nftables<'static> {
        let mut b = Batch::new();
        b.add(NfListObject::Table(self.table.clone()));
        for set in &self.sets {
            b.add(NfListObject::Set(Box::new(set.clone())));
        }
        let chain_ref = |name: &str| Chain {
            family: NfFamily::INet,
            table: self.table.name.clone(),
            name: Cow::Owned(name.to_string()),
            ..Chain::default()
        };
        // Rules first, so no goto keeps a chain busy when it is deleted.
        for name in existing.chains.keys() {
            b.add_cmd(NfCmd::Flush(FlushObject::Chain(chain_ref(name))));
        }
        for name in existing.chains.keys() {
            b.delete(NfListObject::Chain(chain_ref(name)));
        }
        for name in existing.sets.keys() {
            if !self.sets.iter().any(|s| s.name == name.as_str()) {
                b.delete(NfListObject::Set(Box::new(Set {
                    family: NfFamily::INet,
                    table: self.table.name.clone(),
                    name: Cow::Owned(name.clone()),
                    ..Set::default()
                })));
            }
        }
        for c in &self.chains {
            b.add(NfListObject::Chain(c.chain.clone()));
        }
        for c in &self.chains {
            for r in &c.rules {
                b.add(NfListObject::Rule(r.clone()));
            }
        }
        b.to_nftables()
    }
}

fn set_type_name(t: &SetTypeValue) -> String {
    match t {
        SetTypeValue::Single(SetType::Ipv4Addr) => "ipv4_addr".into(),
        SetTypeValue::Single(SetType::Ipv6Addr) => "ipv6_addr".into(),
        other => serde_json::to_value(other)
            .map(|v| v.to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn cfg() -> EnforceConfig {
        EnforceConfig {
            table: "outpost".into(),
            resolvers: vec![
                "192.0.2.53".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ],
            allow: vec![
                "198.51.100.0/24".parse().unwrap(),
                "2001:db8:1::/48".parse().unwrap(),
            ],
            portal_port: 8081,
            subscriber_interfaces: vec!["eth1".into()],
            set_size: 1 << 20,
        }
    }

    fn rules_json(rs: &Ruleset, chain: &str) -> Vec<Value> {
        rs.chains
            .iter()
            .find(|c| c.chain.name == chain)
            .unwrap_or_else(|| panic!("no chain {chain}"))
            .rules
            .iter()
            .map(|r| serde_json::to_value(&r.expr).unwrap())
            .collect()
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: EnforceConfig = toml::from_str("").unwrap();
        assert_eq!(c, EnforceConfig::default());
        assert_eq!(
            (c.table.as_str(), c.portal_port, c.set_size),
            ("outpost", 8081, 1 << 20)
        );
        let err = toml::from_str::<EnforceConfig>("tabel = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<EnforceConfig>("allow = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(
            err.to_string().contains("allow") || err.to_string().contains("invalid"),
            "{err}"
        );
        let c: EnforceConfig = toml::from_str(
            "table = \"t1\"\nresolvers = [\"192.0.2.53\"]\nallow = [\"198.51.100.0/24\"]\nportal_port = 9000\nsubscriber_interfaces = [\"eth1\"]",
        )
        .unwrap();
        assert_eq!(c.allow, vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn bad_names_are_refused() {
        for t in ["", "1abc", "a b", "a\"b", &"x".repeat(65)] {
            let c = EnforceConfig {
                table: t.into(),
                ..EnforceConfig::default()
            };
            assert_eq!(Ruleset::new(&c), Err(ConfigError::TableName(t.into())));
        }
        let c = EnforceConfig {
            subscriber_interfaces: vec!["a-very-long-ifname".into()],
            ..EnforceConfig::default()
        };
        assert!(matches!(
            Ruleset::new(&c),
            Err(ConfigError::InterfaceName(_))
        ));
        let c = EnforceConfig {
            portal_port: 0,
            ..EnforceConfig::default()
        };
        assert_eq!(Ruleset::new(&c), Err(ConfigError::PortalPort));
    }

    #[test]
    fn forward_hooks_before_filter_and_matches_every_packet() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let fwd = rs
            .chains
            .iter()
            .find(|c| c.chain.name == "forward")
            .unwrap();
        assert_eq!(fwd.chain.hook, Some(NfHook::Forward));
        assert_eq!(fwd.chain.policy, Some(NfChainPolicy::Accept));
        assert!(fwd.chain.prio.unwrap() < 0);
        let rules = rules_json(&rs, "forward");
        assert_eq!(
            rules,
            vec![
                json!([{"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@blocked4", "op": "=="}}, {"goto": {"target": "blocked_out4"}}]),
                json!([{"match": {"left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "@blocked6", "op": "=="}}, {"goto": {"target": "blocked_out6"}}]),
                json!([{"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@blocked4", "op": "=="}}, {"goto": {"target": "blocked_in4"}}]),
                json!([{"match": {"left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "@blocked6", "op": "=="}}, {"goto": {"target": "blocked_in6"}}]),
            ]
        );
        // No rule anywhere looks at conntrack state: established flows are cut too.
        let all = serde_json::to_string(
            &rs.chains
                .iter()
                .flat_map(|c| c.rules.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!all.contains("\"ct\""), "{all}");
        assert_eq!(
            fwd.rules[0].comment.as_deref(),
            Some(format!("{FINGERPRINT_PREFIX}{}", rs.fingerprint).as_str())
        );
    }

    #[test]
    fn blocked_source_reaches_only_dns_and_allowed() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let out4 = rules_json(&rs, "blocked_out4");
        assert_eq!(
            out4,
            vec![
                json!([{"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"set": ["192.0.2.53"]}, "op": "=="}},
                   {"match": {"left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53, "op": "=="}}, {"accept": null}]),
                json!([{"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"set": ["192.0.2.53"]}, "op": "=="}},
                   {"match": {"left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 53, "op": "=="}}, {"accept": null}]),
                json!([{"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"set": [{"prefix": {"addr": "198.51.100.0", "len": 24}}]}, "op": "=="}}, {"accept": null}]),
                json!([{"match": {"left": {"meta": {"key": "l4proto"}}, "right": "tcp", "op": "=="}}, {"counter": null}, {"reject": {"type": "tcp reset"}}]),
                json!([{"counter": null}, {"drop": null}]),
            ]
        );
        let in6 = rules_json(&rs, "blocked_in6");
        assert_eq!(in6.len(), 4);
        assert_eq!(
            in6[2],
            json!([{"match": {"left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"set": [{"prefix": {"addr": "2001:db8:1::", "len": 48}}]}, "op": "=="}}, {"accept": null}])
        );
        assert_eq!(in6[3], json!([{"counter": null}, {"drop": null}]));
    }

    #[test]
    fn without_resolvers_or_allow_everything_is_dropped() {
        let rs = Ruleset::new(&EnforceConfig::default()).unwrap();
        assert_eq!(rules_json(&rs, "blocked_out4").len(), 2);
        assert_eq!(
            rules_json(&rs, "blocked_in4"),
            vec![json!([{"counter": null}, {"drop": null}])]
        );
        let pre = rules_json(&rs, "prerouting");
        assert_eq!(
            pre[0],
            json!([
            {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@blocked4", "op": "=="}},
            {"match": {"left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80, "op": "=="}},
            {"counter": null}, {"redirect": {"port": 8081}}])
        );
    }

    #[test]
    fn http_redirect_limited_to_subscriber_side_and_not_to_allowed() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let pre = rs
            .chains
            .iter()
            .find(|c| c.chain.name == "prerouting")
            .unwrap();
        assert_eq!(
            (pre.chain._type, pre.chain.hook, pre.chain.prio),
            (Some(NfChainType::NAT), Some(NfHook::Prerouting), Some(-100))
        );
        let rules = rules_json(&rs, "prerouting");
        assert_eq!(
            rules[1],
            json!([
            {"match": {"left": {"meta": {"key": "iifname"}}, "right": {"set": ["eth1"]}, "op": "=="}},
            {"match": {"left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "@blocked6", "op": "=="}},
            {"match": {"left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"set": [{"prefix": {"addr": "2001:db8:1::", "len": 48}}]}, "op": "!="}},
            {"match": {"left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80, "op": "=="}},
            {"counter": null}, {"redirect": {"port": 8081}}])
        );
    }

    #[test]
    fn sets_are_declared_sized() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let sets = serde_json::to_value(&rs.sets).unwrap();
        assert_eq!(
            sets,
            json!([
                {"family": "inet", "table": "outpost", "name": "blocked4", "type": "ipv4_addr", "size": 1048576},
                {"family": "inet", "table": "outpost", "name": "blocked6", "type": "ipv6_addr", "size": 1048576},
            ])
        );
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = Ruleset::new(&cfg()).unwrap();
        assert_eq!(a.fingerprint, Ruleset::new(&cfg()).unwrap().fingerprint);
        let b = Ruleset::new(&EnforceConfig {
            portal_port: 8082,
            ..cfg()
        })
        .unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn rewrite_keeps_sets_and_recreates_chains() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let mut existing = Existing::default();
        existing.chains.insert("forward".into(), 3);
        existing.chains.insert("stale".into(), 1);
        existing.sets.insert(SET4.into(), "ipv4_addr".into());
        existing.sets.insert("junk".into(), "ipv4_addr".into());
        let v = serde_json::to_value(rs.rewrite_batch(&existing)).unwrap();
        let cmds: Vec<String> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| {
                let (verb, obj) = o.as_object()?.iter().next()?;
                let (kind, body) = obj.as_object()?.iter().next()?;
                Some(format!(
                    "{verb} {kind} {}",
                    body.get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or(body.get("chain").and_then(|n| n.as_str()).unwrap_or(""))
                ))
            })
            .collect();
        let pos = |c: &str| {
            cmds.iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{c} not in {cmds:?}"))
        };
        assert!(pos("add table outpost") < pos("add set blocked4"));
        assert!(pos("flush chain stale") < pos("delete chain forward"));
        assert!(pos("flush chain forward") < pos("delete chain stale"));
        assert!(pos("delete chain forward") < pos("add chain forward"));
        assert!(pos("delete set junk") < pos("add chain forward"));
        assert!(
            !cmds.iter().any(|c| c.starts_with("delete set blocked")
                || c.starts_with("flush set")
                || c == "delete table outpost"),
            "{cmds:?}"
        );
        assert!(pos("add chain blocked_out4") < pos("add rule forward"));
        assert_eq!(
            cmds.iter().filter(|c| c.starts_with("add rule")).count(),
            rs.chains.iter().map(|c| c.rules.len()).sum::<usize>()
        );
    }

    #[test]
    fn existing_state_is_recognised_as_current_or_not() {
        let rs = Ruleset::new(&cfg()).unwrap();
        let mut e = Existing::default();
        e.sets.insert(SET4.into(), "ipv4_addr".into());
        e.sets.insert(SET6.into(), "ipv6_addr".into());
        for c in &rs.chains {
            e.chains.insert(c.chain.name.to_string(), c.rules.len());
        }
        e.forward_comments
            .push(format!("{FINGERPRINT_PREFIX}{}", rs.fingerprint));
        assert!(rs.is_current(&e));
        let other = Ruleset::new(&EnforceConfig {
            portal_port: 9999,
            ..cfg()
        })
        .unwrap();
        assert!(!other.is_current(&e));
        let mut missing_rule = e.clone();
        *missing_rule.chains.get_mut("blocked_in4").unwrap() -= 1;
        assert!(!rs.is_current(&missing_rule));
        let mut extra_chain = e.clone();
        extra_chain.chains.insert("stale".into(), 0);
        assert!(!rs.is_current(&extra_chain));
        let mut wrong_type = e.clone();
        wrong_type.sets.insert(SET4.into(), "ipv6_addr".into());
        assert!(!rs.is_current(&wrong_type));
        assert!(!rs.is_current(&Existing::default()));
    }
}
