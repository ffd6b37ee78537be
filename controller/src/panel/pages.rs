//! The pages: dashboard, subscribers (list, detail, suspend/reconnect, renew, payment)
//! and logins ("log in as"). Each checks the permission the API route checks and reads
//! through the same scoped functions.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Chrome, Failure, PageResult, Posted, Viewer, opt_i64, render};
use crate::AppState;
use crate::billing::{self, By, PaymentMethod};
use crate::crypto::new_bearer;
use crate::db::paging::Page;
use crate::db::plan::{self, PlanFilter};
use crate::db::site;
use crate::db::subscriber::{
    self, Subscriber, SubscriberFilter, SubscriberPatch, SubscriberStatus,
};
use crate::db::tenant;
use crate::db::user::{self, UserFilter};
use crate::error::{Error, Result};
use crate::scope::{Actor, Permission, UserKind};

// ---------------------------------------------------------------------------------
// Dashboard

struct Count {
    label: &'static str,
    n: i64,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    title: String,
    tenant_name: String,
    subscribers: Option<(Vec<Count>, i64, i64)>,
    money: Option<(String, String, String)>,
    sites: Option<i64>,
    /// Sessions online now (view customers).
    online: Option<i64>,
    /// The first sites with their agents' sync state (manage sites).
    site_sync: Option<Vec<super::sites::SiteLine>>,
    /// The list holds fewer sites than there are (it shows the first ones).
    sites_more: bool,
    /// Renewal value and money collected, the last 12 months (view reports).
    revenue_chart: Option<String>,
}

/// How many sites the dashboard lists (with the count of all, and a link to the list).
const DASHBOARD_SITES: u32 = 20;

#[derive(Deserialize)]
pub struct DashboardQuery {
    tenant_id: Option<String>,
}

