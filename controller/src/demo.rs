//! The demo installation: two resellers, a sub-reseller, managers with presets, sites,
//! NAS devices, plans, balances and 200 subscribers, for trying the API by hand.

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::bootstrap::system;
use crate::crypto::new_password;
use crate::db::audit::{self, Entry};
use crate::db::nas::{NasKind, NewNas};
use crate::db::site::NewSite;
use crate::db::subscriber::{NewSubscriber, SubscriberStatus};
use crate::db::tenant::{Limits, NewReseller};
use crate::db::{nas, site, subscriber, tenant, user};
use crate::http::AppState;
use crate::scope::{OPERATOR_TENANT, PermSet, RolePreset, UserKind};

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
                        rebrand_enabled: true,
                        wan_check_enabled: true,
                        limits: Limits {
                            max_subscribers: Some(subs),
                            max_sub_resellers: Some(5),
                            max_managers: Some(10),
                            max_sites: Some(10),
                        },
                        ..NewReseller::named(name, parent)
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
                        validity_months: parent.is_none().then_some(1),
                        ..crate::db::plan::NewPlan::priced(name, parent, down, up, money(price))
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
            let by = |t: &tenant::Tenant| crate::billing::By::within(&who, t);
            for (parent, child, amount) in [
                (&root, &north, 500_000),
                (&root, &lake, 300_000),
                (&north, &hill, 50_000),
            ] {
                crate::billing::add_balance(
                    tx,
                    &by(parent),
                    child,
                    amount,
                    crate::billing::AdjustmentKind::Adjustment,
                    Some("opening balance"),
                    &cur,
                )?;
            }
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
                Ok::<_, crate::error::Error>(())
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
                let expires = crate::db::now() + demo_expiry_days(i, &mut rng) * 86_400;
                let s = subscriber::create(
                    tx,
                    owner,
                    &NewSubscriber {
                        site_id: Some(sites[site_idx].1),
                        status: Some(status),
                        expires_at: Some(crate::db::rfc3339(expires)),
                        plan_id: Some(plan_of(owner.id, i / 4)),
                        auto_renew: i % 3 == 0,
                        static_ipv4: (i % 10 == 0)
                            .then(|| format!("100.64.{}.{}", i / 250, i % 250 + 2)),
                        name: format!("{} {}", capitalize(f), capitalize(l)),
                        phone: format!("+1 555 01{i:02}"),
                        email: format!("{f}.{l}{i}@mail.example"),
                        ..NewSubscriber::named(
                            format!("{f}.{l}{i:03}"),
                            &crate::crypto::new_password()[..10],
                        )
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

/// How many demo subscribers start past their expiry: few, on purpose, so the first
/// expiry sweep has something to show (auto-renewal for those that opted in, `expired`
/// for the others) without a demo that opens on a list of lapsed customers.
pub const DEMO_EXPIRED: usize = 5;

/// Days from now to a demo subscriber's expiry: one day ago for [`DEMO_EXPIRED`] of them,
/// within the coming week for one in ten (the dashboard's "expiring soon"), and 9 to 60
/// days for everyone else (not 8: a full week and a second later would count as "within
/// the week" to a reader whose clock has moved on a second).
fn demo_expiry_days(i: usize, rng: &mut impl Rng) -> i64 {
    if i % 40 == 7 {
        -1
    } else if i % 10 == 3 {
        rng.gen_range(1..=7)
    } else {
        rng.gen_range(9..=60)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
