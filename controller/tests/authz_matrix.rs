//! The authorization matrix: every route × every kind of actor × {own resource, another
//! tenant's resource}, with the expected status. Each cell runs on a fresh fixture, and
//! each cell that changes something must leave exactly one audit entry by that actor.
//!
//! `route_table_covers_every_route` fails when the router gains a route with no row here.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{ACTORS, Fixture, PASSWORD, Target, Who, error_code, holdings};
use serde_json::{Value, json};

/// Expected statuses per actor, `[own, other]`; 0 = the cell does not apply (the route
/// addresses only the caller's own things, so there is no "other tenant's" resource).
/// Actor order: operator staff, reseller A, sub-reseller A1, manager of A (view/create
/// customers, suspend/reconnect), reseller B, anonymous.
type Cells = [[u16; 2]; 6];

#[rustfmt::skip]
const MATRIX: &[(&str, &str, Cells)] = &[
    //                                                 Op          A           A1          M(of A)     B           anon
    ("POST", "/api/v1/session",                     [[200, 401], [200, 401], [200, 401], [200, 401], [200, 401], [200, 401]]),
    ("DELETE", "/api/v1/session",                   [[204, 0],   [204, 0],   [204, 0],   [204, 0],   [204, 0],   [401, 0]]),
    ("GET", "/api/v1/me",                           [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("PUT", "/api/v1/me/password",                  [[204, 0],   [204, 0],   [204, 0],   [204, 0],   [204, 0],   [401, 0]]),
    ("GET", "/api/v1/tokens",                       [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/tokens",                      [[201, 0],   [201, 0],   [201, 0],   [201, 0],   [201, 0],   [401, 0]]),
    ("DELETE", "/api/v1/tokens/{id}",               [[204, 404], [204, 404], [204, 404], [204, 404], [204, 404], [401, 401]]),
    ("GET", "/api/v1/resellers",                    [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/resellers",                   [[201, 201], [201, 403], [422, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/resellers/{id}",               [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/resellers/{id}",             [[200, 200], [200, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    // Every fixture reseller holds subscribers and money: refused (tests/cascade.rs deletes an empty one).
    ("DELETE", "/api/v1/resellers/{id}",            [[409, 409], [409, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("GET", "/api/v1/resellers/{id}/brand",         [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PUT", "/api/v1/resellers/{id}/brand",         [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    // An export is audited (it carries secrets, encrypted); a subtree is one's own tenant or below.
    ("POST", "/api/v1/resellers/{id}/export",       [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    // The cell's body is no archive: refused before anything is read (the scoped cases are in tests/backup.rs).
    ("POST", "/api/v1/resellers/restore",           [[400, 0],   [400, 0],   [400, 0],   [403, 0],   [400, 0],   [401, 0]]),
    ("GET", "/api/v1/users",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/users",                       [[201, 201], [201, 403], [201, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/users/{id}",                   [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/users/{id}",                 [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/users/{id}/impersonate",      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/subscribers",                  [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/subscribers",                 [[201, 201], [201, 403], [201, 403], [201, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/subscribers/{id}",             [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/subscribers/{id}",           [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/subscribers/bulk",            [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("GET", "/api/v1/sites",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/sites",                       [[201, 201], [201, 403], [201, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/sites/{id}",                   [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/sites/{id}",                 [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/nas",                          [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/nas",                         [[201, 201], [201, 403], [201, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/nas/{id}",                     [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/nas/{id}",                   [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/audit",                        [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/openapi.json",                 [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0]]),
    ("GET", "/api/v1/plans",                        [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/plans",                       [[201, 201], [201, 403], [201, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/plans/{id}",                   [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/plans/{id}",                 [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/resellers/{id}/rate-card",     [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/resellers/{id}/rate-card",    [[200, 200], [200, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("POST", "/api/v1/resellers/{id}/balance",      [[200, 200], [200, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("POST", "/api/v1/resellers/{id}/adjustments",  [[200, 200], [200, 404], [404, 404], [403, 403], [404, 404], [401, 401]]),
    ("GET", "/api/v1/resellers/{id}/statement",     [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/subscribers/{id}/renew",      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/subscribers/{id}/payments",   [[201, 201], [201, 404], [201, 404], [403, 403], [201, 404], [401, 401]]),
    ("GET", "/api/v1/ledger",                       [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/reports/summary",              [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/sites/{id}/enrollment-tokens", [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("POST", "/api/v1/sites/{id}/enrollment-tokens",[[201, 201], [201, 404], [201, 404], [403, 403], [201, 404], [401, 401]]),
    ("DELETE", "/api/v1/enrollment-tokens/{id}",    [[204, 204], [204, 404], [204, 404], [403, 403], [204, 404], [401, 401]]),
    ("GET", "/api/v1/sites/{id}/agent",             [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("DELETE", "/api/v1/sites/{id}/agent",          [[204, 204], [204, 404], [204, 404], [403, 403], [204, 404], [401, 401]]),
    ("GET", "/api/v1/sites/{id}/events",            [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/subscribers/{id}/sessions",    [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("GET", "/api/v1/subscribers/{id}/usage",       [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("GET", "/api/v1/subscribers/{id}/wan",         [[200, 200], [200, 404], [200, 404], [200, 404], [200, 404], [401, 401]]),
    ("GET", "/api/v1/wan/targets",                  [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/wan/outages",                  [[200, 0],   [200, 0],   [200, 0],   [200, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/wan/report",                   [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/messaging/providers",          [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/messaging/providers",         [[200, 200], [200, 403], [200, 403], [403, 403], [200, 403], [401, 401]]),
    ("GET", "/api/v1/messaging/providers/{id}",     [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("DELETE", "/api/v1/messaging/providers/{id}",  [[204, 204], [204, 404], [204, 404], [403, 403], [204, 404], [401, 401]]),
    ("GET", "/api/v1/messaging/templates",          [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/messaging/templates",         [[200, 200], [200, 403], [200, 403], [403, 403], [200, 403], [401, 401]]),
    ("GET", "/api/v1/messaging/templates/{id}",     [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("DELETE", "/api/v1/messaging/templates/{id}",  [[204, 204], [204, 404], [204, 404], [403, 403], [204, 404], [401, 401]]),
    ("GET", "/api/v1/messaging/settings/{id}",      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PUT", "/api/v1/messaging/settings/{id}",      [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("GET", "/api/v1/messages",                     [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("GET", "/api/v1/messages/{id}",                [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    // Notices need send_notifications, which the matrix's manager lacks.
    ("GET", "/api/v1/notices",                      [[200, 0],   [200, 0],   [200, 0],   [403, 0],   [200, 0],   [401, 0]]),
    ("POST", "/api/v1/notices",                     [[201, 201], [201, 403], [201, 403], [403, 403], [201, 403], [401, 401]]),
    ("GET", "/api/v1/notices/{id}",                 [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("PATCH", "/api/v1/notices/{id}",               [[200, 200], [200, 404], [200, 404], [403, 403], [200, 404], [401, 401]]),
    ("DELETE", "/api/v1/notices/{id}",              [[204, 204], [204, 404], [204, 404], [403, 403], [204, 404], [401, 401]]),
    // Agent routes: no person's credential works there (a bad enrollment token is 401 too).
    ("POST", "/agent/v1/enroll",                    [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
    ("GET", "/agent/v1/state",                      [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
    ("POST", "/agent/v1/ack",                       [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
    ("POST", "/agent/v1/events",                    [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
    ("POST", "/agent/v1/rotate-key",                [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
    ("POST", "/agent/v1/rotate-key/confirm",        [[401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0],   [401, 0]]),
];

/// Routes that move money and so take an Idempotency-Key.
const MONEY: &[&str] = &[
    "/api/v1/resellers/{id}/balance",
    "/api/v1/resellers/{id}/adjustments",
    "/api/v1/subscribers/{id}/renew",
    "/api/v1/subscribers/{id}/payments",
];

/// The reseller record addressed: a child for the operator and A; the caller's own
/// tenant for A1 and B (readable, not editable).
fn reseller_record(who: Who, t: Target) -> i64 {
    match (who, t) {
        (Who::Op | Who::M | Who::Anon, Target::Own) => 2,
        (Who::A | Who::A1, Target::Own) => 3,
        (Who::B, Target::Own) => 4,
        (Who::Op | Who::A | Who::Anon, Target::Other) => 4,
        (Who::A1 | Who::B, Target::Other) => 2,
        (Who::M, Target::Other) => 3,
    }
}

fn other_actor(who: Who) -> Who {
    match who {
        Who::A => Who::B,
        _ => Who::A,
    }
}

/// Builds the concrete path and body of one cell.
fn request(
    fx: &Fixture,
    method: &str,
    route: &str,
    who: Who,
    t: Target,
) -> (String, Option<Value>) {
    let h = holdings(fx, who, t);
    let uniq = format!("{who:?}-{t:?}").to_lowercase();
    let own_email = fx
        .emails
        .get(&who)
        .cloned()
        .unwrap_or_else(|| fx.emails[&Who::A].clone());
    let body = match (method, route) {
        ("POST", "/api/v1/session") => Some(json!({
            "email": own_email,
            "password": if t == Target::Own { PASSWORD } else { "wrong-password" },
        })),
        ("PUT", "/api/v1/me/password") => {
            Some(json!({ "current_password": PASSWORD, "new_password": "a-new-password-2" }))
        }
        ("POST", "/api/v1/tokens") => Some(json!({ "name": "ci script", "expires_in_days": 30 })),
        ("POST", "/api/v1/resellers") => {
            Some(json!({ "name": format!("New {uniq}"), "parent_id": h.tenant }))
        }
        ("PATCH", "/api/v1/resellers/{id}") => Some(json!({ "name": "Renamed reseller" })),
        ("PUT", "/api/v1/resellers/{id}/brand") => Some(json!({
            "name": "Skylink", "color": "#0a7d32", "logo_url": "https://cdn.example/l.png", "contact": "+1 555 0100",
        })),
        ("POST", "/api/v1/users") => Some(json!({
            "email": format!("{uniq}@new.test"), "name": "New manager", "password": "manager-password-1",
            "kind": "manager", "tenant_id": h.tenant, "permissions": ["view_customers"],
        })),
        ("PATCH", "/api/v1/users/{id}") => Some(json!({ "name": "Renamed user" })),
        ("POST", "/api/v1/subscribers") => Some(
            json!({ "username": format!("new-{uniq}"), "password": "ppp-secret", "tenant_id": h.tenant }),
        ),
        ("PATCH", "/api/v1/subscribers/{id}") => Some(json!({ "notes": "called about billing" })),
        ("POST", "/api/v1/subscribers/bulk") => {
            Some(json!({ "action": "suspend", "ids": [h.subscriber] }))
        }
        ("POST", "/api/v1/sites") => {
            Some(json!({ "name": format!("Site {uniq}"), "tenant_id": h.tenant }))
        }
        ("PATCH", "/api/v1/sites/{id}") => Some(json!({ "location": "Grain silo" })),
        ("POST", "/api/v1/nas") => Some(json!({
            "name": "nas new", "site_id": h.site, "ip": "192.0.2.77", "secret": "new-secret-1",
            "kind": "accel-ppp", "tenant_id": h.tenant,
        })),
        ("PATCH", "/api/v1/nas/{id}") => Some(json!({ "coa_port": 1700 })),
        ("POST", "/api/v1/plans") => Some(json!({
            "name": format!("Plan {uniq}"), "tenant_id": h.tenant, "parent_plan_id": h.card_plan,
            "download_kbps": 1000, "upload_kbps": 500, "price": "19.99",
        })),
        ("PATCH", "/api/v1/plans/{id}") => Some(json!({ "price": "21.00" })),
        ("POST", "/api/v1/resellers/{id}/rate-card") => {
            // A plan of the record's parent: the operator's for A and B, one of A's for A1.
            let plan = if reseller_record(who, t) == 3 {
                fx.a.plan
            } else {
                fx.op_tenant.plan
            };
            Some(json!({ "plan_id": plan, "wholesale_price": "9.99" }))
        }
        ("POST", "/api/v1/resellers/{id}/balance") => {
            Some(json!({ "amount": "12.34", "note": "top-up" }))
        }
        ("POST", "/api/v1/resellers/{id}/adjustments") => {
            Some(json!({ "kind": "adjustment", "amount": "-1.00", "reason": "duplicate top-up" }))
        }
        ("POST", "/api/v1/subscribers/{id}/renew") => Some(json!({ "periods": 1 })),
        ("POST", "/api/v1/subscribers/{id}/payments") => {
            Some(json!({ "amount": "25.00", "method": "cash", "reference": "R-1" }))
        }
        ("POST", "/api/v1/sites/{id}/enrollment-tokens") => Some(json!({ "ttl_hours": 2 })),
        ("POST", "/api/v1/messaging/providers") => Some(json!({
            "tenant_id": h.tenant, "channel": "sms",
            "config": { "kind": "http", "url": "http://192.0.2.1/send", "method": "POST", "body_type": "text", "body": "{{text}}" },
        })),
        ("POST", "/api/v1/messaging/templates") => Some(json!({
            "tenant_id": h.tenant, "trigger": "renewed", "channel": "sms", "body": "Hi {{name}}",
        })),
        ("PUT", "/api/v1/messaging/settings/{id}") => {
            Some(json!({ "reminder_days": 2, "per_minute": 30, "portal_url": null }))
        }
        ("POST", "/api/v1/notices") => Some(json!({
            "title": format!("Outage {uniq}"), "body": "Fibre cut", "tenant_id": h.tenant,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z",
        })),
        ("PATCH", "/api/v1/notices/{id}") => Some(json!({ "title": "Outage, updated" })),
        ("POST", "/agent/v1/enroll") => Some(json!({
            "token": "ope_not-a-real-token", "wireguard_public_key": common::TEST_WG_KEY, "hostname": "bng",
            "agent_version": "1", "protocol_version": outpost_protocol::PROTOCOL_VERSION,
        })),
        ("POST", "/agent/v1/ack") => {
            Some(json!({ "revision": 1, "digest": "00", "agent_version": "1" }))
        }
        ("POST", "/agent/v1/events") => Some(json!({ "events": [] })),
        ("POST", "/agent/v1/rotate-key") | ("POST", "/agent/v1/rotate-key/confirm") => {
            Some(json!({ "new_public_key": common::TEST_WG_KEY }))
        }
        (_, _) => None,
    };
    let id = match route {
        "/api/v1/tokens/{id}" => {
            let owner = if t == Target::Own && who != Who::Anon {
                who
            } else {
                other_actor(who)
            };
            fx.tokens[&owner]
        }
        "/api/v1/resellers/{id}"
        | "/api/v1/resellers/{id}/brand"
        | "/api/v1/resellers/{id}/export"
        | "/api/v1/resellers/{id}/rate-card"
        | "/api/v1/resellers/{id}/balance"
        | "/api/v1/resellers/{id}/adjustments"
        | "/api/v1/resellers/{id}/statement" => reseller_record(who, t),
        "/api/v1/plans/{id}" => h.plan,
        "/api/v1/sites/{id}/enrollment-tokens"
        | "/api/v1/sites/{id}/agent"
        | "/api/v1/sites/{id}/events" => h.site,
        "/api/v1/subscribers/{id}/sessions"
        | "/api/v1/subscribers/{id}/usage"
        | "/api/v1/subscribers/{id}/wan" => h.subscriber,
        "/api/v1/subscribers/{id}/renew" | "/api/v1/subscribers/{id}/payments" => h.subscriber,
        "/api/v1/users/{id}" | "/api/v1/users/{id}/impersonate" => h.manager,
        "/api/v1/subscribers/{id}" => h.subscriber,
        "/api/v1/sites/{id}" => h.site,
        "/api/v1/nas/{id}" => h.nas,
        "/api/v1/messaging/settings/{id}" => h.tenant,
        // A provider, template or message of the cell's tenant, made for the cell.
        "/api/v1/messaging/providers/{id}" => fx
            .state
            .db
            .write_blocking(|tx| {
                use outpost_controller::db::{messages, tenant};
                let owner = tenant::get(tx, h.tenant)?.unwrap();
                let input: messages::NewProvider = serde_json::from_value(json!({
                    "channel": "sms", "secret": "gw-key",
                    "config": { "kind": "http", "url": "http://192.0.2.1/send", "method": "POST", "body_type": "text", "body": "{{text}}" },
                }))
                .unwrap();
                Ok(messages::put_provider(tx, &owner, &input, &fx.state.secrets)?.1.id)
            })
            .unwrap(),
        "/api/v1/messaging/templates/{id}" => fx
            .state
            .db
            .write_blocking(|tx| {
                use outpost_controller::db::{messages, tenant};
                let owner = tenant::get(tx, h.tenant)?.unwrap();
                let input: messages::NewTemplate = serde_json::from_value(
                    json!({ "trigger": "expired", "channel": "sms", "body": "Expired, {{name}}" }),
                )
                .unwrap();
                Ok(messages::put_template(tx, &owner, &input)?.1.id)
            })
            .unwrap(),
        "/api/v1/messages/{id}" => fx
            .state
            .db
            .write_blocking(|tx| {
                use outpost_controller::db::messages;
                let key = format!("matrix:{}:{}", h.tenant, h.subscriber);
                messages::enqueue(
                    tx,
                    &messages::NewMessage {
                        tenant_id: h.tenant,
                        subscriber_id: h.subscriber,
                        trigger: outpost_controller::messaging::Trigger::Renewed,
                        idempotency_key: &key,
                        channel: outpost_controller::messaging::Channel::Sms,
                        recipient: "+15550100",
                        subject: None,
                        body: "renewed",
                        whatsapp: None,
                        fallback_body: None,
                    },
                )?;
                Ok(tx.query_row("SELECT max(id) FROM messages", [], |r| r.get::<_, i64>(0))?)
            })
            .unwrap(),
        // A notice of the cell's tenant, made for the cell.
        "/api/v1/notices/{id}" => {
            fx.state
                .db
                .write_blocking(|tx| {
                    let owner = outpost_controller::db::tenant::get(tx, h.tenant)?.unwrap();
                    let input: outpost_controller::db::notice::NewNotice =
                        serde_json::from_value(json!({
                            "title": "Maintenance", "starts_at": "2026-01-01T00:00:00Z",
                            "ends_at": "2026-01-02T00:00:00Z",
                        }))
                        .unwrap();
                    let scope = outpost_controller::scope::Scope::Direct {
                        tenant_id: h.tenant,
                    };
                    outpost_controller::db::notice::create(tx, &scope, &owner, false, &input, None)
                })
                .unwrap()
                .id
        }
        // An unused token of the cell's site, made for the cell.
        "/api/v1/enrollment-tokens/{id}" => {
            fx.state
                .db
                .write_blocking(|tx| {
                    let by = fx.user_id(Who::Op);
                    let secret = outpost_controller::crypto::new_bearer("ope_");
                    outpost_controller::db::agent::create_token(tx, h.site, by, 3600, &secret)
                })
                .unwrap()
                .id
        }
        _ => 0,
    };
    let path = route.replace("{id}", &id.to_string());
    let path = if route == "/agent/v1/state" {
        format!("{path}?since=0")
    } else {
        path
    };
    (path, body)
}

fn who_index(who: Who) -> usize {
    ACTORS.iter().position(|w| *w == who).unwrap()
}

#[tokio::test]
async fn authorization_matrix() {
    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, route, expect) in MATRIX {
        for who in ACTORS {
            for (ti, t) in [Target::Own, Target::Other].into_iter().enumerate() {
                let want = expect[who_index(who)][ti];
                if want == 0 {
                    continue;
                }
                cells += 1;
                let fx = Fixture::new();
                let (path, body) = request(&fx, method, route, who, t);
                let (before, _) = fx.audit_tail();
                let m = Method::from_bytes(method.as_bytes()).unwrap();
                let key = format!("matrix-{cells}");
                let headers: &[(&str, &str)] = if MONEY.contains(route) {
                    &[("idempotency-key", &key)]
                } else {
                    &[]
                };
                let ip = common::CLIENT_IP.parse().unwrap();
                let (status, resp) = fx.call_with(who, ip, m.clone(), &path, body, headers).await;
                let cell = format!("{method} {path} as {who:?} ({t:?})");
                if status.as_u16() != want {
                    failures.push(format!(
                        "{cell}: want {want}, got {} {resp}",
                        status.as_u16()
                    ));
                    continue;
                }
                if !status.is_success() && status != StatusCode::OK {
                    error_code(&resp);
                }
                // Audit: a change leaves exactly one entry by the actor; a read or a plain
                // refusal leaves none; a login failure or an out-of-tree attempt leaves one
                // security event.
                let (after, last) = fx.audit_tail();
                let delta = after - before;
                let expected_actor = if *method == "POST" && *route == "/api/v1/session" {
                    fx.users.get(&who).or(fx.users.get(&Who::A)).map(|u| u.0)
                } else {
                    fx.users.get(&who).map(|u| u.0)
                };
                let mutating = m != Method::GET;
                if status.is_success() && mutating {
                    let (actor, action, _, _) = last.clone().unwrap();
                    if delta != 1 || actor != expected_actor {
                        failures.push(format!("{cell}: want 1 audit entry by {expected_actor:?}, got {delta} (last {action} by {actor:?})"));
                    }
                } else if status.is_success() {
                    if delta != 0 {
                        failures.push(format!("{cell}: a read wrote {delta} audit entries"));
                    }
                } else {
                    let code = resp["error"]["code"].as_str().unwrap_or("");
                    let security = matches!(code, "invalid_credentials" | "tenant_out_of_scope");
                    let want_delta = if security { 1 } else { 0 };
                    if delta != want_delta {
                        failures.push(format!(
                            "{cell}: refusal {code} wrote {delta} audit entries, want {want_delta}"
                        ));
                    } else if security && !last.as_ref().unwrap().2 {
                        failures.push(format!(
                            "{cell}: refusal {code} was not recorded as a security event"
                        ));
                    }
                }
            }
        }
    }
    common::assert_matrix(cells, 400, &failures);
}

/// Every route the router serves has a matrix row, and every row is a real route.
#[test]
fn route_table_covers_every_route() {
    let spec = outpost_controller::http::api_router().into_openapi();
    let mut served = BTreeSet::new();
    for (path, item) in &spec.paths.paths {
        for (m, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if op.is_some() {
                served.insert((m.to_string(), path.clone()));
            }
        }
    }
    let table: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(table.len(), MATRIX.len(), "the matrix has a duplicate row");
    let missing: Vec<_> = served.difference(&table).collect();
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes with no row in the authorization matrix: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "matrix rows for routes that do not exist: {stale:?}"
    );
}

/// A manager holding every permission, against a child tenant of the tenant it was
/// created under (a manager of A against A1; the operator's manager against A), on every
/// route that takes a tenant id in the path, the query or the body.
///
/// A manager may see and act on its tenant's direct children as reseller *records*
/// (they are that tenant's customers: record, rate card, brand, credit), but never the
/// rows those children own: their statement and revenue answer 404, filters by the
/// child's id list nothing of the child's, and nothing can be created for the child.
#[tokio::test]
async fn managers_reach_no_rows_of_their_tenants_children() {
    let fx = Fixture::new();
    let ip: std::net::IpAddr = common::CLIENT_IP.parse().unwrap();
    let all: Vec<&str> = outpost_controller::scope::Permission::ALL
        .iter()
        .map(|p| p.as_str())
        .collect();
    // Rows the child owns: a top-up from its parent and a renewal of its subscriber.
    fx.money_ok(
        Who::A,
        "/api/v1/resellers/3/balance",
        json!({ "amount": "50.00", "note": "top-up" }),
    )
    .await;
    let (s, v) = fx
        .money(
            Who::A1,
            &format!("/api/v1/subscribers/{}/renew", fx.a1.subscriber),
            json!({ "periods": 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let mut failures = Vec::new();
    // (creator, the manager's tenant, the child tenant, a plan of the manager's tenant)
    for (creator, own, child, site) in [(Who::A, 2, 3, fx.a1.site), (Who::Op, 1, 2, fx.a.site)] {
        let email = format!("all-perms-{own}@fixture.test");
        let (s, v) = fx
            .call(creator, Method::POST, "/api/v1/users", Some(json!({
                "email": email, "name": "All-permission manager", "password": "manager-password-1",
                "kind": "manager", "tenant_id": own, "permissions": all,
            })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let secret = manager_token(&fx, ip, &email).await;
        let child_sub = if child == 3 {
            fx.a1.subscriber
        } else {
            fx.a.subscriber
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, String, Option<Value>, u16)> = vec![
            // The child's own rows.
            ("GET", format!("/api/v1/resellers/{child}/statement"), None, 404),
            ("GET", format!("/api/v1/resellers/{child}/statement?format=csv"), None, 404),
            ("GET", format!("/api/v1/reports/summary?tenant_id={child}"), None, 404),
            // Filters naming the child: 200, with nothing of the child's.
            ("GET", format!("/api/v1/ledger?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/subscribers?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/users?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/sites?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/nas?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/plans?tenant_id={child}"), None, 200),
            ("GET", format!("/api/v1/resellers?parent_id={child}"), None, 200),
            ("GET", format!("/api/v1/audit?target_kind=reseller&target_id={child}"), None, 200),
            ("GET", format!("/api/v1/subscribers/{child_sub}"), None, 404),
            // Bodies naming the child.
            ("POST", "/api/v1/subscribers".into(), Some(json!({ "username": format!("m-{own}"), "password": "ppp-secret", "tenant_id": child })), 403),
            ("POST", "/api/v1/users".into(), Some(json!({ "email": format!("m-{own}@new.test"), "name": "x", "password": "manager-password-1", "kind": "manager", "tenant_id": child, "permissions": [] })), 403),
            ("POST", "/api/v1/sites".into(), Some(json!({ "name": format!("m-{own}"), "tenant_id": child })), 403),
            ("POST", "/api/v1/nas".into(), Some(json!({ "name": "m", "site_id": site, "ip": "192.0.2.78", "secret": "new-secret-1", "kind": "accel-ppp", "tenant_id": child })), 403),
            ("POST", "/api/v1/plans".into(), Some(json!({ "name": format!("m-{own}"), "tenant_id": child, "download_kbps": 1000, "upload_kbps": 500, "price": "1.00" })), 403),
            ("POST", "/api/v1/resellers".into(), Some(json!({ "name": format!("m-{own}"), "parent_id": child })), 403),
            // The child as a record of its parent's: readable.
            ("GET", format!("/api/v1/resellers/{child}"), None, 200),
            ("GET", format!("/api/v1/resellers/{child}/rate-card"), None, 200),
            ("GET", format!("/api/v1/resellers/{child}/brand"), None, 200),
        ];
        for (method, path, body, want) in cases {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, v) = fx.request(Some(&secret), ip, m, &path, body, &[]).await;
            let cell = format!("{method} {path} as the manager of tenant {own}");
            if status.as_u16() != want {
                failures.push(format!("{cell}: want {want}, got {} {v}", status.as_u16()));
                continue;
            }
            for item in v["items"].as_array().into_iter().flatten() {
                if let Some(t) = item["tenant_id"].as_i64().or(item["parent_id"].as_i64())
                    && t != own
                {
                    failures.push(format!("{cell}: lists a row of tenant {t}: {item}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Logs a user in and trades the session for an API token's secret.
async fn manager_token(fx: &Fixture, ip: std::net::IpAddr, email: &str) -> String {
    let login = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/session")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "email": email, "password": "manager-password-1" }).to_string(),
        ))
        .unwrap();
    let (s, headers, v) = fx.send(login, ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookie = outpost_testkit::api::cookie_of(&headers);
    let (s, v) = fx
        .request(
            None,
            ip,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "matrix" })),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["secret"].as_str().expect("a token secret").to_string()
}

/// Every operation has its own `operationId` (OpenAPI requires them unique; clients
/// generated from the spec name their methods by them).
#[test]
fn operation_ids_are_unique() {
    let spec = outpost_controller::http::api_router().into_openapi();
    let mut seen = std::collections::BTreeMap::new();
    let mut dup = Vec::new();
    for (path, item) in &spec.paths.paths {
        for op in [&item.get, &item.post, &item.put, &item.patch, &item.delete]
            .into_iter()
            .flatten()
        {
            let id = op.operation_id.clone().expect("every operation has an id");
            if let Some(first) = seen.insert(id.clone(), path.clone()) {
                dup.push(format!("{id}: {first} and {path}"));
            }
        }
    }
    assert!(dup.is_empty(), "duplicate operationIds: {dup:?}");
}

/// The statement answers JSON or CSV, and the spec says both (two `200` entries would
/// collapse into one).
#[test]
fn the_statement_documents_both_of_its_answers() {
    let spec = outpost_controller::http::api_router().into_openapi();
    let op = spec.paths.paths["/api/v1/resellers/{id}/statement"]
        .get
        .clone()
        .expect("the statement route");
    let ok = match &op.responses.responses["200"] {
        utoipa::openapi::RefOr::T(r) => r.clone(),
        _ => panic!("the 200 answer is a reference, not inline"),
    };
    let types: Vec<&String> = ok.content.keys().collect();
    assert_eq!(types, ["application/json", "text/csv"], "{types:?}");
}