/// A tenant's figures: the actor's own tenant, or (`?tenant_id=`) one whose rows the
/// actor may read ([`tenant::rows_scope`]; anything else is the 404 page). Each figure
/// shows only when the function behind it is granted.
pub async fn dashboard(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<DashboardQuery>,
) -> PageResult {
    let a = v.actor.clone();
    let wanted = opt_i64("tenant_id", &q.tenant_id)?.unwrap_or(a.tenant_id);
    let (customers, invoices, sites, reports) = (
        a.can(Permission::ViewCustomers),
        a.can(Permission::ViewInvoices),
        a.can(Permission::ManageSites),
        a.can(Permission::ViewReports),
    );
    let cur = st.currency.clone();
    let page = st
        .read_scoped(&a, move |c, s| {
            let (t, scope) = tenant::rows_scope(c, s, wanted)?;
            let subscribers = if customers {
                let now = crate::db::now();
                let (by, expiring) = subscriber::counts(c, &scope, now, now + 7 * 86_400)?;
                let total = by.iter().map(|(_, n)| n).sum();
                let counts = [
                    SubscriberStatus::Active,
                    SubscriberStatus::Suspended,
                    SubscriberStatus::Expired,
                    SubscriberStatus::Disabled,
                ]
                .into_iter()
                .map(|st| Count {
                    label: st.as_str(),
                    n: by.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n),
                })
                .collect();
                Some((counts, total, expiring))
            } else {
                None
            };
            let money = (invoices && t.parent_id.is_some()).then(|| {
                (
                    cur.format(t.balance),
                    cur.format(t.credit_limit),
                    cur.code.clone(),
                )
            });
            let online = customers
                .then(|| crate::db::agent::online_count(c, &scope))
                .transpose()?;
            let (sites, site_sync) = if sites {
                let first = site::list(
                    c,
                    &scope,
                    &site::SiteFilter::default(),
                    crate::db::Paging::new(None, Some(DASHBOARD_SITES))?,
                )?;
                // A page read holds one row more than its limit (to tell whether
                // there is a next page): the dashboard shows the limit.
                let lines = first
                    .into_iter()
                    .take(DASHBOARD_SITES as usize)
                    .map(|s| {
                        let agent = super::sites::agent_of(c, s.id)?;
                        Ok(super::sites::SiteLine {
                            id: s.id,
                            name: s.name,
                            location: s.location,
                            agent: agent.as_ref().map(super::sites::AgentLine::from),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                (Some(site::count(c, &scope)?), Some(lines))
            } else {
                (None, None)
            };
            let revenue = reports
                .then(|| super::reports::dashboard_revenue(c, &scope, &cur))
                .transpose()?;
            Ok((
                t.name,
                subscribers,
                money,
                sites,
                online,
                site_sync,
                revenue,
            ))
        })
        .await?;
    let (tenant_name, subscribers, money, sites, online, site_sync, revenue_chart) = page;
    Ok(render(&DashboardPage {
        chrome: Chrome::new(&v.ctx, "dashboard"),
        title: "Dashboard".into(),
        tenant_name,
        subscribers,
        money,
        sites,
        online,
        sites_more: matches!((sites, &site_sync), (Some(n), Some(l)) if (l.len() as i64) < n),
        site_sync,
        revenue_chart,
    })
    .into_response())
}

// ---------------------------------------------------------------------------------
// Subscribers

/// The list's query string as a form sends it: empty fields are "any".
#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    plan_id: Option<String>,
    site_id: Option<String>,
    /// The reseller owning them (exactly that one; the list stays in the actor's scope).
    tenant_id: Option<String>,
    /// Active and expiring within this many days.
    expiring: Option<String>,
    cursor: Option<String>,
    /// After a bulk action: which, and how many it changed and left as they were.
    done: Option<String>,
    changed: Option<String>,
    unchanged: Option<String>,
}

impl ListQuery {
    /// What the last bulk action did, in words.
    fn notice(&self) -> Option<String> {
        let verb = match self.done.as_deref()? {
            "suspend" => "Suspended",
            "reconnect" => "Reconnected",
            "set_reseller" => "Moved",
            "renew" => "Renewed",
            _ => return None,
        };
        let n = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0)
        };
        Some(format!(
            "{verb} {} subscriber(s); {} left as they were.",
            n(&self.changed),
            n(&self.unchanged)
        ))
    }

    fn filter(&self) -> Result<SubscriberFilter> {
        let status = match self.status.as_deref().map(str::trim).unwrap_or("") {
            "" => None,
            s => Some(
                serde_json::from_value::<SubscriberStatus>(serde_json::Value::String(s.into()))
                    .map_err(|_| Error::invalid(format!("status: '{s}' is not a status")))?,
            ),
        };
        Ok(SubscriberFilter {
            q: self.q.clone().filter(|q| !q.trim().is_empty()),
            status,
            tenant_id: opt_i64("tenant_id", &self.tenant_id)?,
            site_id: opt_i64("site_id", &self.site_id)?,
            plan_id: opt_i64("plan_id", &self.plan_id)?,
            expiring_days: match self.expiring.as_deref().map(str::trim).unwrap_or("") {
                "" => None,
                d => Some(d.parse::<u32>().ok().filter(|d| *d <= 366).ok_or_else(|| {
                    Error::invalid(format!(
                        "expiring: '{d}' is not a number of days (0 to 366)"
                    ))
                })?),
            },
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
            limit: Some(50),
        })
    }

    /// This query string with another cursor (the filters kept).
    fn with_cursor(&self, cursor: &str) -> String {
        #[derive(Serialize)]
        struct Q<'a> {
            q: &'a str,
            status: &'a str,
            plan_id: &'a str,
            site_id: &'a str,
            tenant_id: &'a str,
            expiring: &'a str,
            cursor: &'a str,
        }
        let q = Q {
            q: self.q.as_deref().unwrap_or(""),
            status: self.status.as_deref().unwrap_or(""),
            plan_id: self.plan_id.as_deref().unwrap_or(""),
            site_id: self.site_id.as_deref().unwrap_or(""),
            tenant_id: self.tenant_id.as_deref().unwrap_or(""),
            expiring: self.expiring.as_deref().unwrap_or(""),
            cursor,
        };
        format!(
            "/panel/subscribers?{}",
            serde_urlencoded_lite(&serde_json::to_value(q).expect("serializes"))
        )
    }
}

