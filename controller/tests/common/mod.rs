//! A real controller in a temp dir: real SQLite file, real key file, the real router,
//! called through `tower::ServiceExt::oneshot`. Seeded through the storage layer with a
//! known tree and asserted ids:
//!
//! ```text
//! operator (1) ── A (2) ── A1 (3)
//!              └─ B (4)
//! ```
//! Each tenant has one subscriber, one site, one NAS and one manager; the fixture's
//! actors each hold a live session.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use outpost_controller::bootstrap;
use outpost_controller::config::{AuthConfig, Config};
use outpost_controller::db::nas::{NasKind, NewNas};
use outpost_controller::db::site::NewSite;
use outpost_controller::db::subscriber::NewSubscriber;
use outpost_controller::db::tenant::{NewReseller, Tenant};
use outpost_controller::db::{nas, session, site, subscriber, tenant, user};
use outpost_controller::scope::{OPERATOR_TENANT, PermSet, Permission, UserKind};
use outpost_controller::{AppState, app};
use serde_json::Value;
use tower::ServiceExt;

pub const PASSWORD: &str = "fixture-password-1";
pub const CLIENT_IP: &str = "203.0.113.10";

/// The actors of the authorization matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    /// Operator staff.
    Op,
    /// Reseller A's login.
    A,
    /// Sub-reseller A1's login.
    A1,
    /// A manager of A with view/create customers and suspend/reconnect only.
    M,
    /// Reseller B's login.
    B,
    /// No credential at all.
    Anon,
}

pub const ACTORS: [Who; 6] = [Who::Op, Who::A, Who::A1, Who::M, Who::B, Who::Anon];

/// The manager's grants in the fixture.
pub const MANAGER_PERMS: [Permission; 3] = [
    Permission::ViewCustomers,
    Permission::CreateCustomers,
    Permission::SuspendReconnect,
];

/// What one tenant holds in the fixture.
#[derive(Debug, Clone, Copy)]
pub struct Holdings {
    pub tenant: i64,
    pub subscriber: i64,
    pub site: i64,
    pub nas: i64,
    /// A manager of this tenant (not the matrix's manager M).
    pub manager: i64,
    /// A plan this tenant owns and sells (not assigned onward), its subscriber's plan.
    pub plan: i64,
    /// A plan on this tenant's rate card (none for the operator).
    pub card_plan: Option<i64>,
}

pub struct Fixture {
    pub app: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub op_tenant: Holdings,
    pub a: Holdings,
    pub a1: Holdings,
    pub b: Holdings,
    /// user id and bearer secret per actor.
    pub users: HashMap<Who, (i64, String)>,
    /// An API token id per actor.
    pub tokens: HashMap<Who, i64>,
    pub emails: HashMap<Who, String>,
    /// An enrolled agent per site: site id → (agent id, bearer credential).
    pub agents: HashMap<i64, (i64, String)>,
}

/// Which cell of an authorization matrix a request addresses: the actor's own
/// resources or another tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Own,
    Other,
}

