//! The "service suspended" page. nftables redirects a cut-off subscriber's HTTP here
//! (`enforce`); the page says why, in the reseller's brand, from the local store, so it
//! is right while the controller is unreachable.
//!
//! The page also shows the notices the subscriber's provider posted for it (an outage, a
//! price change) that are active by the agent's clock, from the store.
//!
//! Every path answers with the page (a phone's captive-portal probe for
//! `/generate_204` must not get its 204, so the phone shows the page). Nothing is
//! cached: the same address is someone else's tomorrow, and a reconnected subscriber
//! must not keep seeing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_protocol::{Brand, Notice};

use crate::edge::{EdgeHandle, Reason};
use crate::store::Store;

/// What the page needs.
#[derive(Clone)]
pub struct Portal {
    pub store: Arc<Store>,
    pub edge: EdgeHandle,
    /// Shown when a tenant has no brand (the controller always sends one; this covers
    /// an agent that has never synced).
    pub fallback_name: String,
}

/// The router: every method and path gets the page.
pub fn router(portal: Portal) -> Router {
    Router::new().fallback(page).with_state(portal)
}

/// Serves the page on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, portal: Portal) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(portal).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn page(State(p): State<Portal>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let ip: IpAddr = peer.ip().to_canonical();
    let (status, body) = match p.edge.cutoff(ip) {
        Some(cut) => {
            let brand = p.store.brand(cut.tenant_id);
            let notices = p
                .store
                .notices_for(cut.subscriber_id, cut.tenant_id, crate::clock::now())
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading the notices failed; the page shows none");
                    Vec::new()
                });
            tracing::debug!(%ip, subscriber = cut.subscriber_id, reason = cut.reason.as_str(), "suspended page");
            (
                // 511 Network Authentication Required is what RFC 6585 gives captive
                // portals; browsers render the body, probes see they are captive.
                StatusCode::NETWORK_AUTHENTICATION_REQUIRED,
                render(brand.as_ref(), &p.fallback_name, Some(cut.reason), &notices),
            )
        }
        None => (StatusCode::OK, render(None, &p.fallback_name, None, &[])),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The page, as HTML. Every brand field and notice is escaped; the colour and the logo