/// `a=1&b=2` from a flat JSON object of strings, percent-encoded.
fn serde_urlencoded_lite(v: &serde_json::Value) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v.as_str().unwrap_or(""))))
        .collect::<Vec<_>>()
        .join("&")
}

struct Row {
    id: i64,
    username: String,
    name: String,
    phone: String,
    status: &'static str,
    expires: String,
    mac: String,
    ip: String,
}

impl From<&Subscriber> for Row {
    fn from(s: &Subscriber) -> Row {
        Row {
            id: s.id,
            username: s.username.clone(),
            name: s.name.clone(),
            phone: s.phone.clone(),
            status: s.status.as_str(),
            expires: s
                .expires_at
                .as_deref()
                .map(|e| e.get(..10).unwrap_or(e).to_string())
                .unwrap_or_else(|| "never".into()),
            mac: s.mac.clone().unwrap_or_default(),
            ip: s.static_ipv4.map(|i| i.to_string()).unwrap_or_default(),
        }
    }
}

struct Rows {
    rows: Vec<Row>,
    next: Option<String>,
    /// The rows can be ticked for a bulk action.
    pick: bool,
}

#[derive(Template)]
#[template(path = "subscriber_rows.html")]
struct RowsFragment {
    list: Rows,
}

pub(super) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "subscribers.html")]
struct SubscribersPage {
    chrome: Chrome,
    title: String,
    notice: Option<String>,
    can_create: bool,
    /// The bulk actions granted, as (value, label).
    bulk: Vec<(&'static str, &'static str)>,
    bulk_key: String,
    owners: Option<Vec<Choice>>,
    /// The resellers to filter by (for those who manage resellers).
    resellers: Option<Vec<Choice>>,
    q: String,
    statuses: Vec<Choice>,
    expiring: Vec<Choice>,
    plans: Vec<Choice>,
    sites: Option<Vec<Choice>>,
    list: Rows,
}

pub(super) fn choices(items: Vec<(String, String)>, current: Option<&str>) -> Vec<Choice> {
    items
        .into_iter()
        .map(|(value, label)| Choice {
            selected: current == Some(value.as_str()),
            value,
            label,
        })
        .collect()
}

/// Search (username, name, phone, email, MAC, IP), filters and keyset paging, through
/// the API's list ([`AppState::list_page`] over [`subscriber::list`]). With
/// `X-Panel-Fragment: 1` only the result rows are answered, for the page's script.
pub async fn subscribers(
    State(st): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewCustomers)?;
    let f = q.filter()?;
    let page: Page<Subscriber> = st
        .list_page(&v.actor, f, subscriber::list, |s| s.id)
        .await?;
    let a = &v.actor;
    let bulk: Vec<(&str, &str)> = [
        (a.can(Permission::SuspendReconnect), "suspend", "Suspend"),
        (
            a.can(Permission::SuspendReconnect),
            "reconnect",
            "Reconnect",
        ),
        (
            a.can(Permission::RecordPayments),
            "renew",
            "Renew one period",
        ),
        (
            a.can(Permission::EditCustomers) && a.can(Permission::ManageResellers),
            "set_reseller",
            "Move to reseller",
        ),
    ]
    .into_iter()
    .filter(|(granted, ..)| *granted)
    .map(|(_, v, l)| (v, l))
    .collect();
    let list = Rows {
        rows: page.items.iter().map(Row::from).collect(),
        next: page.next_cursor.as_deref().map(|c| q.with_cursor(c)),
        pick: !bulk.is_empty(),
    };
    if headers.get("x-panel-fragment").is_some() {
        return Ok(render(&RowsFragment { list }).into_response());
    }
    let o = super::subscriber_forms::options(&st, &v.actor).await?;
    let statuses = ["active", "suspended", "expired", "disabled"]
        .into_iter()
        .map(|s| (s.to_string(), s.to_string()))
        .collect();
    Ok(render(&SubscribersPage {
        chrome: Chrome::new(&v.ctx, "subscribers"),
        title: "Subscribers".into(),
        notice: q.notice(),
        can_create: v.actor.can(Permission::CreateCustomers),
        bulk,
        bulk_key: new_bearer("pk_"),
        resellers: o.owners.clone().map(|s| choices(s, q.tenant_id.as_deref())),
        owners: o.owners.map(|s| choices(s, None)),
        q: q.q.clone().unwrap_or_default(),
        statuses: choices(statuses, q.status.as_deref()),
        expiring: choices(
            [("7", "Expiring in 7 days"), ("30", "Expiring in 30 days")]
                .map(|(v, l)| (v.to_string(), l.to_string()))
                .to_vec(),
            q.expiring.as_deref(),
        ),
        plans: choices(o.plans, q.plan_id.as_deref()),
        sites: o.sites.map(|s| choices(s, q.site_id.as_deref())),
        list,
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "subscriber.html")]
struct SubscriberPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    s: Row,
    email: String,
    plan: String,
    owner: String,
    owner_money: Option<(String, String, String)>,
    can_status: bool,
    can_edit: bool,
    suspended: bool,
    can_pay: bool,
    renew_key: String,
    payment_key: String,
    plans: Vec<Choice>,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    notice: Option<String>,
}