/// The end of an authorization matrix's run: it ran more than `min` cells (a matrix
/// that silently shrank fails), and no cell failed; every failing cell is listed at once.
pub fn assert_matrix(cells: usize, min: usize, failures: &[String]) {
    assert!(cells > min, "matrix ran only {cells} cells");
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The resources an actor's "own" and "other" cells address, the same for the API's
/// matrix (`authz_matrix.rs`) and the panel's (`panel.rs`).
pub fn holdings(fx: &Fixture, who: Who, t: Target) -> Holdings {
    match (who, t) {
        (Who::Op | Who::A | Who::M | Who::Anon, Target::Own) => fx.a,
        (Who::A1, Target::Own) => fx.a1,
        (Who::B, Target::Own) => fx.b,
        (Who::Op | Who::A | Who::Anon, Target::Other) => fx.b,
        (Who::A1 | Who::B, Target::Other) => fx.a,
        // A manager of A must not reach its sub-reseller's customers.
        (Who::M, Target::Other) => fx.a1,
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let d = Config::default();
    Config {
        data_dir: dir.to_path_buf(),
        // Cheap argon2 so hundreds of fixtures stay fast; the algorithm is the same.
        auth: AuthConfig {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..d.auth.clone()
        },
        ..d
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with_config(|_| {})
    }

    pub fn with_config(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let state = bootstrap::open(cfg).unwrap();
        let hash = state.hasher.hash(PASSWORD).unwrap();
        let secrets = state.secrets.clone();
        let max_depth = state.config.tree.max_depth;
        let mut users = HashMap::new();
        let mut tokens = HashMap::new();
        let mut emails = HashMap::new();
        let (op_tenant, a, a1, b) = state
            .db
            .write_blocking(|tx| {
                let root = tenant::get(tx, OPERATOR_TENANT)?.unwrap();
                let mk = |parent: &Tenant, name: &str| {
                    tenant::create(
                        tx,
                        parent,
                        &NewReseller {
                            rebrand_enabled: true,
                            ..NewReseller::named(name, parent)
                        },
                        max_depth,
                    )
                };
                let ta = mk(&root, "Reseller A")?;
                let ta1 = mk(&ta, "Sub-reseller A1")?;
                let tb = mk(&root, "Reseller B")?;
                assert_eq!((ta.id, ta1.id, tb.id), (2, 3, 4));
                let hold =
                    |t: &Tenant, tag: &str| -> Result<Holdings, outpost_controller::error::Error> {
                        let s = site::create(
                            tx,
                            t,
                            &NewSite {
                                name: format!("site-{tag}"),
                                tenant_id: None,
                                location: String::new(),
                                notes: String::new(),
                            },
                        )?;
                        let n = nas::create(
                            tx,
                            t,
                            &NewNas {
                                name: format!("nas-{tag}"),
                                site_id: s.id,
                                ip: format!("198.51.100.{}", t.id).parse().unwrap(),
                                secret: "radius-secret".into(),
                                kind: NasKind::Mikrotik,
                                coa_port: None,
                                require_message_authenticator: None,
                                tenant_id: None,
                            },
                            &secrets,
                        )?;
                        let sub = subscriber::create(
                            tx,
                            t,
                            &NewSubscriber {
                                site_id: Some(s.id),
                                name: format!("Customer {tag}"),
                                ..NewSubscriber::named(format!("sub-{tag}"), format!("ppp-{tag}"))
                            },
                            &secrets,
                        )?;
                        let m = user::insert(
                            tx,
                            &user::Insert {
                                tenant_id: t.id,
                                kind: UserKind::Manager,
                                email: &format!("mgr-{tag}@fixture.test"),
                                name: &format!("Manager {tag}"),
                                phone: "",
                                password_hash: &hash,
                                permissions: &PermSet(MANAGER_PERMS.into_iter().collect()),
                                created_by: None,
                            },
                        )?;
                        Ok(Holdings {
                            tenant: t.id,
                            subscriber: sub.sub.id,
                            site: s.id,
                            nas: n.id,
                            manager: m.id,
                            plan: 0,
                            card_plan: None,
                        })
                    };
                Ok((
                    hold(&root, "op")?,
                    hold(&ta, "a")?,
                    hold(&ta1, "a1")?,
                    hold(&tb, "b")?,
                ))
            })
            .unwrap();
        let accounts = [
            (
                Who::Op,
                OPERATOR_TENANT,
                UserKind::Operator,
                PermSet::default(),
            ),
            (Who::A, 2, UserKind::Reseller, PermSet::default()),
            (Who::A1, 3, UserKind::Reseller, PermSet::default()),
            (
                Who::M,
                2,
                UserKind::Manager,
                PermSet(MANAGER_PERMS.into_iter().collect()),
            ),
            (Who::B, 4, UserKind::Reseller, PermSet::default()),
        ];
        state
            .db
            .write_blocking(|tx| {
                for (who, tid, kind, perms) in &accounts {
                    let email = format!("{who:?}@fixture.test").to_lowercase();
                    let u = user::insert(
                        tx,
                        &user::Insert {
                            tenant_id: *tid,
                            kind: *kind,
                            email: &email,
                            name: &format!("User {who:?}"),
                            phone: "",
                            password_hash: &hash,
                            permissions: perms,
                            created_by: None,
                        },
                    )?;
                    let secret = outpost_controller::crypto::new_bearer("ops_");
                    session::create(tx, &secret, u.id, None, CLIENT_IP, "fixture", 3600)?;
                    let tok = session::create_token(
                        tx,
                        u.id,
                        "fixture",
                        None,
                        &outpost_controller::crypto::new_bearer("opt_"),
                    )?;
                    users.insert(*who, (u.id, secret));
                    tokens.insert(*who, tok.id);
                    emails.insert(*who, email);
                }
                Ok(())
            })
            .unwrap();
        let (op_tenant, a, a1, b) = seed_billing(&state, op_tenant, a, a1, b);
        let agents = enroll_agents(&state, &[op_tenant.site, a.site, a1.site, b.site]);
        let app = app(state.clone());
        Fixture {
            agents,
            app,
            state,
            dir,
            op_tenant,
            a,
            a1,
            b,
            users,
            tokens,
            emails,
        }
    }

    pub fn secret(&self, who: Who) -> Option<String> {
        self.users.get(&who).map(|u| u.1.clone())
    }

    pub fn user_id(&self, who: Who) -> i64 {
        self.users[&who].0
    }

    /// Sends a request as `who` from the fixture's client address.
    pub async fn call(
        &self,
        who: Who,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(who, CLIENT_IP.parse().unwrap(), method, path, body, &[])
            .await
    }

    /// `GET path` as `who`.
    pub async fn get(&self, who: Who, path: &str) -> (StatusCode, Value) {
        self.call(who, Method::GET, path, None).await
    }

    /// `POST path` with a JSON `body` as `who`.
    pub async fn post(&self, who: Who, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(who, Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON `body` as `who`.
    pub async fn patch(&self, who: Who, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(who, Method::PATCH, path, Some(body)).await
    }

    /// `GET path` as `who`, which must succeed; the body.
    pub async fn get_ok(&self, who: Who, path: &str) -> Value {
        ok("GET", path, self.get(who, path).await)
    }

    /// `POST path` as `who`, which must succeed; the body.
    pub async fn post_ok(&self, who: Who, path: &str, body: Value) -> Value {
        ok("POST", path, self.post(who, path, body).await)
    }

    /// `PATCH path` as `who`, which must succeed; the body.
    pub async fn patch_ok(&self, who: Who, path: &str, body: Value) -> Value {
        ok("PATCH", path, self.patch(who, path, body).await)
    }

    /// A money call (see [`Fixture::money`]) that must succeed; the body.
    pub async fn money_ok(&self, who: Who, path: &str, body: Value) -> Value {
        ok("POST", path, self.money(who, path, body).await)
    }

    /// A money call: `POST path` with a JSON `body` and a fresh Idempotency-Key.
    pub async fn money(&self, who: Who, path: &str, body: Value) -> (StatusCode, Value) {
        let key = format!("test-{}", outpost_controller::crypto::new_bearer(""));
        self.keyed(who, path, body, &key).await
    }

    /// `POST path` with a JSON `body` and the Idempotency-Key `key`, for retries.
    pub async fn keyed(&self, who: Who, path: &str, body: Value, key: &str) -> (StatusCode, Value) {
        self.call_with(
            who,
            CLIENT_IP.parse().unwrap(),
            Method::POST,
            path,
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
    }

    pub async fn call_with(
        &self,
        who: Who,
        ip: IpAddr,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut all = vec![(header::USER_AGENT.as_str(), "outpost-tests")];
        all.extend_from_slice(headers);
        self.request(self.secret(who).as_deref(), ip, method, path, body, &all)
            .await
    }

    /// Sends a request with bearer `secret` (none: anonymous), `headers` and a JSON
    /// `body` from `ip`; the people's routes and the agents' alike.
    pub async fn request(
        &self,
        secret: Option<&str>,
        ip: IpAddr,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(s) = secret {
            b = b.header(header::AUTHORIZATION, format!("Bearer {s}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let (status, _, v) = self.send(req, ip).await;
        (status, v)
    }

    /// Sends a raw request; returns status, headers and the JSON body (Null if none).
    pub async fn send(
        &self,
        req: Request<Body>,
        ip: IpAddr,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        send_via(&self.app, req, ip).await
    }

    /// Number of audit entries, and the newest one.
    pub fn audit_tail(&self) -> (i64, Option<LastEntry>) {
        self.state
            .db
            .write_blocking(|tx| {
                let n: i64 = tx.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
                let last = tx
                    .query_row(
                        "SELECT actor_user_id, action, security, impersonator_id FROM audit_log ORDER BY id DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .ok();
                Ok((n, last))
            })
            .unwrap()
    }

    /// Runs SQL against the database directly (for assertions only).
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.state
            .db
            .write_blocking(|tx| Ok(tx.query_row(sql, [], |r| r.get(0))?))
            .unwrap()
    }
}

/// Sends a raw request to `app` as if from `ip`; returns status, headers and the JSON
/// body (Null if none). For routers other than the fixture's public one (the tunnel's).
pub async fn send_via(
    app: &Router,
    mut req: Request<Body>,
    ip: IpAddr,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, v)
}

/// A `[tunnel]` section as an operator writes it (userspace, one endpoint, defaults).
pub fn tunnel_config() -> outpost_controller::config::TunnelConfig {
    Config::parse("[tunnel]\nbackend = \"userspace\"\nendpoints = [\"192.0.2.1:51820\"]\n")
        .unwrap()
        .tunnel
        .unwrap()
}

/// The newest audit entry: actor, action, security flag, impersonator.
pub type LastEntry = (Option<i64>, String, bool, Option<i64>);

/// Asserts a 200 and hands back the body; the request and body say which call failed.
fn ok(method: &str, path: &str, (status, body): (StatusCode, Value)) -> Value {
    assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
    body
}

/// Asserts a refusal: the status and the error body's code, showing the body when either differs.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!((status, error_code(body).as_str()), (want, code), "{body}");
}

/// Asserts the API's error body shape and returns its code.
pub fn error_code(v: &Value) -> String {
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"));
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {v}"
    );
    code.to_string()
}

/// Plans, cards and balances of the fixture:
///
/// ```text
/// operator plan "op-basic" (20/5 Mbit/s, 30 days, 25.00)
///   ├─ on A's card at 10.00 ── A's "a-retail" (10/2, 22.00) ── on A1's card at 15.00 ── A1's "a1-retail" (8/1, 20.00)
///   │                       └─ A's "a-home" (20/5, 30.00), not assigned onward
///   └─ on B's card at 11.00 ── B's "b-retail" (20/5, 24.00)
/// balances: A 800.00 (1000 from the operator, 200 passed to A1), A1 200.00, B 1000.00
/// ```
/// Each subscriber is on its tenant's `Holdings::plan`.
fn seed_billing(
    state: &AppState,
    op: Holdings,
    a: Holdings,
    a1: Holdings,
    b: Holdings,
) -> (Holdings, Holdings, Holdings, Holdings) {
    use outpost_controller::billing::{self, AdjustmentKind, By};
    use outpost_controller::db::plan::{self, NewPlan};
    let cur = state.currency.clone();
    let who = outpost_controller::bootstrap::system();
    state
        .db
        .write_blocking(|tx| {
            let t = |id| tenant::get(tx, id).map(|t| t.unwrap());
            let money = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
            let mk = |owner: &Tenant,
                      name: &str,
                      parent: Option<i64>,
                      down: i64,
                      up: i64,
                      price: &str| {
                plan::create(
                    tx,
                    owner,
                    &NewPlan {
                        validity_days: if parent.is_none() { Some(30) } else { None },
                        ..NewPlan::priced(name, parent, down, up, money(price))
                    },
                    &cur,
                )
                .map(|p| p.id)
            };
            let (root, ta, ta1, tb) = (t(1)?, t(2)?, t(3)?, t(4)?);
            let basic = mk(&root, "op-basic", None, 20_000, 5_000, "25.00")?;
            plan::set_card(tx, &ta, basic, 1000)?;
            plan::set_card(tx, &tb, basic, 1100)?;
            let a_retail = mk(&ta, "a-retail", Some(basic), 10_000, 2_000, "22.00")?;
            let a_home = mk(&ta, "a-home", Some(basic), 20_000, 5_000, "30.00")?;
            plan::set_card(tx, &ta1, a_retail, 1500)?;
            let a1_retail = mk(&ta1, "a1-retail", Some(a_retail), 8_000, 1_000, "20.00")?;
            let b_retail = mk(&tb, "b-retail", Some(basic), 20_000, 5_000, "24.00")?;
            let as_parent = |tenant: &Tenant| By::within(&who, tenant);
            for (parent, child, amount) in [
                (&root, &ta, 100_000),
                (&root, &tb, 100_000),
                (&ta, &ta1, 20_000),
            ] {
                billing::add_balance(
                    tx,
                    &as_parent(parent),
                    child,
                    amount,
                    AdjustmentKind::Adjustment,
                    Some("fixture"),
                    &cur,
                )?;
            }
            for (sub, p) in [
                (op.subscriber, basic),
                (a.subscriber, a_home),
                (a1.subscriber, a1_retail),
                (b.subscriber, b_retail),
            ] {
                tx.execute(
                    "UPDATE subscribers SET plan_id = ?2 WHERE id = ?1",
                    [sub, p],
                )?;
            }
            Ok((
                Holdings {
                    plan: basic,
                    card_plan: None,
                    ..op
                },
                Holdings {
                    plan: a_home,
                    card_plan: Some(basic),
                    ..a
                },
                Holdings {
                    plan: a1_retail,
                    card_plan: Some(a_retail),
                    ..a1
                },
                Holdings {
                    plan: b_retail,
                    card_plan: Some(basic),
                    ..b
                },
            ))
        })
        .unwrap()
}

/// A public key-shaped value: enrollment checks only that it is 32 bytes of base64.
pub const TEST_WG_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

/// A key-shaped value of its own per `n`: two live agents cannot share a key.
pub fn test_wg_key(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([n; 32])
}

/// Enrolls one agent per site through the real token flow.
fn enroll_agents(state: &AppState, sites: &[i64]) -> HashMap<i64, (i64, String)> {
    use outpost_controller::db::agent;
    state
        .db
        .write_blocking(|tx| {
            let mut out = HashMap::new();
            for site in sites {
                let token = outpost_controller::crypto::new_bearer("ope_");
                agent::create_token(tx, *site, 1, 3600, &token)?;
                let credential = outpost_controller::crypto::new_bearer("opa_");
                let r = agent::enroll(
                    tx,
                    &outpost_protocol::EnrollRequest {
                        token,
                        wireguard_public_key: test_wg_key(*site as u8),
                        hostname: format!("bng-{site}"),
                        agent_version: "test".into(),
                        protocol_version: outpost_protocol::PROTOCOL_VERSION,
                    },
                    &credential,
                    state.tunnel.as_deref(),
                    &state.secrets,
                )?;
                if let Some(t) = &state.tunnel {
                    t.apply(&r.peers)?;
                }
                out.insert(*site, (r.response.agent_id, credential));
            }
            Ok(out)
        })
        .unwrap()
}
