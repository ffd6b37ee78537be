//! The WireGuard management plane as the database and the two routers see it (no
//! interface: the lab test `tests/tests/tunnel_lab.rs` runs the real one): enrolment
//! hands out an overlay address once and a preshared key, re-enrolment and revocation
//! remove the old peer, bad enrolments change nothing, the public listener does not
//! serve the agent's sync routes, and inside the tunnel the source address must be the
//! credential's agent's. Also the `[tunnel]` config and the start-up overlap checks.

mod common;

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Fixture, Who, assert_error, send_via, tunnel_config};
use outpost_controller::bootstrap;
use outpost_controller::config::{Config, ConfigError};
use outpost_controller::db::agent;
use outpost_protocol as proto;
use serde_json::{Value, json};

fn public_ip() -> IpAddr {
    common::CLIENT_IP.parse().unwrap()
}

fn tunnelled() -> Fixture {
    Fixture::with_config(|c| c.tunnel = Some(tunnel_config()))
}

fn agent_req(secret: &str, method: Method, path: &str, body: Option<Value>) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(proto::PROTOCOL_HEADER, proto::PROTOCOL_VERSION.to_string());
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn enroll_req(body: &Value) -> Request<Body> {
    Request::post("/agent/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn new_token(fx: &Fixture, site: i64) -> String {
    let (s, t) = fx
        .post(
            Who::Op,
            &format!("/api/v1/sites/{site}/enrollment-tokens"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    t["secret"].as_str().unwrap().to_string()
}

fn enroll_body(token: &str, key: &str) -> Value {
    json!({ "token": token, "wireguard_public_key": key, "hostname": "bng-new",
            "agent_version": "0.1.0", "protocol_version": proto::PROTOCOL_VERSION })
}

/// Rows that any enrolment touches, to show a refused one touched none.
fn footprint(fx: &Fixture) -> Vec<i64> {
    [
        "SELECT count(*) FROM agents",
        "SELECT count(*) FROM agents WHERE revoked_at IS NULL",
        "SELECT count(*) FROM tunnel_addresses",
        "SELECT count(*) FROM tunnel_addresses WHERE freed_at IS NULL",
        "SELECT count(*) FROM enrollment_tokens WHERE used_at IS NULL",
    ]
    .iter()
    .map(|q| fx.query_i64(q))
    .collect()
}

fn address_of(fx: &Fixture, site: i64) -> String {
    fx.state
        .db
        .write_blocking(|tx| {
            Ok(tx.query_row(
                "SELECT tunnel_address FROM agents WHERE site_id = ?1 AND revoked_at IS NULL",
                [site],
                |r| r.get::<_, String>(0),
            )?)
        })
        .unwrap()
}

fn live_peers(fx: &Fixture) -> Vec<outpost_wg::Peer> {
    let secrets = fx.state.secrets.clone();
    fx.state
        .db
        .write_blocking(|tx| agent::live_peers(tx, &secrets))
        .unwrap()
}

#[tokio::test]
async fn enrolment_hands_out_a_new_address_a_preshared_key_and_the_controllers_key() {
    let fx = tunnelled();
    let tunnel = fx.state.tunnel.clone().unwrap();
    // The fixture enrolled one agent per site: 10.66.0.2 onwards, the controller .1.
    let old_address = address_of(&fx, fx.a.site);
    let old_key = common::test_wg_key(fx.a.site as u8);
    assert_eq!(live_peers(&fx).len(), 4);

    let token = new_token(&fx, fx.a.site).await;
    let new_key = common::test_wg_key(200);
    let (s, _, r) = fx
        .send(enroll_req(&enroll_body(&token, &new_key)), public_ip())
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let r: proto::EnrollResponse = serde_json::from_value(r).unwrap();
    let t = r.tunnel.expect("a tunnel is configured");
    assert_eq!(
        t.address, "10.66.0.6/32",
        "the lowest address never handed out"
    );
    assert_ne!(t.address, format!("{old_address}/32"));
    assert_eq!(t.controller_public_key, tunnel.public_key);
    assert_eq!(t.controller_address, "10.66.0.1");
    assert_eq!(t.controller_endpoints, vec!["192.0.2.1:51820".to_string()]);
    assert_eq!((t.api_port, t.persistent_keepalive_secs), (8443, 25));
    assert_eq!(t.api_url(), "http://10.66.0.1:8443");
    assert!(outpost_wg::key("psk", &t.preshared_key).is_ok());

    // The peers the interface is brought up with: the new key at its /32 with the
    // preshared key handed out; the old key gone, its address a tombstone.
    let peers = live_peers(&fx);
    assert_eq!(peers.len(), 4);
    assert!(!peers.iter().any(|p| p.public_key == old_key));
    let p = peers.iter().find(|p| p.public_key == new_key).unwrap();
    assert_eq!(p.allowed_ips, vec!["10.66.0.6/32".parse().unwrap()]);
    assert_eq!(p.preshared_key.as_deref(), Some(t.preshared_key.as_str()));
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM tunnel_addresses WHERE address = '{old_address}' AND freed_at IS NOT NULL"
        )),
        1
    );
    // The preshared key is stored sealed, not in the clear.
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM agents WHERE instr(CAST(preshared_key_sealed AS TEXT), '{}') > 0",
            t.preshared_key
        )),
        0
    );

    // The change the transaction decides for the interface: remove the old, add the new.
    let token = new_token(&fx, fx.a.site).await;
    let secrets = fx.state.secrets.clone();
    let t2 = tunnel.clone();
    let e = fx
        .state
        .db
        .write_blocking(|tx| {
            agent::enroll(
                tx,
                &serde_json::from_value(enroll_body(&token, &common::test_wg_key(201))).unwrap(),
                "opa_test-credential",
                Some(&t2),
                &secrets,
            )
        })
        .unwrap();
    assert_eq!(e.peers.remove, vec![new_key]);
    assert_eq!(e.peers.add.len(), 1);
    assert_eq!(e.peers.add[0].public_key, common::test_wg_key(201));
    assert_eq!(
        e.peers.add[0].allowed_ips,
        vec!["10.66.0.7/32".parse().unwrap()]
    );
}