/// are used only when they have the shapes the controller accepts (`#rrggbb`,
/// `https://…`).
pub fn render(
    brand: Option<&Brand>,
    fallback_name: &str,
    reason: Option<Reason>,
    notices: &[Notice],
) -> String {
    let name = brand.map_or(fallback_name, |b| b.name.as_str());
    let color = brand
        .and_then(|b| b.color.as_deref())
        .filter(|c| is_hex_color(c))
        .unwrap_or("#1f4e79");
    let logo = brand
        .and_then(|b| b.logo_url.as_deref())
        .filter(|u| u.starts_with("https://") && !u.contains(['"', '<', '>', ' ']))
        .map(|u| format!(r#"<img class="logo" src="{}" alt="">"#, escape(u)))
        .unwrap_or_default();
    let contact = brand
        .and_then(|b| b.contact.as_deref())
        .map(|c| format!("<p class=\"contact\">Contact: {}</p>", escape(c)))
        .unwrap_or_default();
    let tagline = brand
        .and_then(|b| b.tagline.as_deref())
        .map(|t| format!("<span class=\"tagline\">{}</span>", escape(t)))
        .unwrap_or_default();
    let (title, text) = match reason {
        Some(Reason::Expired) => (
            "Your plan has expired",
            "Your internet plan has run out. Renew it to reconnect.",
        ),
        Some(Reason::Suspended) => (
            "Service suspended",
            "Your internet service has been suspended.",
        ),
        Some(Reason::Disabled) => ("Account disabled", "Your internet account is disabled."),
        None => ("Service active", "Your internet service is active."),
    };
    let reason_attr = reason.map_or("active", Reason::as_str);
    let notices: String = notices
        .iter()
        .map(|n| {
            format!(
                "<section class=\"notice\" data-notice=\"{}\"><h2>{}</h2><p>{}</p></section>",
                n.id,
                escape(&n.title),
                escape(&n.body).replace('\n', "<br>")
            )
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #222; }}
header {{ background: {color}; color: #fff; padding: 1rem 1.5rem; display: flex; align-items: center; gap: 1rem; }}
.logo {{ max-height: 48px; }}
main {{ max-width: 36rem; margin: 2rem auto; background: #fff; padding: 1.5rem; border-radius: 8px; }}
h1 {{ color: {color}; margin-top: 0; }}
.tagline {{ opacity: .85; }}
.notice {{ border-left: 4px solid {color}; background: #fff8e1; padding: .5rem 1rem; margin: 1rem 0; }}
.notice h2 {{ font-size: 1.05rem; margin: .25rem 0; }}
</style></head>
<body data-reason="{reason_attr}">
<header>{logo}<strong class="brand">{name}</strong>{tagline}</header>
<main><h1>{title}</h1><p>{text}</p>{notices}{contact}</main>
</body></html>
"#,
        name = escape(name),
    )
}

fn is_hex_color(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|ch| ch.is_ascii_hexdigit())
}

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand() -> Brand {
        Brand {
            tenant_id: 2,
            name: "Skylink <Wireless>".into(),
            color: Some("#0a7d32".into()),
            logo_url: Some("https://cdn.example/skylink.png".into()),
            contact: Some("support@skylink.example / +1 555 0100".into()),
            tagline: Some("Wireless for the valley".into()),
        }
    }

    #[test]
    fn the_page_carries_the_brand_and_the_reason_escaped() {
        let html = render(Some(&brand()), "Operator", Some(Reason::Expired), &[]);
        assert!(html.contains("Skylink &lt;Wireless&gt;"));
        assert!(!html.contains("<Wireless>"));
        assert!(html.contains("background: #0a7d32"));
        assert!(html.contains(r#"src="https://cdn.example/skylink.png""#));
        assert!(html.contains("support@skylink.example / +1 555 0100"));
        assert!(html.contains(r#"<span class="tagline">Wireless for the valley</span>"#));
        assert!(html.contains("Your plan has expired"));
        assert!(html.contains(r#"data-reason="expired""#));
    }

    #[test]
    fn hostile_colours_and_logos_are_left_out() {
        let mut b = brand();
        b.color = Some("red;}</style><script>".into());
        b.logo_url = Some("javascript:alert(1)".into());
        let html = render(Some(&b), "Operator", Some(Reason::Suspended), &[]);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("javascript:"));
        assert!(html.contains("#1f4e79"));
        assert!(html.contains("Service suspended"));
    }

    #[test]
    fn notices_show_escaped_with_their_line_breaks() {
        let n = Notice {
            id: 9,
            title: "Outage <tonight>".into(),
            body: "Fibre cut.\nBack by 06:00 & sorry".into(),
            starts_at: 0,
            ends_at: i64::MAX,
            tenant_ids: vec![2],
            subscriber_ids: vec![],
        };
        let html = render(Some(&brand()), "Operator", Some(Reason::Suspended), &[n]);
        assert!(html.contains(
            r#"<section class="notice" data-notice="9"><h2>Outage &lt;tonight&gt;</h2>"#
        ));
        assert!(html.contains("Fibre cut.<br>Back by 06:00 &amp; sorry"));
        assert!(!html.contains("<tonight>"));
        let none = render(Some(&brand()), "Operator", Some(Reason::Suspended), &[]);
        assert!(!none.contains("class=\"notice\""));
    }

    #[test]
    fn without_a_brand_the_fallback_name_shows() {
        let html = render(None, "Operator & Co", Some(Reason::Disabled), &[]);
        assert!(html.contains("Operator &amp; Co"));
        assert!(html.contains("Account disabled"));
    }
}
