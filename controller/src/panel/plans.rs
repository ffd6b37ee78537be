//! Plans and rate cards: the plans the actor sells (and those on its own card, with what
//! it pays), a plan's create and edit forms, archiving, and a reseller's rate card —
//! through [`ops::plans`], with the API's permission for each.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::forms::{FieldErrors, checked, opt_number, opt_text, submit};
use super::pages::{Choice, choices};
use super::subscriber_forms::options;
use super::{Chrome, Failure, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::db::plan::{self, NewPlan, PlanFilter, PlanPatch, PlanRow, PlanStatus, RateCardChange};
use crate::db::tenant;
use crate::error::{Error, Result};
use crate::money::{Currency, NonNegativeAmount};
use crate::ops::plans as ops;
use crate::scope::Permission;

const FIELDS: &[&str] = &[
    "name",
    "tenant_id",
    "parent_plan_id",
    "download_kbps",
    "upload_kbps",
    "burst_download_kbps",
    "burst_upload_kbps",
    "validity_days",
    "validity_months",
    "quota_mb",
    "price",
    "wholesale_price",
    "plan_id",
];

/// A plan as a row of the list.
pub struct PlanLine {
    id: i64,
    name: String,
    speed: String,
    validity: String,
    price: String,
    /// What the actor pays for it, when it is on the actor's own card.
    wholesale: Option<String>,
    archived: bool,
    /// The actor owns it (or a reseller below does): it can change it.
    owned: bool,
}

fn line(p: &PlanRow, cur: &Currency, own_tenant: i64, owned: bool) -> PlanLine {
    PlanLine {
        id: p.id,
        name: p.name.clone(),
        speed: format!(
            "{} / {} Mbit/s",
            p.download_kbps as f64 / 1000.0,
            p.upload_kbps as f64 / 1000.0
        ),
        validity: match (p.validity_days, p.validity_months) {
            (Some(d), _) => format!("{d} days"),
            (_, Some(m)) => format!("{m} months"),
            _ => String::new(),
        },
        price: cur.format(p.price),
        wholesale: p
            .wholesale
            .filter(|_| p.tenant_id != own_tenant)
            .map(|w| cur.format(w)),
        archived: p.status == PlanStatus::Archived,
        owned,
    }
}

#[derive(Template)]
#[template(path = "plans.html")]
struct PlansPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    code: String,
    can_manage: bool,
    plans: Vec<PlanLine>,
    next: Option<String>,
}

/// The plans the actor sells and those on its card ([`plan::list`], the API's list).
pub async fn list(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor
        .require_any(&[Permission::ViewCustomers, Permission::ManagePlans])?;
    let f = PlanFilter {
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit: Some(100),
        ..Default::default()
    };
    let page = st.list_page(&v.actor, f, plan::list, |p| p.id).await?;
    let can_manage = v.actor.can(Permission::ManagePlans);
    // Which of them the actor may change: the ones its scope owns, as the update reads.
    let ids: Vec<i64> = page.items.iter().map(|p| p.id).collect();
    let owned: Vec<bool> = st
        .read_scoped(&v.actor, move |c, s| {
            ids.iter()
                .map(|&id| Ok(plan::get_owned(c, s, id).is_ok()))
                .collect::<Result<_>>()
        })
        .await?;
    let cur = &st.currency;
    let plans = page
        .items
        .iter()
        .zip(owned)
        .map(|(p, o)| line(p, cur, v.actor.tenant_id, can_manage && o))
        .collect();
    let notice = match q.notice.as_deref() {
        Some("created") => Some("Plan created."),
        Some("saved") => Some("Plan saved."),
        Some("archived") => Some("Plan archived: no new subscribers or renewals on it."),
        Some("active") => Some("Plan back on sale."),
        _ => None,
    };
    Ok(render(&PlansPage {
        chrome: Chrome::new(&v.ctx, "plans"),
        title: "Plans".into(),
        notice,
        code: cur.code.clone(),
        can_manage,
        plans,
        next: page.next_cursor.map(|c| format!("/panel/plans?cursor={c}")),
    })
    .into_response())
}

/// The plan form as typed.
#[derive(Deserialize, Default, Clone)]
pub struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    parent_plan_id: String,
    #[serde(default)]
    download_kbps: String,
    #[serde(default)]
    upload_kbps: String,
    #[serde(default)]
    burst_download_kbps: String,
    #[serde(default)]
    burst_upload_kbps: String,
    #[serde(default)]
    validity_days: String,
    #[serde(default)]
    validity_months: String,
    #[serde(default)]
    quota_mb: String,
    #[serde(default)]
    price: String,
}