#[tokio::test]
async fn a_revoked_agent_loses_its_peer_and_its_address_is_never_handed_out_again() {
    let fx = tunnelled();
    let site = fx.b.site;
    let old = address_of(&fx, site);
    let path = format!("/api/v1/sites/{site}/agent");
    let revoke = || fx.call(Who::B, Method::DELETE, &path, None);
    let (s, v) = revoke().await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(
        !live_peers(&fx)
            .iter()
            .any(|p| p.public_key == common::test_wg_key(site as u8))
    );
    // Its credential stops working at once.
    let (_, secret) = &fx.agents[&site];
    let inside = outpost_controller::agent_app(fx.state.clone());
    let (s, _, _) = send_via(
        &inside,
        agent_req(secret, Method::GET, "/agent/v1/state?since=0", None),
        old.parse().unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Nothing left to revoke.
    let (s, v) = revoke().await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // Enrolled again (same key even: it is no longer live), the site gets a new address.
    let token = new_token(&fx, site).await;
    let (s, _, r) = fx
        .send(
            enroll_req(&enroll_body(&token, &common::test_wg_key(site as u8))),
            public_ip(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let new = address_of(&fx, site);
    assert_ne!(new, old, "a freed address is not reused");
    assert_eq!(
        fx.query_i64("SELECT count(DISTINCT address) FROM tunnel_addresses"),
        fx.query_i64("SELECT count(*) FROM agents"),
        "one address per agent ever enrolled"
    );
}

#[tokio::test]
async fn bad_enrolments_are_clear_errors_that_change_nothing() {
    let fx = tunnelled();
    let token = new_token(&fx, fx.a.site).await;
    let before = footprint(&fx);
    let (_, audit_before) = fx.audit_tail();
    let own = fx.state.tunnel.as_ref().unwrap().public_key.clone();
    let in_use = common::test_wg_key(fx.b.site as u8);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            enroll_body("ope_wrong", &common::test_wg_key(99)),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            enroll_body(&token, "bm90IGEga2V5"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            enroll_body(&token, &own),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            enroll_body(&token, &in_use),
            StatusCode::CONFLICT,
            "wireguard_key_in_use",
        ),
    ];
    for (body, status, code) in cases {
        let (s, _, v) = fx.send(enroll_req(&body), public_ip()).await;
        assert_error(s, &v, status, code);
        assert_eq!(footprint(&fx), before, "{code} changed nothing");
    }
    assert_eq!(fx.audit_tail().1, audit_before);
    // The token survived every refusal; spent once, it is refused after.
    let body = enroll_body(&token, &common::test_wg_key(99));
    let (s, _, v) = fx.send(enroll_req(&body), public_ip()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let after = footprint(&fx);
    let (s, _, v) = fx.send(enroll_req(&body), public_ip()).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(footprint(&fx), after);
}

#[tokio::test]
async fn with_a_tunnel_the_public_listener_does_not_serve_the_agent_sync_routes() {
    let fx = tunnelled();
    let (_, secret) = &fx.agents[&fx.a.site];
    for (method, path, body) in [
        (Method::GET, "/agent/v1/state?since=0", None),
        (
            Method::POST,
            "/agent/v1/ack",
            Some(json!({ "revision": 1, "digest": "00", "agent_version": "1" })),
        ),
        (
            Method::POST,
            "/agent/v1/events",
            Some(json!({ "events": [] })),
        ),
    ] {
        let (s, _, v) = fx
            .send(agent_req(secret, method.clone(), path, body), public_ip())
            .await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    // Enrolment is there (a bad token is refused, not missing); so is the document,
    // which describes the sync routes the tunnel serves.
    let (s, _, _) = fx
        .send(
            enroll_req(&enroll_body("ope_x", common::TEST_WG_KEY)),
            public_ip(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, doc) = fx.get(Who::Anon, "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["paths"]["/agent/v1/state"].is_object());
}

#[tokio::test]
async fn inside_the_tunnel_the_source_address_must_be_the_credentials_agents() {
    let fx = tunnelled();
    let inside = outpost_controller::agent_app(fx.state.clone());
    let (_, a_secret) = &fx.agents[&fx.a.site];
    let a_addr: IpAddr = address_of(&fx, fx.a.site).parse().unwrap();
    let b_addr: IpAddr = address_of(&fx, fx.b.site).parse().unwrap();
    let get = |secret: &str| agent_req(secret, Method::GET, "/agent/v1/state?since=0", None);

    let (s, _, v) = send_via(&inside, get(a_secret), a_addr).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "snapshot");

    // A's credential from B's address (or from anywhere else): refused and recorded.
    let (before, _) = fx.audit_tail();
    for from in [b_addr, public_ip()] {
        let (s, _, v) = send_via(&inside, get(a_secret), from).await;
        assert_error(s, &v, StatusCode::FORBIDDEN, "wrong_tunnel_address");
    }
    let (after, last) = fx.audit_tail();
    assert_eq!(after - before, 2);
    let (_, action, security, _) = last.unwrap();
    assert_eq!(
        (action.as_str(), security),
        ("agent.wrong_tunnel_address", true)
    );

    // The tunnel listener serves nothing but the sync routes.
    for path in ["/api/v1/openapi.json", "/agent/v1/enroll", "/panel/login"] {
        let (s, _, _) = send_via(&inside, get(a_secret).map_path(path), a_addr).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
}

/// Re-targets a request at another path (same method, headers, body).
trait MapPath {
    fn map_path(self, path: &str) -> Self;
}
impl MapPath for Request<Body> {
    fn map_path(mut self, path: &str) -> Self {
        *self.uri_mut() = path.parse().unwrap();
        self
    }
}

#[tokio::test]
async fn the_site_view_shows_the_tunnel_address() {
    let fx = tunnelled();
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/sites/{}/agent", fx.a.site))
        .await;
    assert_eq!(v["tunnel_address"], json!(address_of(&fx, fx.a.site)));
    // No interface in this tier: no live figures, rather than made-up ones.
    assert!(v["tunnel"].is_null(), "{v}");
    let plain = Fixture::new();
    let v = plain
        .get_ok(Who::A, &format!("/api/v1/sites/{}/agent", plain.a.site))
        .await;
    assert!(v["tunnel_address"].is_null(), "{v}");
}

#[test]
fn the_example_tunnel_config_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/controller-tunnel.example.toml"
    );
    let cfg = Config::load(std::path::Path::new(path)).unwrap();
    let t = cfg.tunnel.expect("the example configures a tunnel");
    assert_eq!(t.backend, outpost_wg::Backend::Userspace);
    assert_eq!(t.interface, "outpost0");
    assert_eq!(t.controller_address().to_string(), "10.66.0.1");
    assert_eq!(t.endpoints, vec!["vpn.isp.example:51820".to_string()]);
    assert_eq!((t.listen_port, t.api_port), (51820, 8443));
}

#[test]
fn a_tunnel_config_that_makes_no_sense_is_refused_by_name() {
    let with = |extra: &str| {
        Config::parse(&format!(
            "[tunnel]\nbackend = \"userspace\"\nendpoints = [\"192.0.2.1:51820\"]\n{extra}\n"
        ))
    };
    assert!(with("").is_ok());
    let invalid = |extra: &str, want: &str| {
        let e = with(extra).unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid(_)) && e.to_string().contains(want),
            "{extra}: {e}"
        );
    };
    invalid("network = \"100.64.0.0/16\"", "overlaps 100.64.0.0/10");
    invalid("network = \"100.0.0.0/8\"", "CGNAT");
    assert!(with("network = \"100.64.0.0/16\"\nallow_cgnat_range = true").is_ok());
    invalid("address = \"10.67.0.1\"", "tunnel.address");
    invalid("address = \"10.66.0.0\"", "tunnel.address");
    invalid("network = \"10.66.0.0/31\"", "too small");
    invalid("interface = \"a-name-far-too-long\"", "tunnel.interface");
    invalid("api_port = 0", "api_port");
    let e = Config::parse("[tunnel]\nbackend = \"userspace\"\nendpoints = []\n").unwrap_err();
    assert!(e.to_string().contains("tunnel.endpoints"), "{e}");
    let e = Config::parse("[tunnel]\nbackend = \"userspace\"\nendpoints = [\"no-port\"]\n")
        .unwrap_err();
    assert!(e.to_string().contains("no-port"), "{e}");
    // The backend is always chosen, never defaulted; an unknown key is refused.
    let e = Config::parse("[tunnel]\nendpoints = [\"192.0.2.1:51820\"]\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    assert!(matches!(with("mtu = 1420"), Err(ConfigError::Parse { .. })));
}

#[test]
fn an_overlay_over_subscriber_addresses_is_a_start_error() {
    let fx = Fixture::new();
    fx.state
        .db
        .write_blocking(|tx| {
            tx.execute(
                "UPDATE subscribers SET static_ipv4 = '10.66.3.9' WHERE id = ?1",
                [fx.a.subscriber],
            )?;
            Ok(())
        })
        .unwrap();
    let mut cfg = fx.state.config.as_ref().clone();
    cfg.tunnel = Some(tunnel_config());
    let e = bootstrap::open(cfg.clone()).err().unwrap().to_string();
    assert!(
        e.contains("overlaps addresses subscribers use") && e.contains("10.66.3.9"),
        "{e}"
    );
    // Another overlay starts.
    cfg.tunnel.as_mut().unwrap().network = "10.77.0.0/16".parse().unwrap();
    assert!(bootstrap::open(cfg).is_ok());
}

#[test]
fn the_controllers_key_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = outpost_controller::tunnel::Tunnel::load(&tunnel_config(), dir.path()).unwrap();
    let t2 = outpost_controller::tunnel::Tunnel::load(&tunnel_config(), dir.path()).unwrap();
    assert_eq!(t1.public_key, t2.public_key);
    let path = dir.path().join("wireguard.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&path, "garbage").unwrap();
    let e = outpost_controller::tunnel::Tunnel::load(&tunnel_config(), dir.path())
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a WireGuard private key"), "{e}");
}

/// Each agent's key, address and rotation key.
type KeyRows = Vec<(String, String, Option<String>)>;

/// The rows a rotation touches, to show a refused one touched none.
fn rotation_footprint(fx: &Fixture) -> (Vec<i64>, KeyRows) {
    let rows = fx
        .state
        .db
        .write_blocking(|tx| {
            let mut stmt = tx.prepare(
                "SELECT wireguard_public_key, tunnel_address, rotation_public_key FROM agents ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    (footprint(fx), rows)
}

fn rotate_req(secret: &str, path: &str, key: &str) -> Request<Body> {
    agent_req(
        secret,
        Method::POST,
        path,
        Some(json!({ "new_public_key": key })),
    )
}

const ROTATE: &str = "/agent/v1/rotate-key";
const CONFIRM: &str = "/agent/v1/rotate-key/confirm";

#[tokio::test]
async fn a_key_rotation_adds_the_new_key_on_a_second_address_and_drops_the_old_one_only_when_confirmed_from_it()
 {
    let fx = tunnelled();
    let inside = outpost_controller::agent_app(fx.state.clone());
    let (_, secret) = &fx.agents[&fx.a.site];
    let old_key = common::test_wg_key(fx.a.site as u8);
    let old: IpAddr = address_of(&fx, fx.a.site).parse().unwrap();
    let new_key = common::test_wg_key(201);
    let (audit_before, _) = fx.audit_tail();

    // Begin, from the agent's tunnel address: a second address and preshared key.
    let (s, _, v) = send_via(&inside, rotate_req(secret, ROTATE, &new_key), old).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t: proto::TunnelParams = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(t.address, "10.66.0.6/32", "an address never handed out");
    assert!(outpost_wg::key("psk", &t.preshared_key).is_ok());
    let new: IpAddr = t.address.trim_end_matches("/32").parse().unwrap();
    let peers = live_peers(&fx);
    assert_eq!(peers.len(), 5, "both keys are peers while it runs");
    let p = peers.iter().find(|p| p.public_key == new_key).unwrap();
    assert_eq!(p.allowed_ips, vec![t.address.parse().unwrap()]);
    assert_eq!(p.preshared_key.as_deref(), Some(t.preshared_key.as_str()));
    assert!(peers.iter().any(|p| p.public_key == old_key));
    let (n, last) = fx.audit_tail();
    assert_eq!(n - audit_before, 1);
    assert_eq!(last.unwrap().1, "agent.rotate_key.begin");
    // Presented again (an agent restarted before it saved the answer): the same answer.
    let (s, _, again) = send_via(&inside, rotate_req(secret, ROTATE, &new_key), old).await;
    assert_eq!((s, &again), (StatusCode::OK, &v));
    assert_eq!(live_peers(&fx).len(), 5);
    assert_eq!(fx.audit_tail().0, n);

    // Meanwhile the agent's calls may come from either address.
    let get = || agent_req(secret, Method::GET, "/agent/v1/state?since=0", None);
    for from in [old, new] {
        let (s, _, v) = send_via(&inside, get(), from).await;
        assert_eq!(s, StatusCode::OK, "{from}: {v}");
    }
    // Confirmed from the old address: not yet (the new key has not shown it works).
    let before = rotation_footprint(&fx);
    let (s, _, v) = send_via(&inside, rotate_req(secret, CONFIRM, &new_key), old).await;
    assert_error(s, &v, StatusCode::CONFLICT, "rotation_not_ready");
    assert_eq!(rotation_footprint(&fx), before);

    // Confirmed from the new one: the new key and address are the agent's, the old
    // key's peer is gone and its address a tombstone.
    let (s, _, v) = send_via(&inside, rotate_req(secret, CONFIRM, &new_key), new).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let peers = live_peers(&fx);
    assert_eq!(peers.len(), 4);
    assert!(!peers.iter().any(|p| p.public_key == old_key));
    assert_eq!(address_of(&fx, fx.a.site), new.to_string());
    assert_eq!(
        fx.query_i64(&format!(
            "SELECT count(*) FROM tunnel_addresses WHERE address = '{old}' AND freed_at IS NOT NULL"
        )),
        1
    );
    let (_, last) = fx.audit_tail();
    assert_eq!(last.unwrap().1, "agent.rotate_key");
    let v = fx
        .get_ok(Who::A, &format!("/api/v1/sites/{}/agent", fx.a.site))
        .await;
    assert_eq!(v["wireguard_public_key"], json!(new_key));
    // The old address no longer carries the credential.
    let (s, _, v) = send_via(&inside, get(), old).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "wrong_tunnel_address");
    // Confirming again (an agent restarted before it saved that it was done): no
    // error, no change.
    let before = rotation_footprint(&fx);
    let (n, _) = fx.audit_tail();
    let (s, _, _) = send_via(&inside, rotate_req(secret, CONFIRM, &new_key), new).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(rotation_footprint(&fx), before);
    assert_eq!(fx.audit_tail().0, n);
}

#[tokio::test]
async fn bad_rotations_are_clear_errors_that_change_nothing() {
    let fx = tunnelled();
    let inside = outpost_controller::agent_app(fx.state.clone());
    let (_, a_secret) = &fx.agents[&fx.a.site];
    let (_, b_secret) = &fx.agents[&fx.b.site];
    let a: IpAddr = address_of(&fx, fx.a.site).parse().unwrap();
    let b: IpAddr = address_of(&fx, fx.b.site).parse().unwrap();
    // B has a rotation under way: its new key is taken too.
    let b_pending = common::test_wg_key(202);
    let (s, _, v) = send_via(&inside, rotate_req(b_secret, ROTATE, &b_pending), b).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let before = rotation_footprint(&fx);
    let (audit_before, _) = fx.audit_tail();
    let controller = fx.state.tunnel.as_ref().unwrap().public_key.clone();
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            ROTATE,
            "bm90IGEga2V5".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            ROTATE,
            "".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            ROTATE,
            common::test_wg_key(fx.a.site as u8),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            ROTATE,
            controller,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            ROTATE,
            common::test_wg_key(fx.b.site as u8),
            StatusCode::CONFLICT,
            "wireguard_key_in_use",
        ),
        (
            ROTATE,
            b_pending.clone(),
            StatusCode::CONFLICT,
            "wireguard_key_in_use",
        ),
        (
            CONFIRM,
            common::test_wg_key(203),
            StatusCode::CONFLICT,
            "no_such_rotation",
        ),
        (
            CONFIRM,
            b_pending.clone(),
            StatusCode::CONFLICT,
            "no_such_rotation",
        ),
    ];
    for (path, key, status, code) in cases {
        let (s, _, v) = send_via(&inside, rotate_req(a_secret, path, &key), a).await;
        assert_error(s, &v, status, code);
        assert_eq!(
            rotation_footprint(&fx),
            before,
            "{path} {key}: {code} changed nothing"
        );
    }
    assert_eq!(fx.audit_tail().0, audit_before);

    // Out of the tunnel: the public listener does not serve rotation at all; inside it,
    // A's credential from B's address (or without one) is refused.
    let key = common::test_wg_key(204);
    for path in [ROTATE, CONFIRM] {
        let (s, _, v) = fx.send(rotate_req(a_secret, path, &key), public_ip()).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    let (s, _, v) = send_via(&inside, rotate_req(a_secret, ROTATE, &key), b).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "wrong_tunnel_address");
    let (s, _, v) = send_via(&inside, rotate_req("opa_nobody", ROTATE, &key), a).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(rotation_footprint(&fx), before);
    let (n, last) = fx.audit_tail();
    assert_eq!(n - audit_before, 1, "only the refusal's security entry");
    assert_eq!(last.unwrap().1, "agent.wrong_tunnel_address");
    // An enrolment cannot take a key a rotation holds.
    let token = new_token(&fx, fx.a.site).await;
    let (s, _, v) = fx
        .send(enroll_req(&enroll_body(&token, &b_pending)), public_ip())
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "wireguard_key_in_use");
    // Without a tunnel there is no key to rotate.
    let plain = Fixture::new();
    let (_, secret) = &plain.agents[&plain.a.site];
    let (s, _, v) = plain
        .send(rotate_req(secret, ROTATE, &key), public_ip())
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "no_tunnel");
}

#[tokio::test]
async fn revoking_an_agent_mid_rotation_removes_both_its_peers() {
    let fx = tunnelled();
    let inside = outpost_controller::agent_app(fx.state.clone());
    let (_, secret) = &fx.agents[&fx.b.site];
    let b: IpAddr = address_of(&fx, fx.b.site).parse().unwrap();
    let pending = common::test_wg_key(205);
    let (s, _, v) = send_via(&inside, rotate_req(secret, ROTATE, &pending), b).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = fx
        .call(
            Who::B,
            Method::DELETE,
            &format!("/api/v1/sites/{}/agent", fx.b.site),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let peers = live_peers(&fx);
    assert_eq!(peers.len(), 3);
    assert!(
        !peers.iter().any(
            |p| p.public_key == pending || p.public_key == common::test_wg_key(fx.b.site as u8)
        )
    );
    assert_eq!(
        fx.query_i64("SELECT count(*) FROM tunnel_addresses WHERE freed_at IS NULL"),
        3,
        "both of its addresses are tombstones"
    );
}
