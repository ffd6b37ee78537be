//! A reseller, run by its parent: a sub-reseller's creation, its limits, features and
//! status (disabling says what it cuts at the edge first), its balance (top-up, refund,
//! adjustment, once per form key), its statement (CSV from the API's export) and the
//! ledger — through [`ops::resellers`], [`billing`] and the API's ledger list.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::forms::{FieldErrors, opt_number, opt_text};
use super::pages::{Choice, choices, once};
use super::plans::opt_amount;
use super::subscriber_forms::options;
use super::{Chrome, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::billing::{self, AdjustmentKind};
use crate::crypto::new_bearer;
use crate::db::ledger::{self, LedgerFilter, LedgerRow};
use crate::db::tenant::{self, Limits, NewReseller, ResellerPatch, Tenant, TenantStatus, Usage};
use crate::error::Result;
use crate::money::{Currency, NonNegativeAmount};
use crate::ops::resellers as ops;
use crate::scope::Permission;

const FIELDS: &[&str] = &[
    "name",
    "parent_id",
    "status",
    "credit_limit",
    "max_subscribers",
    "max_sub_resellers",
    "max_managers",
    "max_sites",
    "amount",
    "note",
    "limits",
];

/// A sub-reseller's form, on the resellers page.
#[derive(Deserialize, Default, Clone)]
pub struct NewResellerForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent_id: String,
    rebrand_enabled: Option<String>,
    wan_check_enabled: Option<String>,
}

/// Creates a sub-reseller through [`ops::resellers::create_reseller`]; a refusal is its
/// own page with the form filled in.
pub async fn create(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<NewResellerForm>,
) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let mut errs = FieldErrors::default();
    let input = NewReseller {
        name: f.name.clone(),
        parent_id: opt_number(&mut errs, "parent_id", &f.parent_id),
        allowed_ips: Vec::new(),
        rebrand_enabled: f.rebrand_enabled.is_some(),
        custom_domain: None,
        wan_check_enabled: f.wan_check_enabled.is_some(),
        limits: Limits::default(),
    };
    if errs.is_empty() {
        let (actor, cur, depth) = (
            v.actor.clone(),
            st.currency.clone(),
            st.config.tree.max_depth,
        );
        match st
            .db
            .write(move |tx| ops::create_reseller(tx, &actor, &input, depth, &cur))
            .await
        {
            Ok(r) => {
                return Ok(
                    Redirect::to(&format!("/panel/resellers/{}?notice=created", r.id))
                        .into_response(),
                );
            }
            Err(e) => errs = FieldErrors::from_error(e, FIELDS)?,
        }
    }
    let o = options(&st, &v.actor).await?;
    let status = errs.status();
    let page = NewResellerPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: "New reseller".into(),
        parents: choices(o.owners.unwrap_or_default(), Some(f.parent_id.as_str())),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

#[derive(Template)]
#[template(path = "reseller_new.html")]
struct NewResellerPage {
    chrome: Chrome,
    title: String,
    parents: Vec<Choice>,
    f: NewResellerForm,
    errs: FieldErrors,
}

pub async fn new_form(State(st): State<AppState>, v: Viewer) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let o = options(&st, &v.actor).await?;
    let own = v.actor.tenant_id.to_string();
    Ok(render(&NewResellerPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: "New reseller".into(),
        parents: choices(o.owners.unwrap_or_default(), Some(own.as_str())),
        f: NewResellerForm::default(),
        errs: FieldErrors::default(),
    })
    .into_response())
}

// ---------------------------------------------------------------------------------
// One reseller

/// The settings form as typed.
#[derive(Deserialize, Default, Clone)]
pub struct ResellerForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    credit_limit: String,
    #[serde(default)]
    max_subscribers: String,
    #[serde(default)]
    max_sub_resellers: String,
    #[serde(default)]
    max_managers: String,
    #[serde(default)]
    max_sites: String,
    rebrand_enabled: Option<String>,
    wan_check_enabled: Option<String>,
}

impl ResellerForm {
    fn of(t: &Tenant, cur: &Currency) -> ResellerForm {
        let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        ResellerForm {
            name: t.name.clone(),
            status: t.status.as_str().into(),
            credit_limit: cur.format(t.credit_limit),
            max_subscribers: n(t.limits.max_subscribers),
            max_sub_resellers: n(t.limits.max_sub_resellers),
            max_managers: n(t.limits.max_managers),
            max_sites: n(t.limits.max_sites),
            rebrand_enabled: t.rebrand_enabled.then(|| "1".into()),
            wan_check_enabled: t.wan_check_enabled.then(|| "1".into()),
        }
    }

