//! Subscribers, changed by hand: the create and edit forms and the list's bulk actions.
//! The forms run [`ops::subscribers::create_subscriber`] and
//! [`ops::subscribers::update_subscriber`], the bulk actions [`ops::subscribers::bulk`]
//! (and, to renew many, [`billing::renew`] once per form key): the API's operations,
//! with the API's permission for each.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::forms::{FieldErrors, checked, opt_number, opt_text, submit};
use super::pages::{Choice, choices, once};
use super::{Chrome, Failure, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::billing;
use crate::db::Paging;
use crate::db::plan::{self, PlanFilter};
use crate::db::site::{self, SiteFilter};
use crate::db::subscriber::{
    self, BulkAction, BulkRequest, NewSubscriber, SubscriberPatch, SubscriberRow,
};
use crate::db::tenant;
use crate::error::{Error, Result};
use crate::ops::subscribers as ops;
use crate::scope::{Actor, Permission};

/// The fields the form shows errors beside, as the operations name them.
const FIELDS: &[&str] = &[
    "username",
    "password",
    "tenant_id",
    "site_id",
    "plan_id",
    "static_ipv4",
    "mac",
    "expires_at",
    "max_sessions",
    "auto_renew",
    "name",
    "phone",
    "email",
    "notes",
];

/// The form as typed: text throughout, so a refused form comes back exactly as it was.
#[derive(Deserialize, Default, Clone)]
pub struct SubscriberForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    site_id: String,
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    static_ipv4: String,
    #[serde(default)]
    mac: String,
    /// `YYYY-MM-DD`: expires at that day's end (UTC); empty: never.
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    max_sessions: String,
    auto_renew: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    notes: String,
}

impl SubscriberForm {
    fn of(row: &SubscriberRow) -> SubscriberForm {
        let s = &row.sub;
        SubscriberForm {
            username: s.username.clone(),
            password: String::new(),
            tenant_id: s.tenant_id.to_string(),
            site_id: s.site_id.map(|i| i.to_string()).unwrap_or_default(),
            plan_id: s.plan_id.map(|i| i.to_string()).unwrap_or_default(),
            static_ipv4: s.static_ipv4.map(|i| i.to_string()).unwrap_or_default(),
            mac: s.mac.clone().unwrap_or_default(),
            expires_at: day_of(s.expires_at.as_deref()),
            max_sessions: s.max_sessions.to_string(),
            auto_renew: s.auto_renew.then(|| "1".into()),
            name: s.name.clone(),
            phone: s.phone.clone(),
            email: s.email.clone(),
            notes: s.notes.clone(),
        }
    }

    /// The expiry as the operations take it: the end of the given day, UTC.
    fn expiry(&self, errs: &mut FieldErrors) -> Option<Option<String>> {
        match opt_text(&self.expires_at) {
            None => Some(None),
            Some(d) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                match time::Date::parse(&d, &fmt) {
                    Ok(_) => Some(Some(format!("{d}T23:59:59Z"))),
                    Err(_) => {
                        errs.add(
                            "expires_at",
                            format!("expires_at: '{d}' is not a date (for example 2026-12-31)"),
                        );
                        None
                    }
                }
            }
        }
    }

    /// The new subscriber, or the refusals of the panel's own parsing.
    fn new_subscriber(&self) -> Result<NewSubscriber, FieldErrors> {
        let mut errs = FieldErrors::default();
        if self.password.is_empty() {
            errs.add("password", "password is required: the PPP login's secret");
        }
        let tenant_id = opt_number(&mut errs, "tenant_id", &self.tenant_id);
        let site_id = opt_number(&mut errs, "site_id", &self.site_id);
        let plan_id = opt_number(&mut errs, "plan_id", &self.plan_id);
        let max_sessions = opt_number(&mut errs, "max_sessions", &self.max_sessions);
        let expires_at = self.expiry(&mut errs).flatten();
        checked(
            errs,
            NewSubscriber {
                username: self.username.trim().to_string(),
                password: self.password.clone(),
                tenant_id,
                site_id,
                status: None,
                expires_at,
                plan_id,
                auto_renew: self.auto_renew.is_some(),
                max_sessions,
                static_ipv4: opt_text(&self.static_ipv4),
                mac: opt_text(&self.mac),
                wan_check_exempt: false,
                wan_tcp_ports: None,
                name: self.name.clone(),
                phone: self.phone.clone(),
                email: self.email.clone(),
                notes: self.notes.clone(),
            },
        )
    }

    /// Every field of the form as a change of `row` (the password only when one was
    /// typed; the expiry only when its day changed, so saving keeps an expiry's time).
    fn patch(&self, row: &SubscriberRow) -> Result<SubscriberPatch, FieldErrors> {
        let mut errs = FieldErrors::default();
        let site_id = opt_number(&mut errs, "site_id", &self.site_id);
        let plan_id = opt_number(&mut errs, "plan_id", &self.plan_id);
        let max_sessions = opt_number(&mut errs, "max_sessions", &self.max_sessions);
        let expires_at = self.expiry(&mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        let day_changed = day_of(row.sub.expires_at.as_deref()) != self.expires_at.trim();
        Ok(SubscriberPatch {
            username: Some(self.username.trim().to_string()),
            password: Some(self.password.clone()).filter(|p| !p.is_empty()),
            site_id: Some(site_id),
            plan_id: Some(plan_id),
            static_ipv4: Some(opt_text(&self.static_ipv4)),
            mac: Some(opt_text(&self.mac)),
            expires_at: expires_at.filter(|_| day_changed),
            max_sessions: Some(max_sessions.unwrap_or(row.sub.max_sessions)),
            auto_renew: Some(self.auto_renew.is_some()),
            name: Some(self.name.clone()),
            phone: Some(self.phone.clone()),
            email: Some(self.email.clone()),
            notes: Some(self.notes.clone()),
            ..Default::default()
        })
    }
}

