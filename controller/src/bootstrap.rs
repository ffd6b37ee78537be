//! Start-up and the CLI's offline checks: the data directory, the pinned currency, the
//! first operator admin, operator provisioning, audit and ledger verification.

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::crypto::{SecretBox, new_password};
use crate::db::audit::{self, Entry, Who};
use crate::db::{Db, user};
use crate::http::AppState;
use crate::scope::{OPERATOR_TENANT, PermSet, UserKind};

/// Opens (creating) the data directory, its key and its database.
pub fn open(config: Config) -> anyhow::Result<AppState> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let secrets = SecretBox::load_or_create(&dir.join("controller.key"))?;
    let db = Db::open(&dir.join("controller.db"))?;
    pin_currency(&db, &config.currency())?;
    if let Some(t) = &config.tunnel {
        db.write_blocking(|c| crate::tunnel::Tunnel::check_overlay(c, t))
            .map_err(|e| anyhow::anyhow!("cannot start the management tunnel: {e}"))?;
    }
    AppState::new(db, secrets, config)
}

/// Records the currency on first start and refuses a config that disagrees later:
/// stored amounts are integers of the minor unit, so they cannot be reinterpreted.
fn pin_currency(db: &Db, cur: &crate::money::Currency) -> anyhow::Result<()> {
    let stored = db
        .write_blocking(|tx| {
            let get = |k: &str| -> rusqlite::Result<Option<String>> {
                use rusqlite::OptionalExtension;
                tx.query_row("SELECT value FROM settings WHERE key = ?1", [k], |r| {
                    r.get(0)
                })
                .optional()
            };
            let found = (get("currency")?, get("minor_units")?);
            if found.0.is_none() {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('currency', ?1)",
                    [&cur.code],
                )?;
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('minor_units', ?1)",
                    [cur.minor_units.to_string()],
                )?;
            }
            Ok(found)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let (Some(code), Some(units)) = stored
        && (code != cur.code || units != cur.minor_units.to_string())
    {
        anyhow::bail!(
            "this database keeps money in {code} with {units} minor-unit digit(s), but the config says {} with {}; \
             stored amounts cannot be reinterpreted: set [billing] back to {code} / {units}",
            cur.code,
            cur.minor_units
        );
    }
    Ok(())
}

pub fn system() -> Who {
    Who {
        user_id: None,
        name: "system (outpost-controller)".into(),
        impersonator: None,
        tenant_id: OPERATOR_TENANT,
        ip: "127.0.0.1".into(),
        user_agent: format!("outpost-controller/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// Creates operator staff from the CLI. Fails on a duplicate email.
pub fn create_operator(
    state: &AppState,
    email: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<i64> {
    let email = user::validate_email(email).map_err(|e| anyhow::anyhow!(e.message))?;
    user::validate_password("password", password).map_err(|e| anyhow::anyhow!(e.message))?;
    let hash = state.hasher.hash(password)?;
    let who = system();
    state
        .db
        .write_blocking(|tx| {
            let u = user::insert(
                tx,
                &user::Insert {
                    tenant_id: OPERATOR_TENANT,
                    kind: UserKind::Operator,
                    email: &email,
                    name,
                    phone: "",
                    password_hash: &hash,
                    permissions: &PermSet::default(),
                    created_by: None,
                },
            )?;
            audit::record(
                tx,
                &Entry::new(&who, OPERATOR_TENANT, "user.create", "user", u.id).after(&u.view()),
            )?;
            Ok(u.id)
        })
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// Gives a user a new random password to be shown once (lost one-time password,
/// forgotten password), ends its sessions and API tokens, and lifts the login throttle
/// on its account. Audited as the system.
pub fn reset_password(state: &AppState, email: &str) -> anyhow::Result<String> {
    let email = email.trim().to_ascii_lowercase();
    let password = new_password();
    let hash = state.hasher.hash(&password)?;
    let who = system();
    state
        .db
        .write_blocking(|tx| {
            let u = user::get_by_email(tx, &email)?
                .ok_or_else(|| crate::error::Error::not_found("user with this email"))?;
            user::set_password(tx, &u, &hash, None)?;
            crate::db::throttle::forget_account(tx, &email)?;
            audit::record(
                tx,
                &Entry::new(&who, u.tenant_id, "user.password_reset", "user", u.id),
            )?;
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(password)
}

/// On an installation with no operator staff, creates `admin@outpost.local` with a random
/// password and returns it, to be shown once.
pub fn first_admin(state: &AppState) -> anyhow::Result<Option<(String, String)>> {
    let n = state
        .db
        .write_blocking(|tx| user::count_operator_staff(tx))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if n > 0 {
        return Ok(None);
    }
    let email = "admin@outpost.local".to_string();
    let password = new_password();
    create_operator(state, &email, "Operator admin", &password)?;
    Ok(Some((email, password)))
}

/// Verifies the audit chain of the database in `data_dir`.
pub fn verify_audit(data_dir: &Path) -> anyhow::Result<audit::Verdict> {
    let conn = crate::db::open_read_only(&data_dir.join("controller.db"))?;
    Ok(audit::verify(&conn)?)
}

/// Checks the ledger of the database in `data_dir`: every chain of `balance_after` and
/// every balance against the sum of its ledger.
pub fn verify_ledger(data_dir: &Path) -> anyhow::Result<(u64, Vec<crate::db::ledger::Problem>)> {
    let conn = crate::db::open_read_only(&data_dir.join("controller.db"))?;
    Ok(crate::db::ledger::verify(&conn)?)
}