/// One subscriber (404 page outside the actor's scope), with what the actor may do.
pub async fn subscriber(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(dq): Query<DetailQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewCustomers)?;
    let invoices = v.actor.can(Permission::ViewInvoices);
    let cur = st.currency.clone();
    let (row, owner, plans) = st
        .read_scoped(&v.actor, move |c, s| {
            let row = subscriber::get_visible(c, s, id)?;
            let owner =
                tenant::get(c, row.sub.tenant_id)?.ok_or_else(|| Error::not_found("reseller"))?;
            // The owner's balance shows where the actor sees it (as a renewal's answer does).
            let money =
                (invoices && owner.parent_id.is_some() && s.may_assign_to(owner.id, &owner.path))
                    .then(|| {
                        (
                            cur.format(owner.balance),
                            cur.format(owner.credit_limit),
                            cur.code.clone(),
                        )
                    });
            let plans = plan::list(
                c,
                s,
                &PlanFilter::default(),
                crate::db::Paging::new(None, Some(500))?,
            )?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect::<Vec<_>>();
            Ok((row, (owner.name, money), plans))
        })
        .await?;
    let sub = &row.sub;
    let plan = sub
        .plan_id
        .and_then(|p| plans.iter().find(|(id, _)| *id == p))
        .map(|(_, n)| n.clone())
        .or(sub.plan_id.map(|p| format!("plan {p}")))
        .unwrap_or_else(|| "none".into());
    let current = sub.plan_id.map(|p| p.to_string());
    let notice = match dq.notice.as_deref() {
        Some("renewed") => Some("Renewed."),
        Some("created") => Some("Subscriber created."),
        Some("saved") => Some("Changes saved."),
        Some("paid") => Some("Payment recorded."),
        Some("suspended") => Some("Suspended."),
        Some("reconnected") => Some("Reconnected."),
        Some("replayed") => Some("That form was already submitted; nothing was charged again."),
        _ => None,
    };
    Ok(render(&SubscriberPage {
        chrome: Chrome::new(&v.ctx, "subscribers"),
        title: sub.username.clone(),
        notice,
        s: Row::from(sub),
        email: sub.email.clone(),
        plan,
        owner: owner.0,
        owner_money: owner.1,
        can_status: v.actor.can(Permission::SuspendReconnect),
        can_edit: v.actor.can(Permission::EditCustomers),
        suspended: sub.status == SubscriberStatus::Suspended,
        can_pay: v.actor.can(Permission::RecordPayments),
        renew_key: new_bearer("pk_"),
        payment_key: new_bearer("pk_"),
        plans: choices(
            plans.into_iter().map(|(i, n)| (i.to_string(), n)).collect(),
            current.as_deref(),
        ),
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct StatusForm {
    status: String,
}

/// Suspend or reconnect, through [`crate::ops::subscribers::update_subscriber`].
pub async fn set_status(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<StatusForm>,
) -> PageResult {
    v.actor.require(Permission::SuspendReconnect)?;
    let (status, notice) = match f.status.as_str() {
        "suspended" => (SubscriberStatus::Suspended, "suspended"),
        "active" => (SubscriberStatus::Active, "reconnected"),
        other => {
            return Err(Failure(Error::invalid(format!(
                "status: '{other}' is neither suspended nor active"
            ))));
        }
    };
    let p = SubscriberPatch {
        status: Some(status),
        ..Default::default()
    };
    let (actor, secrets) = (v.actor.clone(), st.secrets.clone());
    st.db
        .write(move |tx| crate::ops::subscribers::update_subscriber(tx, &actor, id, &p, &secrets))
        .await?;
    Ok(Redirect::to(&format!("/panel/subscribers/{id}?notice={notice}")).into_response())
}

/// Runs a money operation once per (user, form key), as the API runs it once per
/// `Idempotency-Key` ([`ledger::remembered`]): a second submit of the same form charges
/// nothing and answers that it was already done. The key namespace is the API's, so a
/// key is never reused across the two.
pub(super) async fn once<R: Serialize>(
    st: &AppState,
    actor: &Actor,
    key: &str,
    request: String,
    op: impl FnOnce(&rusqlite::Transaction<'_>, &By<'_>) -> Result<R> + Send + 'static,
) -> Result<bool> {
    let key = key.trim().to_string();
    if !(1..=200).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::bad_request(
            "bad_idempotency_key",
            "the form's key is missing or malformed; reload the page",
        ));
    }
    let hash = hex::encode(crate::crypto::sha256(request.as_bytes()));
    let reused = "this form was already used for a different request; reload the page";
    Ok(st
        .once_per_key(actor, key, hash, 200, reused, op)
        .await?
        .replayed)
}

#[derive(Deserialize)]
pub struct RenewForm {
    key: String,
    plan_id: Option<String>,
    periods: Option<String>,
}

/// Renew through [`billing::renew`], once per form.
pub async fn renew(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<RenewForm>,
) -> PageResult {
    v.actor.require(Permission::RecordPayments)?;
    let plan_id = opt_i64("plan_id", &f.plan_id)?;
    let periods = opt_i64("periods", &f.periods)?.unwrap_or(1);
    let cur = st.currency.clone();
    let request = format!("renew {id} {plan_id:?} {periods}");
    let replayed = once(&st, &v.actor, &f.key, request, move |tx, by| {
        let sub = subscriber::get_visible(tx, &by.scope, id)?;
        billing::renew(tx, by, &sub, plan_id, periods, false, None, &cur)
    })
    .await?;
    let notice = if replayed { "replayed" } else { "renewed" };
    Ok(Redirect::to(&format!("/panel/subscribers/{id}?notice={notice}")).into_response())
}

#[derive(Deserialize)]
pub struct PaymentForm {
    key: String,
    amount: String,
    method: String,
    reference: Option<String>,
    renew: Option<String>,
}

/// Record a payment through [`billing::record_payment`], once per form.
pub async fn payment(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<PaymentForm>,
) -> PageResult {
    v.actor.require(Permission::RecordPayments)?;
    let cur = st.currency.clone();
    let amount: Decimal = f
        .amount
        .trim()
        .parse()
        .map_err(|_| Error::invalid("amount must be a decimal number, e.g. 25.00"))?;
    let amount = cur.positive("amount", amount)?;
    let method: PaymentMethod = serde_json::from_value(serde_json::Value::String(f.method.clone()))
        .map_err(|_| Error::invalid("method must be cash, transfer, card or other"))?;
    let reference = f
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    if reference.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(Failure(Error::invalid(
            "reference must be at most 500 characters",
        )));
    }
    let renew = f.renew.is_some();
    let request = format!("payment {id} {amount} {method:?} {reference:?} {renew}");
    let replayed = once(&st, &v.actor, &f.key, request, move |tx, by| {
        let sub = subscriber::get_visible(tx, &by.scope, id)?;
        billing::record_payment(
            tx,
            by,
            &sub,
            amount,
            method,
            reference.as_deref(),
            renew.then_some((None, 1)),
            &cur,
        )
    })
    .await?;
    let notice = if replayed { "replayed" } else { "paid" };
    Ok(Redirect::to(&format!("/panel/subscribers/{id}?notice={notice}")).into_response())
}

