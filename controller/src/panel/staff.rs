//! Staff and managers: a new login's form and a login's edit form, with a manager's
//! permission checkboxes and the presets — through [`ops::users`] (the API's checks,
//! grant rules and audit), behind manage staff.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::forms::{FieldErrors, checked, opt_number, submit};
use super::pages::{Choice, choices};
use super::subscriber_forms::options;
use super::{Chrome, PageResult, Posted, Viewer, render};
use crate::AppState;
use crate::db::user::{self, NewUser, UserPatch, UserRow, UserStatus};
use crate::error::Error;
use crate::ops::users as ops;
use crate::scope::{Actor, Permission, RolePreset, UserKind};

const FIELDS: &[&str] = &[
    "email",
    "name",
    "phone",
    "password",
    "kind",
    "tenant_id",
    "permissions",
    "preset",
    "status",
];

/// The form as typed; the ticked permissions arrive as `perm.<name>` fields.
#[derive(Deserialize, Default, Clone)]
pub struct UserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    preset: String,
    #[serde(default)]
    status: String,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

impl UserForm {
    fn ticked(&self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.rest.contains_key(&format!("perm.{}", p.as_str())))
            .collect()
    }

    fn preset(&self, errs: &mut FieldErrors) -> Option<RolePreset> {
        if self.preset.is_empty() {
            return None;
        }
        let p = RolePreset::ALL
            .into_iter()
            .find(|p| preset_name(*p) == self.preset);
        if p.is_none() {
            errs.add(
                "preset",
                format!("preset: '{}' is not a preset", self.preset),
            );
        }
        p
    }

    fn of(u: &UserRow) -> UserForm {
        let mut rest = std::collections::BTreeMap::new();
        for p in &u.permissions.0 {
            rest.insert(format!("perm.{}", p.as_str()), "1".to_string());
        }
        UserForm {
            email: u.email.clone(),
            name: u.name.clone(),
            phone: u.phone.clone(),
            kind: u.kind.as_str().into(),
            tenant_id: u.tenant_id.to_string(),
            status: u.status.as_str().into(),
            rest,
            ..Default::default()
        }
    }
}

fn preset_name(p: RolePreset) -> &'static str {
    match p {
        RolePreset::Support => "support",
        RolePreset::ReadOnly => "read_only",
        RolePreset::Collector => "collector",
    }
}

/// One permission checkbox: only those the actor holds are offered (nobody grants what
/// it does not hold).
struct PermBox {
    name: &'static str,
    label: String,
    ticked: bool,
}

/// A preset and the permissions it ticks (the page's script ticks them on choosing it;
/// without the script the preset is added when the form is saved).
struct PresetChoice {
    value: &'static str,
    label: &'static str,
    perms: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "user_form.html")]
struct UserFormPage {
    chrome: Chrome,
    title: String,
    action: String,
    id: Option<i64>,
    f: UserForm,
    errs: FieldErrors,
    kinds: Vec<Choice>,
    owners: Option<Vec<Choice>>,
    perms: Vec<PermBox>,
    presets: Vec<PresetChoice>,
    /// The login being edited is a manager (or the new one may be).
    manager: bool,
}

/// The kinds of login the actor may create, as the operation decides them.
fn kinds(actor: &Actor) -> Vec<(String, String)> {
    let mut k = vec![(
        "manager".to_string(),
        "Manager (chosen functions)".to_string(),
    )];
    if actor.kind != UserKind::Manager {
        k.push((
            "reseller".into(),
            "Reseller login (everything in its reseller)".into(),
        ));
    }
    if actor.is_operator_staff() {
        k.push(("operator".into(), "Operator staff".into()));
    }
    k
}

async fn form_page(
    st: &AppState,
    v: &Viewer,
    id: Option<i64>,
    f: UserForm,
    errs: FieldErrors,
) -> PageResult {
    let o = options(st, &v.actor).await?;
    let ticked = f.ticked();
    let held = v.actor.effective_permissions();
    let perms = Permission::ALL
        .into_iter()
        .filter(|p| held.contains(*p))
        .map(|p| PermBox {
            name: p.as_str(),
            label: p.as_str().replace('_', " "),
            ticked: ticked.contains(&p),
        })
        .collect();
    let presets = RolePreset::ALL
        .into_iter()
        .map(|p| PresetChoice {
            value: preset_name(p),
            label: match p {
                RolePreset::Support => "Support",
                RolePreset::ReadOnly => "Read only",
                RolePreset::Collector => "Collector",
            },
            perms: p
                .permissions()
                .0
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            selected: f.preset == preset_name(p),
        })
        .collect();
    let status = errs.status();
    let (title, action) = match id {
        Some(id) => (format!("Edit {}", f.email), format!("/panel/users/{id}")),
        None => ("New login".to_string(), "/panel/users".to_string()),
    };
    let manager = id.is_none() || f.kind == "manager";
    let page = UserFormPage {
        chrome: Chrome::new(&v.ctx, "users"),
        title,
        action,
        id,
        kinds: choices(kinds(&v.actor), Some(f.kind.as_str())),
        owners: o
            .owners
            .filter(|_| id.is_none())
            .map(|s| choices(s, Some(f.tenant_id.as_str()))),
        perms,
        presets,
        manager,
        f,
        errs,
    };
    Ok((status, render(&page)).into_response())
}