/// `2026-12-31` of an RFC 3339 time; empty for none.
fn day_of(t: Option<&str>) -> String {
    t.map(|e| e.get(..10).unwrap_or(e).to_string())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "subscriber_form.html")]
struct FormPage {
    chrome: Chrome,
    title: String,
    /// Where the form posts.
    action: String,
    /// The subscriber being edited; none: a new one.
    id: Option<i64>,
    f: SubscriberForm,
    errs: FieldErrors,
    plans: Vec<Choice>,
    sites: Option<Vec<Choice>>,
    owners: Option<Vec<Choice>>,
}

/// What the form offers to choose from, read in the actor's scope as the API lists them:
/// plans; sites for those who manage sites; owners (its own tenant and the resellers
/// below) for those who manage resellers. Others type a site id, or keep their own tenant.
pub struct Options {
    pub plans: Vec<(String, String)>,
    pub sites: Option<Vec<(String, String)>>,
    pub owners: Option<Vec<(String, String)>>,
}

pub async fn options(st: &AppState, actor: &Actor) -> Result<Options> {
    let (see_sites, see_owners) = (
        actor.can(Permission::ManageSites),
        actor.can(Permission::ManageResellers),
    );
    let own = actor.tenant_id;
    st.read_scoped(actor, move |c, s| {
        let plans = plan::list(c, s, &PlanFilter::default(), Paging::new(None, Some(500))?)?
            .into_iter()
            .map(|p| (p.id.to_string(), p.name))
            .collect();
        let sites = see_sites
            .then(|| site::list(c, s, &SiteFilter::default(), Paging::new(None, Some(500))?))
            .transpose()?
            .map(|l| l.into_iter().map(|x| (x.id.to_string(), x.name)).collect());
        let owners = see_owners
            .then(|| -> Result<Vec<(String, String)>> {
                let me = tenant::get(c, own)?.ok_or_else(|| Error::not_found("reseller"))?;
                let below = tenant::list(
                    c,
                    s,
                    &tenant::ResellerFilter::default(),
                    Paging::new(None, Some(500))?,
                )?;
                Ok(std::iter::once(me)
                    .chain(below)
                    .map(|t| (t.id.to_string(), t.name))
                    .collect())
            })
            .transpose()?;
        Ok(Options {
            plans,
            sites,
            owners,
        })
    })
    .await
}

