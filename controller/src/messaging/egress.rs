//! Where the outbox may connect. A provider's address is the reseller's to type, and the
//! provider's answer is shown in the reseller's delivery log, so an unchecked address
//! would let a reseller make the controller reach the operator's own network (its
//! loopback, the tunnel overlay, the LAN) and read what answers. By default the outbox
//! connects only to public addresses: an address given as a literal is checked before
//! the request, and a host name is resolved through [`PublicOnly`], so what the request
//! connects to is what was checked (a name that resolves to a public address when it is
//! checked and to a private one when it is used gets nowhere). SMTP connects to the
//! address it was checked with. An operator whose gateways live on its own network sets
//! `[messaging] allow_private_destinations = true`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::providers::ProviderConfig;

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918),
/// shared (RFC 6598), link-local, unique-local, unspecified, multicast or broadcast,
/// nor one of those mapped into IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
}

/// The host and port a provider's requests go to.
pub fn destination(cfg: &ProviderConfig) -> Result<(String, u16), String> {
    let url = match cfg {
        ProviderConfig::Smtp { host, port, .. } => return Ok((host.clone(), *port)),
        ProviderConfig::Http { url, .. } => url.as_str(),
        ProviderConfig::Twilio { base_url, .. } => {
            base_url.as_deref().unwrap_or("https://api.twilio.com")
        }
        ProviderConfig::WhatsappCloud { base_url, .. } => {
            base_url.as_deref().unwrap_or("https://graph.facebook.com")
        }
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: not a URL ({e})"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    Ok((host, port))
}

/// The addresses `host` may be reached at: all of them when `allow_private`, else its
/// public ones, and an error naming the host when it has none.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host}: cannot resolve ({e})"))?
            .collect(),
    };
    if allow_private {
        return Ok(all);
    }
    let public: Vec<SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        return Err(format!(
            "{host} is not a public address ({}); this installation sends only to public \
             addresses (the operator's [messaging] allow_private_destinations)",
            all.iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(public)
}

/// Checks a provider's destination before a request: a literal address must be public
/// (a host name is checked again as the request resolves it, by [`PublicOnly`]).
pub async fn check(cfg: &ProviderConfig, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let (host, port) = destination(cfg)?;
    resolve(&host, port, false).await.map(|_| ())
}

/// The HTTP client's resolver when only public destinations are allowed: a name
/// resolves to its public addresses only.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0, false)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "100.128.0.1", "172.32.0.1", "2001:4860::8888"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_private_destination_is_refused_unless_allowed() {
        let cfg = ProviderConfig::Smtp {
            host: "127.0.0.1".into(),
            port: 25,
            tls: super::super::providers::SmtpTls::None,
            username: None,
            from: "noc@example.net".into(),
        };
        let err = check(&cfg, false).await.unwrap_err();
        assert!(err.contains("not a public address"), "{err}");
        assert!(check(&cfg, true).await.is_ok());
        let err = resolve("localhost", 80, false).await.unwrap_err();
        assert!(err.contains("localhost"), "{err}");
    }
}
