//! A reseller, run by its parent: a sub-reseller's creation, its limits, features and
//! status (disabling says what it cuts at the edge first), its balance (top-up, refund,
//! adjustment, once per form key), its statement (CSV from the API's export) and the
//! ledger — through [`ops::resellers`], [`billing`] and the API's ledger list.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::forms::{FieldErrors, checked, opt_number, opt_text, submit};
use super::pages::{Choice, choices, once};
use super::plans::opt_amount;
use super::subscriber_forms::options;
use super::{Chrome, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::billing::{self, AdjustmentKind};
use crate::crypto::new_bearer;
use crate::db::brand::BrandSettings;
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
    "custom_domain",
    "allowed_ips",
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
    let (actor, cur, depth) = (
        v.actor.clone(),
        st.currency.clone(),
        st.config.tree.max_depth,
    );
    submit(
        checked(errs, input),
        FIELDS,
        |input| {
            st.db
                .write(move |tx| ops::create_reseller(tx, &actor, &input, depth, &cur))
        },
        |r| format!("/panel/resellers/{}?notice=created", r.id),
        |errs| async {
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
        },
    )
    .await
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
    /// The host its panel answers on with its brand; empty: none.
    #[serde(default)]
    custom_domain: String,
    /// Address blocks its logins may come from, separated by commas or spaces; empty:
    /// anywhere.
    #[serde(default)]
    allowed_ips: String,
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
            custom_domain: t.custom_domain.clone().unwrap_or_default(),
            allowed_ips: t
                .allowed_ips
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
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
            custom_domain: Some(opt_text(&self.custom_domain)),
            allowed_ips: Some(
                self.allowed_ips
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
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
    can_brand: bool,
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
        can_brand: v.actor.can(Permission::ManageBranding),
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
    let (actor, cur) = (v.actor.clone(), st.currency.clone());
    submit(
        f.patch(),
        FIELDS,
        |p| {
            st.db
                .write(move |tx| ops::update_reseller(tx, &actor, id, &p, &cur))
        },
        |_| format!("/panel/resellers/{id}?notice=saved"),
        |errs| {
            let shown = Shown {
                notice: None,
                f: Some(f),
                errs,
                money: None,
                money_errs: FieldErrors::default(),
            };
            page(&st, &v, id, shown)
        },
    )
    .await
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
// Brand

const BRAND_FIELDS: &[&str] = &["name", "color", "logo_url", "contact", "tagline"];

/// The brand form as typed (an empty field clears it).
#[derive(Deserialize, Default, Clone)]
pub struct BrandForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    color: String,
    #[serde(default)]
    logo_url: String,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    tagline: String,
}

impl BrandForm {
    fn settings(&self) -> BrandSettings {
        BrandSettings {
            name: Some(self.name.clone()),
            color: Some(self.color.trim().to_string()),
            logo_url: Some(self.logo_url.trim().to_string()),
            contact: Some(self.contact.clone()),
            tagline: Some(self.tagline.clone()),
        }
    }
}

#[derive(Template)]
#[template(path = "brand.html")]
struct BrandPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    id: i64,
    /// Whether the tenant has rebranding (else its subscribers see its parent's brand).
    rebrand_enabled: bool,
    /// What its subscribers see now, resolved through the tree.
    effective: String,
    f: BrandForm,
    errs: FieldErrors,
}

async fn brand_page(
    st: &AppState,
    v: &Viewer,
    id: i64,
    notice: Option<&'static str>,
    typed: Option<BrandForm>,
    errs: FieldErrors,
) -> PageResult {
    // The API's read: the actor's own tenant or one below it (anything else: 404).
    let (t, view) = st
        .read_scoped(&v.actor, move |c, s| {
            let t = tenant::get_visible(c, s, id)?;
            Ok((t, crate::db::brand::view(c, id)?))
        })
        .await?;
    let stored = &view.settings;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let f = typed.unwrap_or_else(|| BrandForm {
        name: text(&stored.name),
        color: text(&stored.color),
        logo_url: text(&stored.logo_url),
        contact: text(&stored.contact),
        tagline: text(&stored.tagline),
    });
    let status = errs.status();
    let page = BrandPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: format!("Brand · {}", t.name),
        notice,
        id,
        rebrand_enabled: view.rebrand_enabled,
        effective: view.effective.name.clone(),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

/// The brand of the actor's own tenant or a reseller below it: name, colour, logo,
/// contact, tagline.
pub async fn brand(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageBranding)?;
    let notice = (q.notice.as_deref() == Some("saved")).then_some("Brand saved.");
    brand_page(&st, &v, id, notice, None, FieldErrors::default()).await
}