// ---------------------------------------------------------------------------------
// Logins

struct Login {
    id: i64,
    name: String,
    email: String,
    kind: &'static str,
    tenant_id: i64,
    can_impersonate: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    users: Vec<Login>,
    next: Option<String>,
}

/// The logins of the actor's part of the tree, with "log in as" where the API's
/// impersonation allows it.
pub async fn users(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageStaff)?;
    let f = UserFilter {
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit: Some(100),
        ..Default::default()
    };
    let page = st.list_page(&v.actor, f, user::list, |u| u.id).await?;
    let may = v.actor.kind != UserKind::Manager && v.actor.impersonator.is_none();
    let me = v.actor.user_id;
    Ok(render(&UsersPage {
        chrome: Chrome::new(&v.ctx, "users"),
        title: "Logins".into(),
        notice: match q.notice.as_deref() {
            Some("created") => Some("Login created."),
            Some("saved") => Some("Login saved."),
            _ => None,
        },
        users: page
            .items
            .iter()
            .map(|u| Login {
                id: u.id,
                name: u.name.clone(),
                email: u.email.clone(),
                kind: u.kind.as_str(),
                tenant_id: u.tenant_id,
                can_impersonate: may && u.id != me && u.kind != UserKind::Operator,
            })
            .collect(),
        next: page.next_cursor.map(|c| format!("/panel/users?cursor={c}")),
    })
    .into_response())
}