    fn patch(&self) -> Result<ResellerPatch, FieldErrors> {
        let mut e = FieldErrors::default();
        let status = match self.status.as_str() {
            "active" => Some(TenantStatus::Active),
            "disabled" => Some(TenantStatus::Disabled),
            _ => {
                e.add("status", "status: choose active or disabled");
                None
            }
        };
        let limits = Limits {
            max_subscribers: opt_number(&mut e, "max_subscribers", &self.max_subscribers),
            max_sub_resellers: opt_number(&mut e, "max_sub_resellers", &self.max_sub_resellers),
            max_managers: opt_number(&mut e, "max_managers", &self.max_managers),
            max_sites: opt_number(&mut e, "max_sites", &self.max_sites),
        };
        let credit = opt_amount(&mut e, "credit_limit", &self.credit_limit);
        if !e.is_empty() {
            return Err(e);
        }
        Ok(ResellerPatch {
            name: Some(self.name.clone()),
            status,
            limits: Some(limits),
            credit_limit: Some(NonNegativeAmount(credit.unwrap_or_default())),
            rebrand_enabled: Some(self.rebrand_enabled.is_some()),
            wan_check_enabled: Some(self.wan_check_enabled.is_some()),
            ..Default::default()
        })
    }
}

#[derive(Template)]
#[template(path = "reseller.html")]
struct ResellerPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    id: i64,
    code: String,
    balance: String,
    active: bool,
    usage: Usage,
    f: ResellerForm,
    errs: FieldErrors,
    /// The balance form (add balance granted), its key and what was typed.
    money: Option<(String, MoneyForm)>,
    money_errs: FieldErrors,
    can_statement: bool,
}

#[derive(Deserialize, Default, Clone)]
pub struct MoneyForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    note: String,
}

struct Shown {
    notice: Option<&'static str>,
    f: Option<ResellerForm>,
    errs: FieldErrors,
    money: Option<MoneyForm>,
    money_errs: FieldErrors,
}

async fn page(st: &AppState, v: &Viewer, id: i64, shown: Shown) -> PageResult {
    let (t, usage) = st
        .read_scoped(&v.actor, move |c, s| {
            let t = tenant::get_managed(c, s, id)?;
            let u = tenant::usage(c, &t)?;
            Ok((t, u))
        })
        .await?;
    let cur = &st.currency;
    let status = [&shown.errs, &shown.money_errs]
        .into_iter()
        .find(|e| !e.is_empty())
        .map_or(axum::http::StatusCode::OK, |e| e.status());
    let page = ResellerPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: t.name.clone(),
        notice: shown.notice,
        id: t.id,
        code: cur.code.clone(),
        balance: cur.format(t.balance),
        active: t.status == TenantStatus::Active,
        usage,
        f: shown.f.unwrap_or_else(|| ResellerForm::of(&t, cur)),
        errs: shown.errs,
        money: v.actor.can(Permission::AddBalance).then(|| {
            let typed = shown.money.unwrap_or_else(|| MoneyForm {
                kind: "top_up".into(),
                ..Default::default()
            });
            // A form shown again keeps its key: submitting it twice still runs once.
            let key = Some(typed.key.clone())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| new_bearer("pk_"));
            (key, typed)
        }),
        money_errs: shown.money_errs,
        can_statement: v.actor.can(Permission::ViewInvoices),
    };
    Ok((status, render(&page)).into_response())
}

/// A reseller below the actor (anything else: the 404 page).
pub async fn show(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let notice = match q.notice.as_deref() {
        Some("created") => Some("Reseller created."),
        Some("saved") => Some("Saved."),
        Some("money") => Some("Balance changed."),
        Some("replayed") => Some("That form was already submitted; nothing was charged again."),
        _ => None,
    };
    let shown = Shown {
        notice,
        f: None,
        errs: FieldErrors::default(),
        money: None,
        money_errs: FieldErrors::default(),
    };
    page(&st, &v, id, shown).await
}

/// Saves name, status, limits, features and credit limit through
/// [`ops::resellers::update_reseller`].
pub async fn update(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<ResellerForm>,
) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let errs = match f.patch() {
        Ok(p) => {
            let (actor, cur) = (v.actor.clone(), st.currency.clone());
            match st
                .db
                .write(move |tx| ops::update_reseller(tx, &actor, id, &p, &cur))
                .await
            {
                Ok(_) => {
                    return Ok(Redirect::to(&format!("/panel/resellers/{id}?notice=saved"))
                        .into_response());
                }
                Err(e) => FieldErrors::from_error(e, FIELDS)?,
            }
        }
        Err(errs) => errs,
    };
    let shown = Shown {
        notice: None,
        f: Some(f),
        errs,
        money: None,
        money_errs: FieldErrors::default(),
    };
    page(&st, &v, id, shown).await
}