/// An amount field (empty: absent), refused beside its field.
pub fn opt_amount(errs: &mut FieldErrors, field: &'static str, s: &str) -> Option<Decimal> {
    let s = opt_text(s)?;
    match s.parse::<Decimal>() {
        Ok(d) => Some(d),
        Err(_) => {
            errs.add(
                field,
                format!("{field}: '{s}' is not an amount (for example 25.00)"),
            );
            None
        }
    }
}

/// A required field, refused beside it when empty.
fn required<T>(errs: &mut FieldErrors, field: &'static str, v: Option<T>, raw: &str) -> Option<T> {
    if v.is_none() && raw.trim().is_empty() {
        errs.add(field, format!("{field} is required"));
    }
    v
}

impl PlanForm {
    fn of(p: &PlanRow, cur: &Currency) -> PlanForm {
        let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        PlanForm {
            name: p.name.clone(),
            tenant_id: p.tenant_id.to_string(),
            parent_plan_id: n(p.parent_plan_id),
            download_kbps: p.download_kbps.to_string(),
            upload_kbps: p.upload_kbps.to_string(),
            burst_download_kbps: n(p.burst_download_kbps),
            burst_upload_kbps: n(p.burst_upload_kbps),
            validity_days: n(p.validity_days),
            validity_months: n(p.validity_months),
            quota_mb: n(p.quota_mb),
            price: cur.format(p.price),
        }
    }

    fn new_plan(&self) -> Result<NewPlan, FieldErrors> {
        let mut e = FieldErrors::default();
        let download = opt_number(&mut e, "download_kbps", &self.download_kbps);
        let upload = opt_number(&mut e, "upload_kbps", &self.upload_kbps);
        let price = opt_amount(&mut e, "price", &self.price);
        let input = NewPlan {
            name: self.name.clone(),
            tenant_id: opt_number(&mut e, "tenant_id", &self.tenant_id),
            parent_plan_id: opt_number(&mut e, "parent_plan_id", &self.parent_plan_id),
            download_kbps: required(&mut e, "download_kbps", download, &self.download_kbps)
                .unwrap_or(0),
            upload_kbps: required(&mut e, "upload_kbps", upload, &self.upload_kbps).unwrap_or(0),
            burst_download_kbps: opt_number(
                &mut e,
                "burst_download_kbps",
                &self.burst_download_kbps,
            ),
            burst_upload_kbps: opt_number(&mut e, "burst_upload_kbps", &self.burst_upload_kbps),
            validity_days: opt_number(&mut e, "validity_days", &self.validity_days),
            validity_months: opt_number(&mut e, "validity_months", &self.validity_months),
            quota_mb: opt_number(&mut e, "quota_mb", &self.quota_mb),
            price: NonNegativeAmount(
                required(&mut e, "price", price, &self.price).unwrap_or_default(),
            ),
            wan_tcp_ports: None,
        };
        if input.validity_days.is_some() && input.validity_months.is_some() {
            e.add(
                "validity_months",
                "give validity in days or in months, not both",
            );
        }
        checked(e, input)
    }

    /// What the edit form changes: name, price and speeds.
    fn patch(&self) -> Result<PlanPatch, FieldErrors> {
        let mut e = FieldErrors::default();
        let download = opt_number(&mut e, "download_kbps", &self.download_kbps);
        let upload = opt_number(&mut e, "upload_kbps", &self.upload_kbps);
        let price = opt_amount(&mut e, "price", &self.price);
        let p = PlanPatch {
            name: Some(self.name.clone()),
            price: required(&mut e, "price", price, &self.price).map(NonNegativeAmount),
            download_kbps: required(&mut e, "download_kbps", download, &self.download_kbps),
            upload_kbps: required(&mut e, "upload_kbps", upload, &self.upload_kbps),
            ..Default::default()
        };
        checked(e, p)
    }
}

#[derive(Template)]
#[template(path = "plan_form.html")]
struct PlanFormPage {
    chrome: Chrome,
    title: String,
    action: String,
    id: Option<i64>,
    f: PlanForm,
    errs: FieldErrors,
    owners: Option<Vec<Choice>>,
    /// Plans on the actor's card, to derive from (none for the operator's plans).
    parents: Vec<Choice>,
    code: String,
}