// ---------------------------------------------------------------------------------
// Resellers

struct TreeRow {
    id: i64,
    name: String,
    /// Left padding, rem: deeper resellers sit further in.
    pad: String,
    status: &'static str,
    balance: String,
    credit: String,
    domain: String,
    /// Its dashboard is readable (its rows are in the actor's scope).
    dashboard: bool,
}

#[derive(Template)]
#[template(path = "resellers.html")]
struct ResellersPage {
    chrome: Chrome,
    title: String,
    code: String,
    rows: Vec<TreeRow>,
    next: Option<String>,
}

/// The reseller records the actor manages ([`tenant::list`], the API's list), drawn as a
/// tree: a page of up to 500 in the tree's order.
pub async fn resellers(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let f = tenant::ResellerFilter {
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit: Some(500),
        ..Default::default()
    };
    let page = st.list_page(&v.actor, f, tenant::list, |t| t.id).await?;
    let scope = v.actor.scope();
    let base = v.actor.tenant_path.matches('/').count() as i64;
    let mut items = page.items;
    items.sort_by(|a, b| a.path.cmp(&b.path));
    let cur = &st.currency;
    let rows = items
        .iter()
        .map(|t| TreeRow {
            id: t.id,
            name: t.name.clone(),
            pad: format!(
                "{:.1}",
                (t.path.matches('/').count() as i64 - base).max(0) as f64 * 1.5 + 0.5
            ),
            status: t.status.as_str(),
            balance: cur.format(t.balance),
            credit: cur.format(t.credit_limit),
            domain: t.custom_domain.clone().unwrap_or_default(),
            dashboard: scope.narrowed_to(t.id, &t.path).is_some(),
        })
        .collect();
    Ok(render(&ResellersPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: "Resellers".into(),
        code: st.currency.code.clone(),
        rows,
        next: page
            .next_cursor
            .map(|c| format!("/panel/resellers?cursor={c}")),
    })
    .into_response())
}

// ---------------------------------------------------------------------------------
// Audit log