pub async fn new_form(State(st): State<AppState>, v: Viewer) -> PageResult {
    v.actor.require(Permission::ManageStaff)?;
    let f = UserForm {
        kind: "manager".into(),
        tenant_id: v.actor.tenant_id.to_string(),
        ..Default::default()
    };
    form_page(&st, &v, None, f, FieldErrors::default()).await
}

/// Creates the login through [`ops::users::check_new`] and
/// [`ops::users::create_user`], or the form again with its errors (the password is
/// never sent back).
pub async fn create(
    State(st): State<AppState>,
    v: Viewer,
    Posted(f): Posted<UserForm>,
) -> PageResult {
    v.actor.require(Permission::ManageStaff)?;
    let mut errs = FieldErrors::default();
    let kind = UserKind::parse(&f.kind);
    if kind.is_none() {
        errs.add("kind", "kind: choose manager, reseller or operator");
    }
    let preset = f.preset(&mut errs);
    let tenant_id = opt_number(&mut errs, "tenant_id", &f.tenant_id);
    let input = kind.map(|kind| {
        let manager = kind == UserKind::Manager;
        NewUser {
            email: f.email.clone(),
            name: f.name.clone(),
            phone: f.phone.clone(),
            password: f.password.clone(),
            kind,
            tenant_id,
            permissions: if manager { f.ticked() } else { Vec::new() },
            preset: preset.filter(|_| manager),
        }
    });
    let parsed = match input {
        Some(input) => checked(errs, input),
        None => Err(errs),
    };
    // The form shown again never carries the password back.
    let back = UserForm {
        password: String::new(),
        ..f
    };
    let (st, v) = (&st, &v);
    submit(
        parsed,
        FIELDS,
        |input| async move {
            let (email, name, perms) = ops::check_new(&v.actor, &input)?;
            let hash = ops::hash_password(st, input.password.clone()).await?;
            let actor = v.actor.clone();
            st.db
                .write(move |tx| ops::create_user(tx, &actor, &input, &email, &name, &perms, &hash))
                .await
        },
        |_| "/panel/users?notice=created".into(),
        |errs| form_page(st, v, None, back, errs),
    )
    .await
}

async fn visible(st: &AppState, v: &Viewer, id: i64) -> Result<UserRow, Error> {
    st.read_scoped(&v.actor, move |c, s| user::get_visible(c, s, id))
        .await
}

pub async fn edit_form(State(st): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    v.actor.require(Permission::ManageStaff)?;
    let u = visible(&st, &v, id).await?;
    form_page(&st, &v, Some(id), UserForm::of(&u), FieldErrors::default()).await
}

/// Saves name, phone, status, a manager's permissions (with a chosen preset added) and,
/// when typed, a new password, through [`ops::users::update_user`].
pub async fn update(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
    Posted(f): Posted<UserForm>,
) -> PageResult {
    v.actor.require(Permission::ManageStaff)?;
    let u = visible(&st, &v, id).await?;
    let mut errs = FieldErrors::default();
    let preset = f.preset(&mut errs);
    let status = match f.status.as_str() {
        "active" => Some(UserStatus::Active),
        "disabled" => Some(UserStatus::Disabled),
        _ => {
            errs.add("status", "status: choose active or disabled");
            None
        }
    };
    let perms = (u.kind == UserKind::Manager).then(|| {
        let mut list = f.ticked();
        if let Some(p) = preset {
            list.extend(p.permissions().0);
        }
        list.sort();
        list.dedup();
        list
    });
    // Unchanged fields are left out, so a login may save its own form without touching
    // its own status or permissions (which it may not change).
    let p = UserPatch {
        name: Some(f.name.clone()),
        phone: Some(f.phone.clone()),
        status: status.filter(|s| *s != u.status),
        permissions: perms.filter(|l| *l != u.permissions.0.iter().copied().collect::<Vec<_>>()),
        password: Some(f.password.clone()).filter(|p| !p.is_empty()),
    };
    // The form shown again keeps what the login is, whatever was posted for it, and
    // never carries the password back.
    let back = UserForm {
        password: String::new(),
        email: u.email.clone(),
        kind: u.kind.as_str().into(),
        tenant_id: u.tenant_id.to_string(),
        ..f
    };
    let (st, v) = (&st, &v);
    submit(
        checked(errs, p),
        FIELDS,
        |p| async move {
            if let Some(pw) = &p.password {
                user::validate_password("password", pw)?;
            }
            let hash = match p.password.clone() {
                Some(pw) => Some(ops::hash_password(st, pw).await?),
                None => None,
            };
            let actor = v.actor.clone();
            st.db
                .write(move |tx| ops::update_user(tx, &actor, id, &p, hash.as_deref()))
                .await
        },
        |_| "/panel/users?notice=saved".into(),
        |errs| form_page(st, v, Some(id), back, errs),
    )
    .await
}