/// Tops up, refunds or adjusts the reseller's balance, once per form key, through
/// [`billing::add_balance`] and [`billing::adjust`] as the API's balance routes do.
pub async fn money(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<MoneyForm>,
) -> PageResult {
    v.actor.require(Permission::AddBalance)?;
    let cur = st.currency.clone();
    let mut e = FieldErrors::default();
    let amount: Option<Decimal> = opt_amount(&mut e, "amount", &f.amount);
    if amount.is_none() && e.is_empty() {
        e.add("amount", "amount is required");
    }
    let note = opt_text(&f.note);
    if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        e.add("note", "note must be at most 500 characters");
    }
    let kind = match f.kind.as_str() {
        "top_up" | "refund" | "adjust" => f.kind.clone(),
        _ => {
            e.add("amount", "choose top-up, refund or adjustment");
            String::new()
        }
    };
    if kind != "top_up" && note.is_none() && e.get("note").is_none() {
        e.add("note", "a refund or adjustment needs its reason");
    }
    let minor = amount.and_then(|a| {
        let r = if kind == "adjust" {
            cur.to_minor("amount", a)
        } else {
            cur.positive("amount", a)
        };
        e.take("amount", r)
    });
    let (Some(minor), true) = (minor, e.is_empty()) else {
        return refused(&st, &v, id, f, e).await;
    };
    let request = format!("balance {id} {kind} {minor} {note:?}");
    let done = once(&st, &v.actor, &f.key, request, move |tx, by| {
        let child = tenant::get_managed(tx, &by.scope, id)?;
        let note = note.as_deref();
        match kind.as_str() {
            "top_up" => billing::add_balance(
                tx,
                by,
                &child,
                minor,
                AdjustmentKind::Adjustment,
                note,
                &cur,
            ),
            "refund" => {
                billing::add_balance(tx, by, &child, minor, AdjustmentKind::Refund, note, &cur)
            }
            _ => billing::adjust(tx, by, &child, minor, note.unwrap_or_default(), &cur),
        }
    })
    .await;
    match done {
        Ok(replayed) => {
            let n = if replayed { "replayed" } else { "money" };
            Ok(Redirect::to(&format!("/panel/resellers/{id}?notice={n}")).into_response())
        }
        Err(err) => {
            let errs = FieldErrors::from_error(err, FIELDS)?;
            refused(&st, &v, id, f, errs).await
        }
    }
}

async fn refused(st: &AppState, v: &Viewer, id: i64, f: MoneyForm, e: FieldErrors) -> PageResult {
    let shown = Shown {
        notice: None,
        f: None,
        errs: FieldErrors::default(),
        money: Some(f),
        money_errs: e,
    };
    page(st, v, id, shown).await
}

// ---------------------------------------------------------------------------------
// Statement and ledger

struct EntryLine {
    at: String,
    kind: String,
    amount: String,
    balance_after: String,
    tenant_id: i64,
    subscriber_id: String,
    reason: String,
}

fn entry_line(r: &LedgerRow, cur: &Currency) -> EntryLine {
    let e = r.view(cur);
    EntryLine {
        at: e.at.replace('T', " ").trim_end_matches('Z').to_string(),
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        amount: e.amount.to_string(),
        balance_after: e.balance_after.to_string(),
        tenant_id: e.tenant_id,
        subscriber_id: e.subscriber_id.map(|s| s.to_string()).unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "ledger.html")]
struct LedgerPage {
    chrome: Chrome,
    title: String,
    code: String,
    /// The statement's CSV export (the API's), for one reseller's statement.
    csv: Option<String>,
    back: Option<i64>,
    rows: Vec<EntryLine>,
    next: Option<String>,
}

/// A reseller's statement: its own account's entries, oldest first, read as the API's
/// statement reads them; its CSV is the API's export.
pub async fn statement(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewInvoices)?;
    let paging = crate::db::Paging::new(q.cursor.as_deref().filter(|c| !c.is_empty()), Some(200))?;
    let (t, rows) = st
        .read_scoped(&v.actor, move |c, scope| {
            let (t, over) = tenant::rows_scope(c, scope, id)?;
            let f = LedgerFilter {
                tenant_id: Some(t.id),
                ..Default::default()
            };
            let rows = ledger::list(c, &over, &f, None, None, paging)?;
            Ok((t, rows))
        })
        .await?;
    let page = paging.page(rows, |r| r.id);
    let cur = &st.currency;
    Ok(render(&LedgerPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: format!("Statement · {}", t.name),
        code: cur.code.clone(),
        csv: Some(format!("/api/v1/resellers/{id}/statement?format=csv")),
        back: Some(id),
        rows: page.items.iter().map(|r| entry_line(r, cur)).collect(),
        next: page
            .next_cursor
            .map(|c| format!("/panel/resellers/{id}/statement?cursor={c}")),
    })
    .into_response())
}

/// The ledger of the actor's part of the tree ([`ledger::list`], the API's list).
pub async fn ledger(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewInvoices)?;
    let f = LedgerFilter {
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit: Some(200),
        ..Default::default()
    };
    let list =
        |c: &_, scope: &_, f: &LedgerFilter, paging| ledger::list(c, scope, f, None, None, paging);
    let page = st.list_page(&v.actor, f, list, |r| r.id).await?;
    let cur = &st.currency;
    Ok(render(&LedgerPage {
        chrome: Chrome::new(&v.ctx, "ledger"),
        title: "Ledger".into(),
        code: cur.code.clone(),
        csv: None,
        back: None,
        rows: page.items.iter().map(|r| entry_line(r, cur)).collect(),
        next: page
            .next_cursor
            .map(|c| format!("/panel/ledger?cursor={c}")),
    })
    .into_response())
}