#[derive(Deserialize, Default, Serialize)]
pub struct AuditQuery {
    actor_user_id: Option<String>,
    action: Option<String>,
    target_kind: Option<String>,
    target_id: Option<String>,
    /// `YYYY-MM-DD`, from that day's start.
    since: Option<String>,
    /// `YYYY-MM-DD`, to that day's end.
    until: Option<String>,
    cursor: Option<String>,
}

struct AuditRow {
    at: String,
    actor: String,
    impersonator: Option<String>,
    action: String,
    target: String,
    ip: String,
    security: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    title: String,
    q: AuditQuery,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

fn day(field: &str, s: &Option<String>, end: bool) -> Result<Option<i64>> {
    match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(d) => {
            let t = if end { "23:59:59" } else { "00:00:00" };
            subscriber::parse_time(field, &format!("{d}T{t}Z")).map(Some)
        }
    }
}

/// The audit log of the actor's part of the tree, newest first, filtered by actor,
/// action (exact, or a prefix ending in a dot), target and date, through the API's
/// [`crate::db::audit::list`].
pub async fn audit(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewAuditLog)?;
    let text = |s: &Option<String>| {
        s.clone()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let f = crate::db::audit::AuditFilter {
        actor_user_id: opt_i64("actor_user_id", &q.actor_user_id)?,
        action: text(&q.action),
        target_kind: text(&q.target_kind),
        target_id: opt_i64("target_id", &q.target_id)?,
        security: None,
        since: None,
        until: None,
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
        limit: Some(100),
    };
    let (since, until) = (
        day("since", &q.since, false)?,
        day("until", &q.until, true)?,
    );
    let list = move |c: &_, scope: &_, f: &_, paging| {
        crate::db::audit::list(c, scope, f, since, until, paging)
    };
    let page = st.list_page(&v.actor, f, list, |e| e.id).await?;
    let rows = page
        .items
        .iter()
        .map(|e| AuditRow {
            at: e.at.replace('T', " ").trim_end_matches('Z').to_string(),
            actor: e.actor_name.clone(),
            impersonator: e.impersonator_name.clone(),
            action: e.action.clone(),
            target: match (&e.target_kind, e.target_id) {
                (Some(k), Some(id)) => format!("{k} {id}"),
                (Some(k), None) => k.clone(),
                _ => String::new(),
            },
            ip: e.ip.clone(),
            security: e.security,
        })
        .collect();
    let next = page.next_cursor.map(|c| {
        let mut v = serde_json::to_value(&q).expect("serializes");
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| x.is_string());
            o.insert("cursor".into(), serde_json::Value::String(c));
        }
        format!("/panel/audit?{}", serde_urlencoded_lite(&v))
    });
    Ok(render(&AuditPage {
        chrome: Chrome::new(&v.ctx, "audit"),
        title: "Audit log".into(),
        q,
        rows,
        next,
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "wan.html")]
struct WanPage {
    chrome: Chrome,
    title: String,
    report: crate::db::wan::OutageReport,
    open: Vec<crate::db::wan::WanOutage>,
    more: bool,
}

/// WAN checks: the CPE down now, the last 24 hours' outages per site and per reseller,
/// and the outages still open, newest first — the API's report and outage list over the
/// actor's part of the tree.
pub async fn wan(State(st): State<AppState>, v: Viewer) -> PageResult {
    v.actor.require(Permission::ViewReports)?;
    let until = crate::db::now() + 1;
    let report = st
        .read_scoped(&v.actor, move |c, scope| {
            crate::db::wan::report(c, scope, until - 86_400, until)
        })
        .await?;
    let f = crate::db::wan::WanOutageFilter {
        open: Some(true),
        limit: Some(100),
        ..Default::default()
    };
    let page = st
        .list_page(&v.actor, f, crate::db::wan::list_outages, |o| o.id)
        .await?;
    Ok(render(&WanPage {
        chrome: Chrome::new(&v.ctx, "wan"),
        title: "WAN checks".into(),
        report,
        more: page.next_cursor.is_some(),
        open: page.items,
    })
    .into_response())
}
