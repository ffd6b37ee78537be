//! Sites, their NAS devices and their agents: the list with each agent's sync state, a
//! site's page (its agent's version, last contact, applied against head revision and
//! drift, its recent events, its NAS devices and enrollment tokens), and the forms that
//! create a site, a NAS and an enrollment token — through [`ops::sites`], behind the
//! API's permission (manage sites).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::forms::{FieldErrors, checked, opt_number, opt_text, submit};
use super::pages::{Choice, choices};
use super::subscriber_forms::options;
use super::{Chrome, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::crypto::new_bearer;
use crate::db::Paging;
use crate::db::agent::{self, AgentStatus};
use crate::db::nas::{self, Nas, NasFilter, NasKind, NasPatch, NewNas};
use crate::db::site::{self, NewSite, Site, SiteFilter, SitePatch};
use crate::error::{ErrorKind, Result};
use crate::ops::sites as ops;
use crate::scope::Permission;

const SITE_FIELDS: &[&str] = &["name", "tenant_id", "location", "notes"];
const NAS_FIELDS: &[&str] = &[
    "name",
    "ip",
    "secret",
    "kind",
    "coa_port",
    "require_message_authenticator",
];

/// A site's agent as a person reads it.
pub struct AgentLine {
    pub hostname: String,
    pub version: String,
    pub last_seen: String,
    pub applied: u64,
    pub head: u64,
    /// `in sync`, `behind` (applied < head) or `drift` (at head, digest differs).
    pub state: &'static str,
    /// The state as a class name.
    pub class: &'static str,
}

impl From<&AgentStatus> for AgentLine {
    fn from(a: &AgentStatus) -> AgentLine {
        AgentLine {
            hostname: a.hostname.clone(),
            version: a.version.clone(),
            last_seen: a
                .last_seen_at
                .as_deref()
                .map(|t| t.replace('T', " ").trim_end_matches('Z').to_string())
                .unwrap_or_else(|| "never".into()),
            applied: a.applied_revision,
            head: a.head_revision,
            state: sync_state(a),
            class: match sync_state(a) {
                "in sync" => "in-sync",
                other => other,
            },
        }
    }
}

/// In sync, behind the head, or at the head but enforcing something else (drift).
pub fn sync_state(a: &AgentStatus) -> &'static str {
    match (a.in_sync, a.digest_matches) {
        (true, _) => "in sync",
        (false, Some(false)) => "drift",
        _ => "behind",
    }
}

/// The site's agent, or none when no agent is enrolled.
pub fn agent_of(c: &rusqlite::Connection, site_id: i64) -> Result<Option<AgentStatus>> {
    match agent::status(c, site_id) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub struct SiteLine {
    pub id: i64,
    pub name: String,
    pub location: String,
    pub agent: Option<AgentLine>,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    sites: Vec<SiteLine>,
    next: Option<String>,
    f: SiteForm,
    errs: FieldErrors,
    owners: Option<Vec<Choice>>,
}

#[derive(Deserialize, Default, Clone)]
pub struct SiteForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    notes: String,
}

