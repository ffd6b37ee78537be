//! Start-up: the data directory, the first operator admin, and the demo data set.

use std::path::Path;

use anyhow::Context;
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::config::Config;
use crate::crypto::{SecretBox, new_password};
use crate::db::audit::{self, Entry, Who};
use crate::db::nas::{NasKind, NewNas};
use crate::db::site::NewSite;
use crate::db::subscriber::{NewSubscriber, SubscriberStatus};
use crate::db::tenant::{Limits, NewReseller};
use crate::db::{Db, nas, site, subscriber, tenant, user};
use crate::http::AppState;
use crate::scope::{OPERATOR_TENANT, PermSet, RolePreset, UserKind};

/// Opens (creating) the data directory, its key and its database.
pub fn open(config: Config) -> anyhow::Result<AppState> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let secrets = SecretBox::load_or_create(&dir.join("controller.key"))?;
    let db = Db::open(&dir.join("controller.db"))?;
    pin_currency(&db, &config.currency())?;
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
                .ok_or_else(|| crate::error::ApiError::not_found("user with this email"))?;
            user::update(
                tx,
                &u,
                &u.name,
                &u.phone,
                u.status,
                &u.permissions,
                Some(&hash),
            )?;
            crate::db::session::revoke_all_for_user(tx, u.id, None)?;
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

/// Logins created by the demo seed, to print.
pub struct DemoLogin {
    pub role: String,
    pub email: String,
    pub password: String,
}