async fn form_page(
    st: &AppState,
    v: &Viewer,
    id: Option<i64>,
    f: PlanForm,
    errs: FieldErrors,
) -> PageResult {
    let o = options(st, &v.actor).await?;
    let own = v.actor.tenant_id;
    // The plans the actor may derive from: those on its own card.
    let parents = st
        .read_scoped(&v.actor, move |c, _| plan::card(c, own))
        .await?
        .into_iter()
        .map(|p| (p.id.to_string(), p.name))
        .collect();
    let status = errs.status();
    let (title, action) = match id {
        Some(id) => (format!("Edit {}", f.name), format!("/panel/plans/{id}")),
        None => ("New plan".to_string(), "/panel/plans".to_string()),
    };
    let page = PlanFormPage {
        chrome: Chrome::new(&v.ctx, "plans"),
        title,
        action,
        id,
        owners: o
            .owners
            .filter(|_| id.is_none())
            .map(|s| choices(s, Some(f.tenant_id.as_str()))),
        parents: choices(parents, Some(f.parent_plan_id.as_str())),
        code: st.currency.code.clone(),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

pub async fn new_form(State(st): State<AppState>, v: Viewer) -> PageResult {
    v.actor.require(Permission::ManagePlans)?;
    let f = PlanForm {
        tenant_id: v.actor.tenant_id.to_string(),
        validity_days: "30".into(),
        ..Default::default()
    };
    form_page(&st, &v, None, f, FieldErrors::default()).await
}

/// Creates the plan through [`ops::plans::create_plan`], or the form again with its errors.
pub async fn create(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<PlanForm>,
) -> PageResult {
    v.actor.require(Permission::ManagePlans)?;
    let (actor, cur) = (v.actor.clone(), st.currency.clone());
    submit(
        f.new_plan(),
        FIELDS,
        |input| {
            st.db
                .write(move |tx| ops::create_plan(tx, &actor, &input, &cur))
        },
        |_| "/panel/plans?notice=created".into(),
        |errs| form_page(&st, &v, None, f, errs),
    )
    .await
}

async fn owned(st: &AppState, v: &Viewer, id: i64) -> Result<PlanRow> {
    st.read_scoped(&v.actor, move |c, s| plan::get_owned(c, s, id))
        .await
}

/// The edit form of a plan the actor's scope owns (anything else: the 404 page).
pub async fn edit_form(State(st): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    v.actor.require(Permission::ManagePlans)?;
    let p = owned(&st, &v, id).await?;
    let f = PlanForm::of(&p, &st.currency);
    form_page(&st, &v, Some(id), f, FieldErrors::default()).await
}

/// Saves the plan through [`ops::plans::update_plan`], or the form again.
pub async fn update(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<PlanForm>,
) -> PageResult {
    v.actor.require(Permission::ManagePlans)?;
    let stored = owned(&st, &v, id).await?;
    let (actor, cur) = (v.actor.clone(), st.currency.clone());
    submit(
        f.patch(),
        FIELDS,
        |p| {
            st.db
                .write(move |tx| ops::update_plan(tx, &actor, id, &p, &cur))
        },
        |_| "/panel/plans?notice=saved".into(),
        |errs| {
            form_page(
                &st,
                &v,
                Some(id),
                keep_fixed(f, &stored, &st.currency),
                errs,
            )
        },
    )
    .await
}

/// The typed fields, with those the edit form does not change as stored.
fn keep_fixed(f: PlanForm, stored: &PlanRow, cur: &Currency) -> PlanForm {
    PlanForm {
        name: f.name,
        price: f.price,
        download_kbps: f.download_kbps,
        upload_kbps: f.upload_kbps,
        ..PlanForm::of(stored, cur)
    }
}

#[derive(Deserialize)]
pub struct PlanStatusForm {
    status: String,
}

/// Archives a plan (no new subscribers or renewals on it) or puts it back on sale.
pub async fn set_status(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<PlanStatusForm>,
) -> PageResult {
    v.actor.require(Permission::ManagePlans)?;
    let status = match f.status.as_str() {
        "archived" => PlanStatus::Archived,
        "active" => PlanStatus::Active,
        other => {
            return Err(Failure(Error::invalid(format!(
                "status: '{other}' is neither archived nor active"
            ))));
        }
    };
    let p = PlanPatch {
        status: Some(status),
        ..Default::default()
    };
    let (actor, cur) = (v.actor.clone(), st.currency.clone());
    st.db
        .write(move |tx| ops::update_plan(tx, &actor, id, &p, &cur))
        .await?;
    Ok(Redirect::to(&format!("/panel/plans?notice={}", f.status)).into_response())
}

// ---------------------------------------------------------------------------------
// A reseller's rate card

struct CardLine {
    plan_id: i64,
    name: String,
    retail: String,
    wholesale: String,
}

#[derive(Template)]
#[template(path = "rate_card.html")]
struct RateCardPage {
    chrome: Chrome,
    title: String,
    reseller: String,
    id: i64,
    code: String,
    notice: Option<&'static str>,
    lines: Vec<CardLine>,
    can_change: bool,
    /// The actor's own plans that can go on the card.
    offer: Vec<Choice>,
    f: CardForm,
    errs: FieldErrors,
}

#[derive(Deserialize, Default, Clone)]
pub struct CardForm {
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    wholesale_price: String,
    remove: Option<String>,
}

async fn card_page(
    st: &AppState,
    v: &Viewer,
    id: i64,
    notice: Option<&'static str>,
    f: CardForm,
    errs: FieldErrors,
) -> PageResult {
    let can_change = v.actor.can(Permission::ManageResellers);
    let own = v.actor.tenant_id;
    let (t, card, offer) = st
        .read_scoped(&v.actor, move |c, s| {
            // The API's read: the actor's own card or a descendant's.
            let t = tenant::get_visible(c, s, id)?;
            let card = plan::card(c, t.id)?;
            // What can go on it: plans of its parent, the tenant the actor may sell from.
            let offer = match t.parent_id {
                Some(parent) if can_change && t.id != own => plan::list(
                    c,
                    s,
                    &PlanFilter::default(),
                    crate::db::Paging::new(None, Some(500))?,
                )?
                .into_iter()
                .filter(|p| p.tenant_id == parent && p.status == PlanStatus::Active)
                .map(|p| (p.id.to_string(), p.name))
                .collect(),
                _ => Vec::new(),
            };
            Ok((t, card, offer))
        })
        .await?;
    let cur = &st.currency;
    let status = errs.status();
    let page = RateCardPage {
        chrome: Chrome::new(&v.ctx, "resellers"),
        title: format!("Rate card · {}", t.name),
        reseller: t.name.clone(),
        id: t.id,
        code: cur.code.clone(),
        notice,
        lines: card
            .iter()
            .map(|p| CardLine {
                plan_id: p.id,
                name: p.name.clone(),
                retail: cur.format(p.price),
                wholesale: cur.format(p.wholesale.unwrap_or(0)),
            })
            .collect(),
        can_change: can_change && t.id != own,
        offer: choices(offer, Some(f.plan_id.as_str())),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

/// A reseller's rate card: what it pays for each plan assigned to it.
pub async fn rate_card(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor
        .require_any(&[Permission::ManageResellers, Permission::ManagePlans])?;
    let notice = match q.notice.as_deref() {
        Some("set") => Some("Rate card saved."),
        Some("removed") => Some("Plan taken off the card."),
        _ => None,
    };
    card_page(
        &st,
        &v,
        id,
        notice,
        CardForm::default(),
        FieldErrors::default(),
    )
    .await
}

/// Puts a plan on the card at a wholesale price, changes the price, or takes it off,
/// through [`ops::plans::change_rate_card`].
pub async fn change_rate_card(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<CardForm>,
) -> PageResult {
    v.actor.require(Permission::ManageResellers)?;
    let mut e = FieldErrors::default();
    let plan_id = opt_number(&mut e, "plan_id", &f.plan_id);
    let plan_id = required(&mut e, "plan_id", plan_id, &f.plan_id);
    let remove = f.remove.is_some();
    let price = if remove {
        None
    } else {
        let p = opt_amount(&mut e, "wholesale_price", &f.wholesale_price);
        required(&mut e, "wholesale_price", p, &f.wholesale_price)
    };
    let change = match plan_id {
        Some(plan_id) => checked(
            e,
            RateCardChange {
                plan_id,
                wholesale_price: price.map(NonNegativeAmount),
                remove,
            },
        ),
        None => Err(e),
    };
    let (actor, cur) = (v.actor.clone(), st.currency.clone());
    let n = if remove { "removed" } else { "set" };
    submit(
        change,
        FIELDS,
        |c| {
            st.db
                .write(move |tx| ops::change_rate_card(tx, &actor, id, &c, &cur))
        },
        |_| format!("/panel/resellers/{id}/rate-card?notice={n}"),
        |errs| card_page(&st, &v, id, None, f, errs),
    )
    .await
}