/// The sites of the actor's scope with their agents' sync state, read as the API reads
/// them ([`site::list`], [`agent::status`]).
pub async fn site_lines(
    st: &AppState,
    v: &Viewer,
    cursor: Option<String>,
    limit: u32,
) -> Result<(Vec<SiteLine>, Option<String>)> {
    let f = SiteFilter {
        cursor: cursor.filter(|c| !c.is_empty()),
        limit: Some(limit),
        ..Default::default()
    };
    let page = st.list_page(&v.actor, f, site::list, |s| s.id).await?;
    let ids: Vec<i64> = page.items.iter().map(|s| s.id).collect();
    let agents = st
        .read_scoped(&v.actor, move |c, _| {
            ids.iter()
                .map(|&id| agent_of(c, id))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
    let lines = page
        .items
        .iter()
        .zip(agents)
        .map(|(s, a)| SiteLine {
            id: s.id,
            name: s.name.clone(),
            location: s.location.clone(),
            agent: a.as_ref().map(AgentLine::from),
        })
        .collect();
    Ok((lines, page.next_cursor))
}

async fn sites_page(
    st: &AppState,
    v: &Viewer,
    q: super::PageQuery,
    f: SiteForm,
    errs: FieldErrors,
) -> PageResult {
    let (sites, next) = site_lines(st, v, q.cursor, 100).await?;
    let o = options(st, &v.actor).await?;
    let status = errs.status();
    let notice = match q.notice.as_deref() {
        Some("created") => Some("Site created."),
        _ => None,
    };
    let page = SitesPage {
        chrome: Chrome::new(&v.ctx, "sites"),
        title: "Sites".into(),
        notice,
        sites,
        next: next.map(|c| format!("/panel/sites?cursor={c}")),
        owners: o.owners.map(|s| choices(s, Some(f.tenant_id.as_str()))),
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    sites_page(&st, &v, q, SiteForm::default(), FieldErrors::default()).await
}

/// Creates a site through [`ops::sites::create_site`], or the list again with the form's
/// errors.
pub async fn create(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<SiteForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let mut errs = FieldErrors::default();
    let input = NewSite {
        name: f.name.clone(),
        tenant_id: opt_number(&mut errs, "tenant_id", &f.tenant_id),
        location: f.location.clone(),
        notes: f.notes.clone(),
    };
    let actor = v.actor.clone();
    submit(
        checked(errs, input),
        SITE_FIELDS,
        |input| st.db.write(move |tx| ops::create_site(tx, &actor, &input)),
        |s| format!("/panel/sites/{}?notice=created", s.id),
        |errs| sites_page(&st, &v, super::PageQuery::default(), f, errs),
    )
    .await
}

#[derive(Template)]
#[template(path = "site_form.html")]
struct SiteFormPage {
    chrome: Chrome,
    title: String,
    id: i64,
    f: SiteForm,
    errs: FieldErrors,
}

fn site_form_page(v: &Viewer, id: i64, f: SiteForm, errs: FieldErrors) -> PageResult {
    let status = errs.status();
    let page = SiteFormPage {
        chrome: Chrome::new(&v.ctx, "sites"),
        title: format!("Edit {}", f.name),
        id,
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

/// A site's edit form (name, location, notes); the 404 page outside the actor's scope.
pub async fn edit_site(State(st): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let s = st
        .read_scoped(&v.actor, move |c, s| site::get_visible(c, s, id))
        .await?;
    let f = SiteForm {
        name: s.name,
        tenant_id: s.tenant_id.to_string(),
        location: s.location,
        notes: s.notes,
    };
    site_form_page(&v, id, f, FieldErrors::default())
}

/// Saves a site's name, location and notes through [`ops::sites::update_site`].
pub async fn update_site(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<SiteForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let p = SitePatch {
        name: Some(f.name.clone()),
        location: Some(f.location.clone()),
        notes: Some(f.notes.clone()),
        ..Default::default()
    };
    let actor = v.actor.clone();
    submit(
        Ok(p),
        SITE_FIELDS,
        |p| st.db.write(move |tx| ops::update_site(tx, &actor, id, &p)),
        |_| format!("/panel/sites/{id}?notice=saved"),
        |errs| async move { site_form_page(&v, id, f, errs) },
    )
    .await
}

// ---------------------------------------------------------------------------------
// One site

struct NasLine {
    id: i64,
    name: String,
    ip: String,
    kind: &'static str,
}

struct EventLine {
    at: String,
    kind: String,
    summary: String,
}

struct TokenLine {
    id: i64,
    created: String,
    expires: String,
    /// Used, revoked, expired, or empty: still usable (and revocable).
    state: String,
    revocable: bool,
}

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    chrome: Chrome,
    title: String,
    notice: Option<&'static str>,
    site: Site,
    agent: Option<AgentLine>,
    events: Vec<EventLine>,
    nas: Vec<NasLine>,
    tokens: Vec<TokenLine>,
    /// A token just made: its secret, shown this once.
    new_secret: Option<String>,
    f: NasForm,
    errs: FieldErrors,
    kinds: Vec<Choice>,
}

#[derive(Deserialize, Default, Clone)]
pub struct NasForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    coa_port: String,
    require_message_authenticator: Option<String>,
}

const KINDS: [NasKind; 3] = [NasKind::Mikrotik, NasKind::AccelPpp, NasKind::Generic];

fn unix_time(t: i64) -> String {
    crate::db::rfc3339(t)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// The page of site `id` (the 404 page outside the actor's scope).
async fn site_page(
    st: &AppState,
    v: &Viewer,
    id: i64,
    notice: Option<&'static str>,
    new_secret: Option<String>,
    f: NasForm,
    errs: FieldErrors,
) -> PageResult {
    let (site, agent, events, nas, tokens) = st
        .read_scoped(&v.actor, move |c, s| {
            let site = site::get_visible(c, s, id)?;
            let agent = agent_of(c, site.id)?;
            let events = agent::site_events(c, site.id, None, None, 20)?;
            let nas = nas::list(
                c,
                s,
                &NasFilter {
                    site_id: Some(site.id),
                    ..Default::default()
                },
                Paging::new(None, Some(500))?,
            )?;
            let tokens = agent::list_tokens(c, site.id)?;
            Ok((site, agent, events, nas, tokens))
        })
        .await?;
    let status = errs.status();
    let kinds = KINDS
        .iter()
        .map(|k| (k.as_str().to_string(), k.as_str().to_string()))
        .collect();
    let day = |t: &str| t.replace('T', " ").trim_end_matches('Z').to_string();
    let now = crate::db::rfc3339(crate::db::now());
    let page = SitePage {
        chrome: Chrome::new(&v.ctx, "sites"),
        title: site.name.clone(),
        notice,
        agent: agent.as_ref().map(AgentLine::from),
        events: events
            .iter()
            .map(|e| EventLine {
                at: unix_time(e.at),
                kind: e.kind.clone(),
                summary: summary(&e.body),
            })
            .collect(),
        nas: nas
            .iter()
            .map(|n| NasLine {
                id: n.id,
                name: n.name.clone(),
                ip: n.ip.to_string(),
                kind: n.kind.as_str(),
            })
            .collect(),
        tokens: tokens
            .iter()
            .map(|t| {
                let state = match (&t.used_at, &t.revoked_at) {
                    (Some(u), _) => format!("used {}", day(u)),
                    (None, Some(r)) => format!("revoked {}", day(r)),
                    _ if t.expires_at < now => "expired".to_string(),
                    _ => String::new(),
                };
                TokenLine {
                    id: t.id,
                    created: day(&t.created_at),
                    expires: day(&t.expires_at),
                    revocable: t.used_at.is_none() && t.revoked_at.is_none(),
                    state,
                }
            })
            .collect(),
        new_secret,
        kinds: choices(kinds, Some(f.kind.as_str())),
        site,
        f,
        errs,
    };
    let mut resp = (status, render(&page)).into_response();
    // A page holding a token's secret is not kept by the browser or any cache.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// An event's body in one line: its subscriber, username or state, whichever it has.
fn summary(body: &serde_json::Value) -> String {
    [
        "username",
        "subscriber_id",
        "state",
        "status",
        "reason",
        "address",
    ]
    .iter()
    .filter_map(|k| {
        body.get(*k).and_then(|v| match v {
            serde_json::Value::String(s) => Some(format!("{k} {s}")),
            serde_json::Value::Number(n) => Some(format!("{k} {n}")),
            _ => None,
        })
    })
    .collect::<Vec<_>>()
    .join(" · ")
}

pub async fn show(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<super::PageQuery>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let notice = match q.notice.as_deref() {
        Some("created") => Some("Site created."),
        Some("nas") => Some("NAS added."),
        Some("nas_saved") => Some("NAS saved."),
        Some("saved") => Some("Site saved."),
        Some("revoked") => Some("Enrollment token revoked: it enrols nothing now."),
        _ => None,
    };
    let f = NasForm {
        kind: NasKind::Mikrotik.as_str().into(),
        ..Default::default()
    };
    site_page(&st, &v, id, notice, None, f, FieldErrors::default()).await
}

/// What the NAS form's own parsing decides: the address, the dialect and the CoA port,
/// each refused beside its field. An empty address or kind is kept as `None` for an
/// edit to leave as it was; a new NAS needs both.
struct NasFields {
    ip: Option<std::net::IpAddr>,
    kind: Option<NasKind>,
    coa_port: Option<u16>,
}

impl NasForm {
    fn fields(&self, errs: &mut FieldErrors) -> NasFields {
        let ip = match opt_text(&self.ip).map(|s| s.parse::<std::net::IpAddr>()) {
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => {
                errs.add(
                    "ip",
                    format!("ip: '{}' is not an IP address", self.ip.trim()),
                );
                None
            }
            None => {
                errs.add(
                    "ip",
                    "ip is required: the address the NAS sends RADIUS from",
                );
                None
            }
        };
        let kind = KINDS.into_iter().find(|k| k.as_str() == self.kind);
        if kind.is_none() {
            errs.add("kind", "kind: choose mikrotik, accel-ppp or generic");
        }
        let coa_port = match opt_number(errs, "coa_port", &self.coa_port).map(u16::try_from) {
            Some(Ok(0)) | Some(Err(_)) => {
                errs.add("coa_port", "coa_port must be between 1 and 65535");
                None
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        NasFields { ip, kind, coa_port }
    }

    fn new_nas(&self, site: &Site) -> Result<NewNas, FieldErrors> {
        let mut errs = FieldErrors::default();
        let n = self.fields(&mut errs);
        let (Some(ip), Some(kind)) = (n.ip, n.kind) else {
            return Err(errs);
        };
        checked(
            errs,
            NewNas {
                name: self.name.clone(),
                site_id: site.id,
                ip,
                secret: self.secret.clone(),
                kind,
                coa_port: n.coa_port,
                require_message_authenticator: Some(self.require_message_authenticator.is_some()),
                tenant_id: Some(site.tenant_id),
            },
        )
    }

    /// Every field as a change; the secret only when one was typed (empty keeps it).
    fn patch(&self) -> Result<NasPatch, FieldErrors> {
        let mut errs = FieldErrors::default();
        let n = self.fields(&mut errs);
        checked(
            errs,
            NasPatch {
                name: Some(self.name.clone()),
                ip: n.ip,
                secret: Some(self.secret.clone()).filter(|s| !s.is_empty()),
                kind: n.kind,
                coa_port: n.coa_port,
                require_message_authenticator: Some(self.require_message_authenticator.is_some()),
            },
        )
    }

    /// The form as shown again: never with the secret typed (nor the stored one).
    fn without_secret(self) -> NasForm {
        NasForm {
            secret: String::new(),
            ..self
        }
    }
}

/// Adds a NAS at the site through [`ops::sites::create_nas`], owned as the site is.
pub async fn create_nas(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<NasForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let site = st
        .read_scoped(&v.actor, move |c, s| site::get_visible(c, s, id))
        .await?;
    let (actor, secrets) = (v.actor.clone(), st.secrets.clone());
    submit(
        f.new_nas(&site),
        NAS_FIELDS,
        |input| {
            st.db
                .write(move |tx| ops::create_nas(tx, &actor, &input, &secrets))
        },
        |_| format!("/panel/sites/{id}?notice=nas"),
        |errs| site_page(&st, &v, id, None, None, f.without_secret(), errs),
    )
    .await
}

#[derive(Template)]
#[template(path = "nas_form.html")]
struct NasFormPage {
    chrome: Chrome,
    title: String,
    id: i64,
    site_id: i64,
    f: NasForm,
    errs: FieldErrors,
    kinds: Vec<Choice>,
}

fn nas_form_page(v: &Viewer, nas: &Nas, f: NasForm, errs: FieldErrors) -> PageResult {
    let status = errs.status();
    let kinds = KINDS
        .iter()
        .map(|k| (k.as_str().to_string(), k.as_str().to_string()))
        .collect();
    let page = NasFormPage {
        chrome: Chrome::new(&v.ctx, "sites"),
        title: format!("Edit NAS {}", nas.name),
        id: nas.id,
        site_id: nas.site_id,
        kinds: choices(kinds, Some(f.kind.as_str())),
        f: f.without_secret(),
        errs,
    };
    Ok((status, render(&page)).into_response())
}

async fn visible_nas(st: &AppState, v: &Viewer, id: i64) -> Result<Nas> {
    // Read without unsealing: the secret is never shown back.
    st.read_scoped(&v.actor, move |c, s| nas::get_visible(c, s, id, None))
        .await
}

/// A NAS's edit form (the secret field empty: typing one replaces it); the 404 page
/// outside the actor's scope.
pub async fn edit_nas(State(st): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let n = visible_nas(&st, &v, id).await?;
    let f = NasForm {
        name: n.name.clone(),
        ip: n.ip.to_string(),
        secret: String::new(),
        kind: n.kind.as_str().into(),
        coa_port: n.coa_port.to_string(),
        require_message_authenticator: n.require_message_authenticator.then(|| "1".into()),
    };
    nas_form_page(&v, &n, f, FieldErrors::default())
}

/// Saves a NAS through [`ops::sites::update_nas`]: a typed secret is sealed at rest and
/// audited as `[changed]`; an empty one keeps the stored secret.
pub async fn update_nas(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<NasForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let n = visible_nas(&st, &v, id).await?;
    let (actor, secrets) = (v.actor.clone(), st.secrets.clone());
    submit(
        f.patch(),
        NAS_FIELDS,
        |p| {
            st.db
                .write(move |tx| ops::update_nas(tx, &actor, id, &p, &secrets))
        },
        |n| format!("/panel/sites/{}?notice=nas_saved", n.site_id),
        |errs| async move { nas_form_page(&v, &n, f, errs) },
    )
    .await
}

#[derive(Deserialize)]
pub struct TokenForm {}

/// Makes a single-use enrollment token for the site's agent (24 hours, as the API's
/// default) through [`ops::sites::create_enrollment_token`], and shows its secret on
/// the answer itself, once: it is never stored in clear, and no URL carries it.
pub async fn create_token(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(_): Posted<TokenForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let secret = new_bearer("ope_");
    let (actor, sec) = (v.actor.clone(), secret.clone());
    st.db
        .write(move |tx| ops::create_enrollment_token(tx, &actor, id, 24 * 3600, &sec))
        .await?;
    let f = NasForm {
        kind: NasKind::Mikrotik.as_str().into(),
        ..Default::default()
    };
    site_page(&st, &v, id, None, Some(secret), f, FieldErrors::default()).await
}

/// Revokes an unused enrollment token through [`ops::sites::revoke_enrollment_token`]
/// and returns to its site (a token outside the actor's scope: the 404 page).
pub async fn revoke_token(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(_): Posted<TokenForm>,
) -> PageResult {
    v.actor.require(Permission::ManageSites)?;
    let actor = v.actor.clone();
    let t = st
        .db
        .write(move |tx| ops::revoke_enrollment_token(tx, &actor, id))
        .await?;
    Ok(Redirect::to(&format!("/panel/sites/{}?notice=revoked", t.site_id)).into_response())
}