async fn form_page(
    st: &AppState,
    v: &Viewer,
    id: Option<i64>,
    f: SubscriberForm,
    errs: FieldErrors,
) -> PageResult {
    let o = options(st, &v.actor).await?;
    let status = errs.status();
    let (title, action) = match id {
        Some(id) => (
            format!("Edit {}", f.username),
            format!("/panel/subscribers/{id}"),
        ),
        None => (
            "New subscriber".to_string(),
            "/panel/subscribers".to_string(),
        ),
    };
    let page = FormPage {
        chrome: Chrome::new(&v.ctx, "subscribers"),
        title,
        action,
        id,
        plans: choices(o.plans, Some(f.plan_id.as_str())),
        sites: o.sites.map(|s| choices(s, Some(f.site_id.as_str()))),
        owners: id
            .is_none()
            .then_some(o.owners)
            .flatten()
            .map(|s| choices(s, Some(f.tenant_id.as_str()))),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

/// The empty form for a new subscriber.
pub async fn new_form(State(st): State<AppState>, v: Viewer) -> PageResult {
    v.actor.require(Permission::CreateCustomers)?;
    let f = SubscriberForm {
        tenant_id: v.actor.tenant_id.to_string(),
        max_sessions: "1".into(),
        ..Default::default()
    };
    form_page(&st, &v, None, f, FieldErrors::default()).await
}

/// Creates the subscriber, or shows the form again, filled in, with its errors.
pub async fn create(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<SubscriberForm>,
) -> PageResult {
    v.actor.require(Permission::CreateCustomers)?;
    let (actor, secrets) = (v.actor.clone(), st.secrets.clone());
    submit(
        f.new_subscriber(),
        FIELDS,
        |input| {
            st.db
                .write(move |tx| ops::create_subscriber(tx, &actor, &input, &secrets))
        },
        |row| format!("/panel/subscribers/{}?notice=created", row.sub.id),
        |errs| form_page(&st, &v, None, f, errs),
    )
    .await
}

/// The form, filled with the subscriber (404 page outside the actor's scope).
pub async fn edit_form(State(st): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    v.actor.require(Permission::EditCustomers)?;
    let row = st
        .read_scoped(&v.actor, move |c, s| subscriber::get_visible(c, s, id))
        .await?;
    form_page(
        &st,
        &v,
        Some(id),
        SubscriberForm::of(&row),
        FieldErrors::default(),
    )
    .await
}

/// Saves the form through the API's update, or shows it again with its errors.
pub async fn update(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<SubscriberForm>,
) -> PageResult {
    v.actor.require(Permission::EditCustomers)?;
    let row = st
        .read_scoped(&v.actor, move |c, s| subscriber::get_visible(c, s, id))
        .await?;
    let (actor, secrets) = (v.actor.clone(), st.secrets.clone());
    submit(
        f.patch(&row),
        FIELDS,
        |p| {
            st.db
                .write(move |tx| ops::update_subscriber(tx, &actor, id, &p, &secrets))
        },
        |_| format!("/panel/subscribers/{id}?notice=saved"),
        |errs| form_page(&st, &v, Some(id), f, errs),
    )
    .await
}

/// The list's bulk form: an action, the ticked rows (`pick.<id>` fields), the reseller
/// to move them to, and a key so a renewal of many runs once.
#[derive(Deserialize)]
pub struct BulkForm {
    action: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    key: String,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

impl BulkForm {
    fn ids(&self) -> Result<Vec<i64>> {
        self.rest
            .keys()
            .filter_map(|k| k.strip_prefix("pick."))
            .map(|id| {
                id.parse()
                    .map_err(|_| Error::invalid(format!("'{id}' is not a subscriber id")))
            })
            .collect()
    }
}

/// Suspends, reconnects or moves the ticked subscribers ([`ops::subscribers::bulk`], the
/// API's bulk endpoint, its permissions and transfer rules), or renews each one period
/// on its own plan, all or none, once per form.
pub async fn bulk(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<BulkForm>,
) -> PageResult {
    let ids = f.ids()?;
    let action = match f.action.as_str() {
        "suspend" => Some(BulkAction::Suspend),
        "reconnect" => Some(BulkAction::Reconnect),
        "set_reseller" => Some(BulkAction::SetReseller),
        "renew" => None,
        other => {
            return Err(Failure(Error::invalid(format!(
                "action: '{other}' is not suspend, reconnect, set_reseller or renew"
            ))));
        }
    };
    let (changed, unchanged) = match action {
        Some(action) => {
            v.actor.require(ops::bulk_permission(action))?;
            let req = BulkRequest {
                action,
                tenant_id: if action == BulkAction::SetReseller {
                    Some(
                        super::opt_i64("tenant_id", &Some(f.tenant_id.clone()))?.ok_or_else(
                            || Error::invalid("tenant_id: choose the reseller to move them to"),
                        )?,
                    )
                } else {
                    None
                },
                ids,
            };
            let actor = v.actor.clone();
            let r = st.db.write(move |tx| ops::bulk(tx, &actor, &req)).await?;
            (r.changed.len(), r.unchanged.len())
        }
        None => {
            v.actor.require(Permission::RecordPayments)?;
            if ids.is_empty() || ids.len() > 1000 {
                return Err(Failure(Error::invalid(
                    "ids must list 1 to 1000 subscribers",
                )));
            }
            let cur = st.currency.clone();
            let request = format!("bulk renew {ids:?}");
            let n = ids.len();
            let replayed = once(&st, &v.actor, &f.key, request, move |tx, by| {
                let rows = subscriber::get_all_visible(tx, &by.scope, &ids)?;
                rows.iter()
                    .map(|sub| billing::renew(tx, by, sub, None, 1, false, None, &cur))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
            if replayed { (0, n) } else { (n, 0) }
        }
    };
    Ok(Redirect::to(&format!(
        "/panel/subscribers?done={}&changed={changed}&unchanged={unchanged}",
        f.action
    ))
    .into_response())
}