/// Seeds a believable sample on an installation with no resellers yet: two resellers, a
/// sub-reseller, managers with presets, sites, NAS devices and 200 subscribers.
pub fn seed_demo(state: &AppState) -> anyhow::Result<Option<Vec<DemoLogin>>> {
    let has: i64 = state
        .db
        .write_blocking(|tx| {
            Ok(
                tx.query_row("SELECT count(*) FROM tenants WHERE depth > 0", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if has > 0 {
        return Ok(None);
    }
    let password = new_password();
    let hash = state.hasher.hash(&password)?;
    let secrets = state.secrets.clone();
    let who = system();
    let mut logins = Vec::new();
    state
        .db
        .write_blocking(|tx| {
            let root = tenant::get(tx, OPERATOR_TENANT)?.expect("root exists");
            let reseller = |parent: &tenant::Tenant, name: &str, subs: i64| {
                tenant::create(
                    tx,
                    parent,
                    &NewReseller {
                        name: name.into(),
                        parent_id: Some(parent.id),
                        allowed_ips: vec![],
                        rebrand_enabled: true,
                        custom_domain: None,
                        wan_check_enabled: true,
                        limits: Limits {
                            max_subscribers: Some(subs),
                            max_sub_resellers: Some(5),
                            max_managers: Some(10),
                            max_sites: Some(10),
                        },
                    },
                    2,
                )
            };
            let north = reseller(&root, "Northwind Wireless", 500)?;
            let lake = reseller(&root, "Lakeside Fibre", 500)?;
            let hill = reseller(&north, "Hilltop Net (Northwind)", 100)?;
            for t in [&north, &lake, &hill] {
                audit::record(
                    tx,
                    &Entry::new(&who, t.id, "reseller.create", "reseller", t.id)
                        .after(&t.view(None, &state.currency)),
                )?;
            }
            // Plans, rate cards and balances: the operator sells two plans wholesale;
            // Northwind resells one and passes it to Hilltop (in cascade mode).
            let cur = state.currency.clone();
            let money = |s: &str| s.parse::<rust_decimal::Decimal>().expect("static amount");
            let plan = |owner: &tenant::Tenant,
                        name: &str,
                        parent: Option<i64>,
                        down: i64,
                        up: i64,
                        price: &str| {
                crate::db::plan::create(
                    tx,
                    owner,
                    &crate::db::plan::NewPlan {
                        name: name.into(),
                        tenant_id: None,
                        parent_plan_id: parent,
                        download_kbps: down,
                        upload_kbps: up,
                        burst_download_kbps: None,
                        burst_upload_kbps: None,
                        validity_days: None,
                        validity_months: parent.is_none().then_some(1),
                        quota_mb: None,
                        price: money(price),
                    },
                    &cur,
                )
                .map(|p| p.id)
            };
            let home = plan(&root, "Home 20M", None, 20_000, 5_000, "25.00")?;
            let pro = plan(&root, "Pro 50M", None, 50_000, 10_000, "45.00")?;
            for (t, p, price) in [
                (&north, home, 1_800),
                (&north, pro, 3_200),
                (&lake, home, 1_900),
                (&lake, pro, 3_300),
            ] {
                crate::db::plan::set_card(tx, t, p, price)?;
            }
            let north_home = plan(
                &north,
                "Northwind Home 15M",
                Some(home),
                15_000,
                4_000,
                "24.00",
            )?;
            crate::db::plan::set_card(tx, &hill, north_home, 2_000)?;
            let hill_home = plan(
                &hill,
                "Hilltop Home 10M",
                Some(north_home),
                10_000,
                3_000,
                "23.00",
            )?;
            tx.execute(
                "UPDATE tenants SET renewal_mode = 'cascade', credit_limit = 5000 WHERE id = ?1",
                [hill.id],
            )?;
            let by = |t: &tenant::Tenant| crate::billing::By {
                who: &who,
                user_id: None,
                scope: crate::scope::Scope::Subtree {
                    tenant_id: t.id,
                    path: t.path.clone(),
                },
                idempotency_key: None,
            };
            use crate::billing::AdjustmentKind::Adjustment;
            crate::billing::add_balance(
                tx,
                &by(&root),
                &north,
                500_000,
                Adjustment,
                Some("opening balance"),
                &cur,
            )?;
            crate::billing::add_balance(
                tx,
                &by(&root),
                &lake,
                300_000,
                Adjustment,
                Some("opening balance"),
                &cur,
            )?;
            crate::billing::add_balance(
                tx,
                &by(&north),
                &hill,
                50_000,
                Adjustment,
                Some("opening balance"),
                &cur,
            )?;
            let plan_of = |tenant_id: i64, i: usize| match tenant_id {
                1 => [home, pro][i % 2],
                t if t == north.id => [north_home, pro][i % 2],
                t if t == lake.id => [home, pro][i % 2],
                _ => hill_home,
            };
            let mut add_user = |t: &tenant::Tenant,
                                kind: UserKind,
                                email: &str,
                                name: &str,
                                perms: PermSet,
                                role: &str| {
                let u = user::insert(
                    tx,
                    &user::Insert {
                        tenant_id: t.id,
                        kind,
                        email,
                        name,
                        phone: "+1 555 0100",
                        password_hash: &hash,
                        permissions: &perms,
                        created_by: None,
                    },
                )?;
                audit::record(
                    tx,
                    &Entry::new(&who, t.id, "user.create", "user", u.id).after(&u.view()),
                )?;
                logins.push(DemoLogin {
                    role: role.into(),
                    email: email.into(),
                    password: password.clone(),
                });
                Ok::<_, crate::error::ApiError>(())
            };
            add_user(
                &root,
                UserKind::Manager,
                "support@outpost.local",
                "Operator support desk",
                RolePreset::Support.permissions(),
                "operator manager (support)",
            )?;
            add_user(
                &north,
                UserKind::Reseller,
                "owner@northwind.example",
                "Nora Northwind",
                PermSet::default(),
                "reseller Northwind",
            )?;
            add_user(
                &north,
                UserKind::Manager,
                "collector@northwind.example",
                "Cole Collector",
                RolePreset::Collector.permissions(),
                "Northwind manager (collector)",
            )?;
            add_user(
                &lake,
                UserKind::Reseller,
                "owner@lakeside.example",
                "Lena Lakeside",
                PermSet::default(),
                "reseller Lakeside",
            )?;
            add_user(
                &lake,
                UserKind::Manager,
                "viewer@lakeside.example",
                "Rita Readonly",
                RolePreset::ReadOnly.permissions(),
                "Lakeside manager (read-only)",
            )?;
            add_user(
                &hill,
                UserKind::Reseller,
                "owner@hilltop.example",
                "Hank Hilltop",
                PermSet::default(),
                "sub-reseller Hilltop",
            )?;

            let mut sites = Vec::new();
            for (owner, name, loc) in [
                (&root, "Central POP", "Data centre rack 4"),
                (&root, "Ridge Tower", "Ridge Rd water tower"),
                (&north, "Northwind Mast", "Farm silo, Route 9"),
                (&lake, "Lakeside Cabinet", "Street cabinet LS-12"),
            ] {
                let s = site::create(
                    tx,
                    owner,
                    &NewSite {
                        name: name.into(),
                        tenant_id: None,
                        location: loc.into(),
                        notes: String::new(),
                    },
                )?;
                audit::record(
                    tx,
                    &Entry::new(&who, owner.id, "site.create", "site", s.id).after(&s),
                )?;
                sites.push((owner.id, s.id));
            }
            for (i, (owner_id, site_id)) in sites.iter().enumerate() {
                let owner = tenant::get(tx, *owner_id)?.expect("exists");
                let kind = if i % 2 == 0 {
                    NasKind::Mikrotik
                } else {
                    NasKind::AccelPpp
                };
                let n = nas::create(
                    tx,
                    &owner,
                    &NewNas {
                        name: format!("bng-{}", i + 1),
                        site_id: *site_id,
                        ip: format!("10.255.0.{}", i + 1)
                            .parse()
                            .expect("static address"),
                        secret: crate::crypto::new_password(),
                        kind,
                        coa_port: Some(3799),
                        require_message_authenticator: Some(true),
                        tenant_id: None,
                    },
                    &secrets,
                )?;
                audit::record(
                    tx,
                    &Entry::new(&who, owner.id, "nas.create", "nas", n.id).after(&n),
                )?;
            }

            let first = [
                "amina", "bruno", "chen", "dara", "emeka", "farah", "goran", "hana", "ivan",
                "jade", "kofi", "lucia",
            ];
            let last = [
                "okafor", "silva", "wang", "murphy", "nguyen", "haddad", "petrov", "sato",
                "mensah", "garcia",
            ];
            let mut rng = rand::thread_rng();
            let owners = [(&root, 0usize), (&north, 2), (&lake, 3), (&hill, 1)];
            for i in 0..200 {
                let (owner, site_idx) = owners[i % owners.len()];
                let f = first.choose(&mut rng).expect("non-empty");
                let l = last.choose(&mut rng).expect("non-empty");
                let status = match rng.gen_range(0..20) {
                    0 => SubscriberStatus::Suspended,
                    1 => SubscriberStatus::Disabled,
                    _ => SubscriberStatus::Active,
                };
                let expires = crate::db::now() + rng.gen_range(-5..60) * 86_400;
                let s = subscriber::create(
                    tx,
                    owner,
                    &NewSubscriber {
                        username: format!("{f}.{l}{i:03}"),
                        password: crate::crypto::new_password()[..10].to_string(),
                        tenant_id: None,
                        site_id: Some(sites[site_idx].1),
                        status: Some(status),
                        expires_at: Some(crate::db::rfc3339(expires)),
                        plan_id: Some(plan_of(owner.id, i / 4)),
                        auto_renew: i % 3 == 0,
                        max_sessions: None,
                        static_ipv4: (i % 10 == 0)
                            .then(|| format!("100.64.{}.{}", i / 250, i % 250 + 2)),
                        mac: None,
                        name: format!("{} {}", capitalize(f), capitalize(l)),
                        phone: format!("+1 555 01{i:02}"),
                        email: format!("{f}.{l}{i}@mail.example"),
                        notes: String::new(),
                    },
                    &secrets,
                )?;
                audit::record(
                    tx,
                    &Entry::new(&who, owner.id, "subscriber.create", "subscriber", s.sub.id)
                        .after(&json!({"username": s.sub.username, "demo": true})),
                )?;
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("demo seed failed: {}", e.message))?;
    Ok(Some(logins))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Verifies the audit chain of the database in `data_dir`.
pub fn verify_audit(data_dir: &Path) -> anyhow::Result<audit::Verdict> {
    let conn = crate::db::open_read_only(&data_dir.join("controller.db"))?;
    Ok(audit::verify(&conn)?)
}

/// One pass of the expiry sweep: every active subscriber past its expiry is renewed
/// automatically (if it opted in and the balance allows) or marked expired. Each
/// subscriber is its own transaction.
pub async fn sweep_expired(
    state: &AppState,
) -> Result<Vec<(i64, crate::billing::Swept)>, crate::error::ApiError> {
    let now = crate::db::now();
    let mut out = Vec::new();
    loop {
        let due = state
            .db
            .read(move |c| crate::billing::due(c, now, 500))
            .await?;
        if due.is_empty() {
            return Ok(out);
        }
        let batch = due.len();
        for id in due {
            let cur = state.currency.clone();
            let swept = state
                .db
                .write(move |tx| crate::billing::sweep_one(tx, &system(), id, now, &cur))
                .await?;
            tracing::info!(subscriber = id, outcome = ?swept, "expiry sweep");
            out.push((id, swept));
        }
        if batch < 500 {
            return Ok(out);
        }
    }
}

/// Runs [`sweep_expired`] every `billing.sweep_interval_secs`, for as long as the server runs.
pub async fn sweep_loop(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(
        state.config.billing.sweep_interval_secs,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_expired(&state).await {
            tracing::error!(error = %e, "expiry sweep failed; retrying next interval");
        }
    }
}

/// One retention pass: each kind pruned in chunks, each chunk its own short write, until
/// a chunk comes back short.
pub async fn sweep_retention(
    state: &AppState,
) -> crate::error::ApiResult<crate::db::retention::Pruned> {
    use crate::db::retention::{self, CHUNK, Pruned};
    /// Runs one pruning statement until a chunk comes back short; the total removed.
    async fn drain(
        state: &AppState,
        prune: impl Fn(&rusqlite::Connection) -> crate::error::ApiResult<usize> + Clone + Send + 'static,
    ) -> crate::error::ApiResult<usize> {
        let mut total = 0;
        loop {
            let prune = prune.clone();
            let n = state.db.write(move |tx| prune(tx)).await?;
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }
    let cfg = state.config.retention.clone();
    let c = cfg.clone();
    let auth = state.config.auth.clone();
    Ok(Pruned {
        idempotency: drain(state, move |tx| {
            retention::idempotency(tx, crate::db::now(), &c)
        })
        .await?,
        agent_events: drain(state, move |tx| {
            retention::agent_events(tx, crate::db::now(), &cfg)
        })
        .await?,
        feed: drain(state, retention::feed).await?,
        logins: drain(state, move |tx| {
            crate::db::throttle::prune(tx, &auth, crate::db::now(), CHUNK)
        })
        .await?,
    })
}

/// Runs [`sweep_retention`] every `retention.sweep_interval_secs`.
pub async fn retention_loop(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(
        state.config.retention.sweep_interval_secs,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep_retention(&state).await {
            Ok(p) if p != Default::default() => tracing::info!(
                idempotency = p.idempotency,
                agent_events = p.agent_events,
                feed = p.feed,
                "retention sweep pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention sweep failed; retrying next interval"),
        }
    }
}

/// Checks the ledger of the database in `data_dir`: every chain of `balance_after` and
/// every balance against the sum of its ledger.
pub fn verify_ledger(data_dir: &Path) -> anyhow::Result<(u64, Vec<crate::db::ledger::Problem>)> {
    let conn = crate::db::open_read_only(&data_dir.join("controller.db"))?;
    Ok(crate::db::ledger::verify(&conn)?)
}