/// Replaces the brand through [`ops::resellers::set_brand`] (the API's checks and
/// audit entry); a refusal shows the form again with the error beside its field.
pub async fn set_brand(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<BrandForm>,
) -> PageResult {
    v.actor.require(Permission::ManageBranding)?;
    let actor = v.actor.clone();
    submit(
        Ok(f.settings()),
        BRAND_FIELDS,
        |b| st.db.write(move |tx| ops::set_brand(tx, &actor, id, b)),
        |_| format!("/panel/resellers/{id}/brand?notice=saved"),
        |errs| brand_page(&st, &v, id, None, Some(f), errs),
    )
    .await
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
    /// The statement's date filter: where it submits, and the days shown.
    dates: Option<(String, String, String)>,
    back: Option<i64>,
    rows: Vec<EntryLine>,
    next: Option<String>,
}

/// The statement's query: a cursor and the days it runs from and until.
#[derive(Deserialize, Default)]
pub struct StatementQuery {
    cursor: Option<String>,
    /// `YYYY-MM-DD`: from that day's start (UTC).
    since: Option<String>,
    /// `YYYY-MM-DD`: through that day's end (UTC).
    until: Option<String>,
}

/// A day field as the start of that day, or of the day after it (`next`), UTC.
fn day_start(field: &str, s: &Option<String>, next: bool) -> Result<Option<time::Date>> {
    let Some(d) = s.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(d, &fmt).map_err(|_| {
        crate::error::Error::invalid(format!(
            "{field}: '{d}' is not a date (for example 2026-12-31)"
        ))
    })?;
    Ok(Some(if next {
        day.next_day().unwrap_or(day)
    } else {
        day
    }))
}

/// A reseller's statement: its own account's entries, oldest first, from and until the
/// days asked, read as the API's statement reads them; its CSV is the API's export over
/// the same days.
pub async fn statement(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<StatementQuery>,
) -> PageResult {
    v.actor.require(Permission::ViewInvoices)?;
    let paging = crate::db::Paging::new(q.cursor.as_deref().filter(|c| !c.is_empty()), Some(200))?;
    let (from, to) = (
        day_start("since", &q.since, false)?,
        day_start("until", &q.until, true)?,
    );
    let unix = |d: Option<time::Date>| d.map(|d| d.midnight().assume_utc().unix_timestamp());
    let (since, until) = (unix(from), unix(to));
    let (t, rows) = st
        .read_scoped(&v.actor, move |c, scope| {
            let (t, over) = tenant::rows_scope(c, scope, id)?;
            let f = LedgerFilter {
                tenant_id: Some(t.id),
                ..Default::default()
            };
            let rows = ledger::list(c, &over, &f, since, until, paging)?;
            Ok((t, rows))
        })
        .await?;
    let page = paging.page(rows, |r| r.id);
    let cur = &st.currency;
    let days = |since: &str, until: &str| {
        let mut q = String::new();
        for (k, v) in [("since", since), ("until", until)] {
            if !v.is_empty() {
                q.push_str(&format!("&{k}={v}"));
            }
        }
        q
    };
    let rfc = |d: Option<time::Date>| d.map(|d| format!("{d}T00:00:00Z")).unwrap_or_default();
    let (shown_since, shown_until) = (
        from.map(|d| d.to_string()).unwrap_or_default(),
        to.and_then(|d| d.previous_day())
            .map(|d| d.to_string())
            .unwrap_or_default(),
    );
    Ok(render(&LedgerPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: format!("Statement · {}", t.name),
        code: cur.code.clone(),
        csv: Some(format!(
            "/api/v1/resellers/{id}/statement?format=csv{}",
            days(&rfc(from), &rfc(to))
        )),
        dates: Some((
            format!("/panel/resellers/{id}/statement"),
            shown_since.clone(),
            shown_until.clone(),
        )),
        back: Some(id),
        rows: page.items.iter().map(|r| entry_line(r, cur)).collect(),
        next: page.next_cursor.map(|c| {
            format!(
                "/panel/resellers/{id}/statement?cursor={c}{}",
                days(&shown_since, &shown_until)
            )
        }),
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
        dates: None,
        back: None,
        rows: page.items.iter().map(|r| entry_line(r, cur)).collect(),
        next: page
            .next_cursor
            .map(|c| format!("/panel/ledger?cursor={c}")),
    })
    .into_response())
}
