//! One reseller's subtree out ([`export`]) and back in ([`restore`]).
//!
//! **What goes in.** The subtree's tenants (with their brand, limits and balances), users
//! (password hashes; no sessions or API tokens: people log in again), sites, NAS (the
//! RADIUS secret opened and carried in clear inside the encrypted archive, sealed again
//! with the target's key, so an archive moves between installations), plans, rate cards
//! assigned to the subtree, subscribers (PPP passwords likewise), the ledger with its
//! operations, renewals, the daily status counts, and the audit entries the subtree's
//! tenants own. Not: agents and enrolment tokens (a restored site enrols again), online
//! sessions, usage and WAN-check state (the agents report them again).
//!
//! **Where it comes back.** To the reseller named in the archive when this installation
//! has it (same id and creation time): rows still there are compared and brought back to
//! the archive's values, missing ones inserted. Otherwise as a new reseller under its
//! owner (the archive's parent, or the one the caller names). A row keeps its id when the
//! id is free and gets a new one where it would collide; references follow.
//!
//! **Money and the chains.** The ledger is append-only and each (tenant, account) chain
//! of `balance_after` must sum from zero to the balance. So ledger rows (and renewals and
//! their operations) are written only for tenants this restore creates, under new ids in
//! the archive's order, with the tenant's archived balance: that chain verifies as it
//! did. Into a tenant that exists, money is never replayed: its live ledger is the truth
//! (rows can never have left it), archived rows it lacks are counted as skipped.
//!
//! The audit log is one chain over the whole installation, so an exported subtree's
//! entries are not a run of it: they cannot rejoin it with their hashes, and rewriting
//! them as new entries would date and sign them as now. They are kept as they were, with
//! their ids and hashes, in `restored_audit` (append-only), one segment per restore:
//! each entry's hash still recomputes from its fields and its `prev_hash`, and the
//! segment's digest (SHA-256 over its hashes in order) is in the live chain's
//! `reseller.restore` entry, so a changed, removed or added segment row is caught
//! ([`verify_segments`], run by `outpost-controller audit verify`). Entries the live
//! chain already holds (same id and hash: a restore into the same installation) are not
//! copied.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::archive::{Body, FORMAT, Manifest, Root, Table};
use crate::crypto::SecretBox;
use crate::db::audit::{Entry, Who};
use crate::db::tenant::{self, Tenant};
use crate::error::{Error, Result};
use crate::scope::{Actor, OPERATOR_TENANT, Scope};

/// The exported tables, in the order a restore writes them (references first), with the
/// query that selects the subtree's rows (`?1` is the root's path followed by `*`).
const TABLES: &[(&str, &str)] = &[
    ("tenants", "SELECT * FROM tenants WHERE path GLOB ?1 ORDER BY depth, id"),
    ("users", "SELECT * FROM users WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("sites", "SELECT * FROM sites WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("plans", "SELECT * FROM plans WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("rate_cards", "SELECT * FROM rate_cards WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY tenant_id, plan_id"),
    ("nas", "SELECT * FROM nas WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("subscribers", "SELECT * FROM subscribers WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("operations", "SELECT * FROM operations WHERE id IN (
        SELECT operation_id FROM ledger WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1)
        UNION SELECT operation_id FROM renewals WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1)) ORDER BY id"),
    ("ledger", "SELECT * FROM ledger WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("renewals", "SELECT * FROM renewals WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
    ("subscriber_status_days", "SELECT * FROM subscriber_status_days WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY day, tenant_id, status"),
    ("audit_log", "SELECT * FROM audit_log WHERE tenant_id IN (SELECT id FROM tenants WHERE path GLOB ?1) ORDER BY id"),
];

/// Sealed columns, carried opened under the second name.
const SEALED: &[(&str, &str, &str)] = &[
    ("nas", "secret_sealed", "secret"),
    ("subscribers", "password_sealed", "password"),
];

fn to_json(v: Sql) -> Value {
    match v {
        Sql::Null => Value::Null,
        Sql::Integer(i) => Value::from(i),
        Sql::Real(f) => Value::from(f),
        Sql::Text(s) => Value::String(s),
        // No exported column but the sealed ones holds a blob; those are opened.
        Sql::Blob(b) => Value::String(hex::encode(b)),
    }
}

fn to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(*b as i64),
        Value::Number(n) => n
            .as_i64()
            .map(Sql::Integer)
            .unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// The tenant `id` and its subtree as an archive body, read in one read transaction.
/// `scope` (None: the CLI, everything) must cover the whole subtree: a reseller exports
/// its own tenant or one below it; a manager, whose rows are only its tenant's, none.
pub fn export(
    conn: &Connection,
    scope: Option<&Scope>,
    id: i64,
    secrets: &SecretBox,
    signer: &str,
) -> Result<Body> {
    // One snapshot for every table (the CLI calls this inside its own transaction).
    let _snapshot = match conn.is_autocommit() {
        true => Some(conn.unchecked_transaction()?),
        false => None,
    };
    let tx = conn;
    let t = tenant::get(tx, id)?.ok_or_else(|| Error::not_found("reseller"))?;
    if t.id == OPERATOR_TENANT {
        return Err(Error::bad_request(
            "export_operator",
            "the operator's tenant is the whole installation: use `outpost-controller backup`",
        ));
    }
    if let Some(s) = scope {
        match s {
            Scope::Subtree { .. } if s.narrowed_to(t.id, &t.path).is_some() => {}
            Scope::Subtree { .. } => return Err(Error::not_found("reseller")),
            Scope::Direct { .. } => {
                return Err(Error::forbidden(
                    "permission_denied",
                    "exporting a subtree needs a reseller or operator login: a manager sees only its tenant's own rows",
                ));
            }
        }
    }
    let glob = format!("{}*", t.path);
    let mut tables = BTreeMap::new();
    for (name, sql) in TABLES {
        let mut stmt = tx.prepare(sql)?;
        let mut columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let sealed: Vec<usize> = SEALED
            .iter()
            .filter(|s| s.0 == *name)
            .filter_map(|s| {
                let i = columns.iter().position(|c| c == s.1)?;
                columns[i] = s.2.to_string();
                Some(i)
            })
            .collect();
        let n = columns.len();
        let mut rows = Vec::new();
        let mut q = stmt.query([&glob])?;
        while let Some(r) = q.next()? {
            let mut row = Vec::with_capacity(n);
            for (i, column) in columns.iter().enumerate() {
                let v: Sql = r.get(i)?;
                if sealed.contains(&i) {
                    let Sql::Blob(b) = v else {
                        return Err(Error::internal(&std::io::Error::other(format!(
                            "{name}.{column} is not a sealed blob"
                        ))));
                    };
                    let plain = secrets.open(&b).map_err(|e| Error::internal(&e))?;
                    row.push(Value::String(plain));
                } else {
                    row.push(to_json(v));
                }
            }
            rows.push(row);
        }
        tables.insert(name.to_string(), Table { columns, rows });
    }
    let created_at = tx.query_row(
        "SELECT created_at FROM tenants WHERE id = ?1",
        [t.id],
        |r| r.get(0),
    )?;
    Ok(Body {
        manifest: Manifest {
            format: FORMAT.into(),
            schema_version: crate::db::schema_version() as i64,
            exported_at: crate::db::now(),
            root: Root {
                id: t.id,
                parent_id: t.parent_id,
                name: t.name.clone(),
                created_at,
            },
            signer: signer.into(),
            tables: tables.iter().map(|(k, v)| (k.clone(), v.sum())).collect(),
        },
        tables,
    })
}

/// Records that `who` exported reseller `id` (the archive holds secrets in clear,
/// under encryption: who took one is worth knowing).
pub fn record_export(conn: &Connection, who: &Who, id: i64, m: &Manifest) -> Result<()> {
    let rows: BTreeMap<&String, u64> = m.tables.iter().map(|(k, v)| (k, v.rows)).collect();
    Entry::new(who, id, "reseller.export", "reseller", id)
        .after(&serde_json::json!({ "rows": rows, "signer": m.signer }))
        .record(conn)?;
    Ok(())
}

/// How a restore is asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Report what would change and write nothing.
    pub dry_run: bool,
    /// Where a reseller this installation lacks goes; default the archive's parent.
    pub parent_id: Option<i64>,
    /// The tree's depth limit (`[tree] max_depth`).
    pub max_depth: u32,
}

/// What a restore changed, or would change, per table.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct TableChanges {
    /// Rows written that were not there (under their own id or a new one).
    pub inserted: u64,
    /// Of those, rows whose id was taken and that got a new one.
    pub new_ids: u64,
    /// Rows there that differed and were brought back to the archive's values.
    pub updated: u64,
    pub unchanged: u64,
    /// Rows not written: money into a ledger that exists, or audit entries the live
    /// chain already holds.
    pub skipped: u64,
}

/// The answer to a restore or its dry run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestoreReport {
    pub dry_run: bool,
    /// Whether anything was written (false for a dry run or a refused restore).
    pub applied: bool,
    /// `existing`: into the reseller the archive names; `new`: as a new reseller.
    pub mode: String,
    /// The reseller restored into (for a dry run of `new`: the id it would get).
    pub tenant_id: i64,
    /// Its parent.
    pub parent_id: Option<i64>,
    pub tables: BTreeMap<String, TableChanges>,
    /// Audit entries kept as this restore's segment in `restored_audit`.
    pub audit_segment_rows: u64,
    /// Rows that cannot be restored as they are (a name or address taken, a reference to
    /// nothing here). A restore with any writes nothing.
    pub conflicts: Vec<String>,
    pub notes: Vec<String>,
}

/// References between exported tables, each mapped through what the restore wrote.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Tenant,
    User,
    Site,
    Plan,
    Subscriber,
    Operation,
}

impl Kind {
    fn of(table: &str) -> Option<Kind> {
        Some(match table {
            "tenants" => Kind::Tenant,
            "users" => Kind::User,
            "sites" => Kind::Site,
            "plans" => Kind::Plan,
            "subscribers" => Kind::Subscriber,
            "operations" => Kind::Operation,
            _ => return None,
        })
    }
    fn table(self) -> &'static str {
        match self {
            Kind::Tenant => "tenants",
            Kind::User => "users",
            Kind::Site => "sites",
            Kind::Plan => "plans",
            Kind::Subscriber => "subscribers",
            Kind::Operation => "operations",
        }
    }
}

/// When a reference points outside the archive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outside {
    /// Keep it if it names a row owned by the target's owner or above (a plan on the
    /// rate card, the parent's site), else refuse the row.
    KeepAboveOrRefuse,
    /// Keep it if owned above, else null (a ledger row's subscriber, counterparty).
    KeepAboveOrNull,
    /// Not a foreign key (an actor's user id in a record): kept as it was.
    Raw,
    /// Null.
    Null,
}

fn refs(table: &str) -> &'static [(&'static str, Kind, Outside)] {
    use Kind::*;
    use Outside::*;
    match table {
        "users" => &[
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("created_by", User, Null),
        ],
        "sites" | "subscriber_status_days" => &[("tenant_id", Tenant, KeepAboveOrRefuse)],
        "plans" => &[
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("parent_plan_id", Plan, KeepAboveOrRefuse),
        ],
        "rate_cards" => &[
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("plan_id", Plan, KeepAboveOrRefuse),
        ],
        "nas" => &[
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("site_id", Site, KeepAboveOrRefuse),
        ],
        "subscribers" => &[
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("site_id", Site, KeepAboveOrRefuse),
            ("plan_id", Plan, KeepAboveOrRefuse),
        ],
        "operations" => &[("actor_user_id", User, Raw)],
        "ledger" => &[
            ("operation_id", Operation, KeepAboveOrRefuse),
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("subscriber_id", Subscriber, KeepAboveOrNull),
            ("plan_id", Plan, KeepAboveOrNull),
            ("counterparty_tenant_id", Tenant, KeepAboveOrNull),
            ("actor_user_id", User, Raw),
        ],
        "renewals" => &[
            ("operation_id", Operation, KeepAboveOrRefuse),
            ("subscriber_id", Subscriber, KeepAboveOrRefuse),
            ("tenant_id", Tenant, KeepAboveOrRefuse),
            ("plan_id", Plan, KeepAboveOrRefuse),
        ],
        _ => &[],
    }
}

/// Columns never brought back onto a row that exists.
fn kept_on_update(table: &str) -> &'static [&'static str] {
    match table {
        // The tree's shape, and money: a balance moves only with its ledger.
        "tenants" => &["id", "parent_id", "path", "depth", "balance", "created_at"],
        // An old password would come back with the row: people keep their current one.
        "users" => &["id", "password_hash", "created_at"],
        _ => &["id", "created_at"],
    }
}

struct Restorer<'a> {
    tx: &'a Connection,
    secrets: &'a SecretBox,
    /// old id → id here, per kind.
    map: HashMap<Kind, HashMap<i64, i64>>,
    /// Tenants this restore creates: only they get ledger rows.
    new_tenants: HashSet<i64>,
    /// The owner's path: rows owned by it or above may be referred to from outside.
    owner_path: String,
    report: RestoreReport,
    /// Archived operations by id, written when a ledger or renewal row needs one.
    operations: HashMap<i64, Vec<Value>>,
    op_columns: Vec<String>,
}

impl Restorer<'_> {
    fn changes(&mut self, table: &str) -> &mut TableChanges {
        self.report.tables.entry(table.to_string()).or_default()
    }

    fn owned_above(&self, kind: Kind, id: i64) -> Result<bool> {
        let sql = match kind {
            Kind::Tenant => "SELECT path FROM tenants WHERE id = ?1".to_string(),
            Kind::User | Kind::Operation | Kind::Subscriber => return Ok(false),
            k => format!(
                "SELECT t.path FROM {} x JOIN tenants t ON t.id = x.tenant_id WHERE x.id = ?1",
                k.table()
            ),
        };
        let path: Option<String> = self.tx.query_row(&sql, [id], |r| r.get(0)).optional()?;
        Ok(path.is_some_and(|p| self.owner_path.starts_with(&p)))
    }

    /// Maps a row's references; `Err(message)` when one cannot be kept.
    fn map_refs(
        &self,
        table: &str,
        t: &Table,
        row: &mut [Value],
    ) -> Result<std::result::Result<(), String>> {
        for (col, kind, outside) in refs(table) {
            let Some(i) = t.col(col) else { continue };
            let Some(old) = row[i].as_i64() else { continue };
            if let Some(new) = self.map.get(kind).and_then(|m| m.get(&old)) {
                row[i] = Value::from(*new);
                continue;
            }
            match outside {
                Outside::Raw => {}
                Outside::Null => row[i] = Value::Null,
                Outside::KeepAboveOrNull => {
                    if !self.owned_above(*kind, old)? {
                        row[i] = Value::Null;
                    }
                }
                Outside::KeepAboveOrRefuse => {
                    if !self.owned_above(*kind, old)? {
                        return Ok(Err(format!(
                            "its {col} is {} {old}, which is neither in the archive nor held by the \
                             reseller it goes under or above",
                            kind.table()
                        )));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    fn live_row(&self, table: &str, cols: &[String], id: i64) -> Result<Option<Vec<Sql>>> {
        let sql = format!(
            "SELECT {} FROM {table} WHERE id = ?1",
            cols.iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let n = cols.len();
        Ok(self
            .tx
            .query_row(&sql, [id], |r| (0..n).map(|i| r.get::<_, Sql>(i)).collect())
            .optional()?)
    }

    /// The archive's columns as stored here (sealed ones by their stored name), and the
    /// values to store (sealing what the archive carries opened).
    fn stored(&self, table: &str, t: &Table, row: &[Value]) -> (Vec<String>, Vec<Sql>) {
        let mut cols = Vec::with_capacity(row.len());
        let mut vals = Vec::with_capacity(row.len());
        for (c, v) in t.columns.iter().zip(row) {
            if let Some(s) = SEALED.iter().find(|s| s.0 == table && s.2 == c) {
                cols.push(s.1.to_string());
                vals.push(Sql::Blob(self.secrets.seal(v.as_str().unwrap_or(""))));
            } else {
                cols.push(c.clone());
                vals.push(to_sql(v));
            }
        }
        (cols, vals)
    }

    fn insert(&self, table: &str, cols: &[String], vals: &[Sql]) -> rusqlite::Result<i64> {
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            cols.iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.tx
            .prepare_cached(&sql)?
            .execute(params_from_iter(vals))?;
        Ok(self.tx.last_insert_rowid())
    }

    fn id_free(&self, table: &str, id: i64) -> Result<bool> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT 1 FROM {table} WHERE id = ?1"),
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_none())
    }

    fn conflict(&mut self, table: &str, old: Option<i64>, what: String) {
        self.report.conflicts.push(match old {
            Some(id) => format!("{table} {id}: {what}"),
            None => format!("{table}: {what}"),
        });
    }

    /// Tenants: shallowest first, each under its mapped parent.
    fn tenants(
        &mut self,
        t: &Table,
        root: &Root,
        target: &Target,
        actor: Option<&Actor>,
        max_depth: u32,
    ) -> Result<()> {
        let (ci, cp) = (t.col("id").unwrap_or(0), t.col("parent_id").unwrap_or(1));
        let ccreated = t.col("created_at");
        for row in &t.rows {
            let mut row = row.clone();
            let old = row[ci].as_i64().unwrap_or_default();
            let is_root = old == root.id;
            let parent_new = if is_root {
                target.parent.id
            } else {
                match row[cp]
                    .as_i64()
                    .and_then(|p| self.map[&Kind::Tenant].get(&p).copied())
                {
                    Some(p) => p,
                    None => {
                        self.conflict(
                            "tenants",
                            Some(old),
                            "its parent is not in the archive".into(),
                        );
                        continue;
                    }
                }
            };
            row[cp] = Value::from(parent_new);
            let created = ccreated.and_then(|c| row[c].as_i64());
            // The same tenant: same id, creation time and (mapped) parent.
            let existing = tenant::get(self.tx, old)?.filter(|live| {
                live.parent_id == Some(parent_new)
                    && self
                        .tx
                        .query_row("SELECT created_at FROM tenants WHERE id = ?1", [old], |r| {
                            r.get::<_, i64>(0)
                        })
                        .ok()
                        == created
            });
            if let Some(live) = existing {
                self.map.get_mut(&Kind::Tenant).unwrap().insert(old, old);
                // Your own tenant's record (limits, features, credit) is your parent's to change.
                let may_edit = match actor {
                    None => true,
                    Some(a) => tenant::get_managed(self.tx, &a.scope(), live.id).is_ok(),
                };
                if !may_edit {
                    self.changes("tenants").skipped += 1;
                    self.report.notes.push(format!(
                        "tenant {}'s own record was left as it is: only its parent changes it",
                        live.id
                    ));
                    continue;
                }
                self.update_if_changed("tenants", t, &row, old)?;
                continue;
            }
            let parent =
                tenant::get(self.tx, parent_new)?.ok_or_else(|| Error::not_found("reseller"))?;
            if parent.depth + 1 > max_depth as i64 {
                self.conflict(
                    "tenants",
                    Some(old),
                    format!(
                        "it would be {} levels below the operator; the limit is {max_depth}",
                        parent.depth + 1
                    ),
                );
                continue;
            }
            let id = if self.id_free("tenants", old)? {
                old
            } else {
                self.tx
                    .query_row("SELECT max(id) + 1 FROM tenants", [], |r| r.get(0))?
            };
            let (mut cols, mut vals) = self.stored("tenants", t, &row);
            for (c, v) in cols.iter().zip(vals.iter_mut()) {
                match c.as_str() {
                    "id" => *v = Sql::Integer(id),
                    "path" => *v = Sql::Text(format!("{}{id}/", parent.path)),
                    "depth" => *v = Sql::Integer(parent.depth + 1),
                    _ => {}
                }
            }
            match self.insert("tenants", &cols, &vals) {
                Ok(_) => {
                    self.map.get_mut(&Kind::Tenant).unwrap().insert(old, id);
                    self.new_tenants.insert(id);
                    let ch = self.changes("tenants");
                    ch.inserted += 1;
                    if id != old {
                        ch.new_ids += 1;
                    }
                }
                Err(e) => {
                    cols.clear();
                    self.conflict("tenants", Some(old), e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Brings a live row (same id) back to the archive's values when they differ.
    fn update_if_changed(&mut self, table: &str, t: &Table, row: &[Value], id: i64) -> Result<()> {
        let keep = kept_on_update(table);
        let (cols, vals) = self.stored(table, t, row);
        let mut set_cols = Vec::new();
        let mut set_vals = Vec::new();
        let live = self.live_row(table, &cols, id)?.unwrap_or_default();
        for (i, c) in cols.iter().enumerate() {
            if keep.contains(&c.as_str()) {
                continue;
            }
            let differs = match (&vals[i], live.get(i)) {
                // Sealed values differ every time they are sealed: compare them opened.
                (Sql::Blob(_), Some(Sql::Blob(l))) => {
                    let plain = &row[i];
                    self.secrets.open(l).ok().as_deref() != plain.as_str()
                }
                (v, l) => Some(v) != l,
            };
            if differs {
                set_cols.push(c.clone());
                set_vals.push(vals[i].clone());
            }
        }
        if set_cols.is_empty() {
            self.changes(table).unchanged += 1;
            return Ok(());
        }
        let sql = format!(
            "UPDATE {table} SET {} WHERE id = ?{}",
            set_cols
                .iter()
                .enumerate()
                .map(|(i, c)| format!("\"{c}\" = ?{}", i + 1))
                .collect::<Vec<_>>()
                .join(", "),
            set_cols.len() + 1
        );
        set_vals.push(Sql::Integer(id));
        match self.tx.execute(&sql, params_from_iter(&set_vals)) {
            Ok(_) => self.changes(table).updated += 1,
            Err(e) => self.conflict(table, Some(id), e.to_string()),
        }
        Ok(())
    }

    /// Rows with an `id` that can change: same row → compare; else insert, under the
    /// archived id when free.
    fn mutable(&mut self, table: &str, t: &Table) -> Result<()> {
        let kind = Kind::of(table);
        let ci = t.col("id").unwrap_or(0);
        let ct = t.col("tenant_id");
        for row in &t.rows {
            let mut row = row.clone();
            let old = row[ci].as_i64().unwrap_or_default();
            if let Err(why) = self.map_refs(table, t, &mut row)? {
                self.conflict(table, Some(old), why);
                continue;
            }
            let owner = ct.and_then(|c| row[c].as_i64());
            let same: Option<i64> = self
                .tx
                .query_row(
                    &format!("SELECT tenant_id FROM {table} WHERE id = ?1"),
                    [old],
                    |r| r.get(0),
                )
                .optional()?;
            if same.is_some()
                && same == owner
                && !owner.is_some_and(|o| self.new_tenants.contains(&o))
            {
                if let Some(k) = kind {
                    self.map.entry(k).or_default().insert(old, old);
                }
                self.update_if_changed(table, t, &row, old)?;
                continue;
            }
            let keep_id = same.is_none();
            if !keep_id {
                row[ci] = Value::Null;
            }
            let (cols, vals) = self.stored(table, t, &row);
            match self.insert(table, &cols, &vals) {
                Ok(new) => {
                    if let Some(k) = kind {
                        self.map.entry(k).or_default().insert(old, new);
                    }
                    let ch = self.changes(table);
                    ch.inserted += 1;
                    if !keep_id {
                        ch.new_ids += 1;
                    }
                }
                Err(e) => self.conflict(table, Some(old), e.to_string()),
            }
        }
        Ok(())
    }

    /// Rate cards and daily counts: keyed by their columns, not an id.
    fn keyed(&mut self, table: &str, t: &Table, key: &[&str]) -> Result<()> {
        for row in &t.rows {
            let mut row = row.clone();
            if let Err(why) = self.map_refs(table, t, &mut row)? {
                self.conflict(table, None, why);
                continue;
            }
            let (cols, vals) = self.stored(table, t, &row);
            let pred: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\" = ?{}", i + 1))
                .collect();
            let kv: Vec<Sql> = key
                .iter()
                .map(|k| vals[cols.iter().position(|c| c == k).unwrap_or(0)].clone())
                .collect();
            let live: Option<Vec<Sql>> = {
                let sql = format!(
                    "SELECT {} FROM {table} WHERE {}",
                    cols.iter()
                        .map(|c| format!("\"{c}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    pred.join(" AND ")
                );
                let n = cols.len();
                self.tx
                    .query_row(&sql, params_from_iter(&kv), |r| {
                        (0..n).map(|i| r.get::<_, Sql>(i)).collect()
                    })
                    .optional()?
            };
            match live {
                Some(l) if l == vals => self.changes(table).unchanged += 1,
                Some(_) => {
                    let sets: Vec<String> = cols
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| !key.contains(&c.as_str()))
                        .map(|(i, c)| format!("\"{c}\" = ?{}", i + 1))
                        .collect();
                    let sql = format!(
                        "UPDATE {table} SET {} WHERE {}",
                        sets.join(", "),
                        key.iter()
                            .map(|k| format!(
                                "\"{k}\" = ?{}",
                                cols.iter().position(|c| c == k).unwrap_or(0) + 1
                            ))
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    );
                    match self.tx.execute(&sql, params_from_iter(&vals)) {
                        Ok(_) => self.changes(table).updated += 1,
                        Err(e) => self.conflict(table, None, e.to_string()),
                    }
                }
                None => match self.insert(table, &cols, &vals) {
                    Ok(_) => self.changes(table).inserted += 1,
                    Err(e) => self.conflict(table, None, e.to_string()),
                },
            }
        }
        Ok(())
    }

    /// Ledger and renewals: written only for tenants this restore created, always under
    /// new ids in the archive's order (so each chain keeps its order); their operations
    /// are written the first time one needs it.
    fn money(&mut self, table: &str, t: &Table) -> Result<()> {
        let ci = t.col("id").unwrap_or(0);
        let ct = t.col("tenant_id");
        let co = t.col("operation_id");
        for row in &t.rows {
            let mut row = row.clone();
            let old = row[ci].as_i64().unwrap_or_default();
            let tenant_old = ct.and_then(|c| row[c].as_i64()).unwrap_or_default();
            let tenant_new = self.map[&Kind::Tenant].get(&tenant_old).copied();
            if !tenant_new.is_some_and(|n| self.new_tenants.contains(&n)) {
                self.changes(table).skipped += 1;
                continue;
            }
            if let Some(op) = co.and_then(|c| row[c].as_i64())
                && !self
                    .map
                    .get(&Kind::Operation)
                    .is_some_and(|m| m.contains_key(&op))
            {
                let Some(mut orow) = self.operations.get(&op).cloned() else {
                    self.conflict(
                        table,
                        Some(old),
                        format!("its operation {op} is not in the archive"),
                    );
                    continue;
                };
                let ot = Table {
                    columns: self.op_columns.clone(),
                    rows: vec![],
                };
                let oi = ot.col("id").unwrap_or(0);
                orow[oi] = Value::Null;
                let _ = self.map_refs("operations", &ot, &mut orow)?;
                let (cols, vals) = self.stored("operations", &ot, &orow);
                let new = self.insert("operations", &cols, &vals)?;
                self.map.entry(Kind::Operation).or_default().insert(op, new);
                let ch = self.changes("operations");
                ch.inserted += 1;
                ch.new_ids += 1;
            }
            if let Err(why) = self.map_refs(table, t, &mut row)? {
                self.conflict(table, Some(old), why);
                continue;
            }
            row[ci] = Value::Null;
            let (cols, vals) = self.stored(table, t, &row);
            match self.insert(table, &cols, &vals) {
                Ok(_) => {
                    let ch = self.changes(table);
                    ch.inserted += 1;
                    ch.new_ids += 1;
                }
                Err(e) => self.conflict(table, Some(old), e.to_string()),
            }
        }
        Ok(())
    }
}

/// Where a restore goes.
struct Target {
    existing: Option<Tenant>,
    parent: Tenant,
}

/// Restores `body` (opened and checked: see [`super::archive`]). `actor` None is the
/// CLI (the system, everything); an actor restores only into its own subtree: into the
/// archive's reseller when it is its own tenant or below it, or as a new reseller under
/// a tenant it may create resellers under. Writes nothing on a dry run or on any
/// conflict (the report lists them); otherwise writes the rows, the audit segment and
/// one `reseller.restore` entry in the live chain, in the caller's transaction.
pub fn restore(
    tx: &Connection,
    actor: Option<&Actor>,
    who: &Who,
    body: &Body,
    archive_sha256: &str,
    secrets: &SecretBox,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let root = &body.manifest.root;
    let existing = tenant::get(tx, root.id)?.filter(|t| {
        t.id != OPERATOR_TENANT
            && tx
                .query_row(
                    "SELECT created_at FROM tenants WHERE id = ?1",
                    [t.id],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
                == Some(root.created_at)
    });
    let target = match existing {
        Some(t) => {
            if let Some(a) = actor
                && a.scope().narrowed_to(t.id, &t.path).is_none()
            {
                return Err(Error::not_found("reseller"));
            }
            let parent = tenant::get(tx, t.parent_id.unwrap_or(OPERATOR_TENANT))?
                .ok_or_else(|| Error::not_found("reseller"))?;
            Target {
                existing: Some(t),
                parent,
            }
        }
        None => {
            let owner = opts.parent_id.or(root.parent_id);
            let parent = match actor {
                Some(a) => tenant::assignable(tx, a, owner, "reseller.restore")?,
                None => tenant::get(tx, owner.unwrap_or(OPERATOR_TENANT))?.ok_or_else(|| {
                    Error::bad_request(
                        "restore_no_owner",
                        format!(
                            "reseller {} is not here and neither is its parent {:?}: name the parent to restore it under",
                            root.id, owner
                        ),
                    )
                })?,
            };
            Target {
                existing: None,
                parent,
            }
        }
    };
    tx.execute_batch("SAVEPOINT reseller_restore")?;
    let out = apply(tx, actor, who, body, archive_sha256, secrets, opts, &target);
    match out {
        Ok(report) if report.applied => {
            tx.execute_batch("RELEASE reseller_restore")?;
            Ok(report)
        }
        Ok(report) => {
            tx.execute_batch("ROLLBACK TO reseller_restore; RELEASE reseller_restore")?;
            if !opts.dry_run && !report.conflicts.is_empty() {
                let n = report.conflicts.len();
                let first: Vec<&str> = report
                    .conflicts
                    .iter()
                    .take(5)
                    .map(|s| s.as_str())
                    .collect();
                return Err(Error::conflict(
                    "restore_conflict",
                    format!(
                        "the archive cannot be restored as it is ({n} conflict(s), nothing was written; \
                         a dry run lists them all): {}",
                        first.join("; ")
                    ),
                ));
            }
            Ok(report)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO reseller_restore; RELEASE reseller_restore")?;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &Connection,
    actor: Option<&Actor>,
    who: &Who,
    body: &Body,
    archive_sha256: &str,
    secrets: &SecretBox,
    opts: &RestoreOptions,
    target: &Target,
) -> Result<RestoreReport> {
    let root = &body.manifest.root;
    let empty = Table::default();
    let table = |n: &str| body.tables.get(n).unwrap_or(&empty);
    let ops = table("operations");
    let oi = ops.col("id").unwrap_or(0);
    let mut r = Restorer {
        tx,
        secrets,
        map: HashMap::from([(Kind::Tenant, HashMap::new())]),
        new_tenants: HashSet::new(),
        owner_path: target.parent.path.clone(),
        report: RestoreReport {
            dry_run: opts.dry_run,
            applied: false,
            mode: if target.existing.is_some() {
                "existing"
            } else {
                "new"
            }
            .into(),
            tenant_id: 0,
            parent_id: Some(target.parent.id),
            tables: BTreeMap::new(),
            audit_segment_rows: 0,
            conflicts: vec![],
            notes: vec![],
        },
        operations: ops
            .rows
            .iter()
            .filter_map(|row| row[oi].as_i64().map(|id| (id, row.clone())))
            .collect(),
        op_columns: ops.columns.clone(),
    };
    r.tenants(table("tenants"), root, target, actor, opts.max_depth)?;
    let Some(&root_new) = r.map[&Kind::Tenant].get(&root.id) else {
        // The root itself could not be placed: nothing else can be.
        return Ok(r.report);
    };
    r.report.tenant_id = root_new;
    for name in ["users", "sites", "plans", "nas", "subscribers"] {
        r.mutable(name, table(name))?;
    }
    r.keyed("rate_cards", table("rate_cards"), &["tenant_id", "plan_id"])?;
    r.keyed(
        "subscriber_status_days",
        table("subscriber_status_days"),
        &["day", "tenant_id", "status"],
    )?;
    r.money("ledger", table("ledger"))?;
    r.money("renewals", table("renewals"))?;
    if r.map[&Kind::Tenant].len() != table("tenants").rows.len() {
        // A tenant that could not be placed was named in the conflicts already.
    }
    // The audit segment: entries the live chain lacks, as they were.
    let audit = table("audit_log");
    let (ai, ah) = (audit.col("id").unwrap_or(0), audit.col("hash"));
    let mut segment: Vec<&Vec<Value>> = Vec::new();
    for row in &audit.rows {
        let id = row[ai].as_i64().unwrap_or_default();
        let hash = ah.and_then(|c| row[c].as_str()).unwrap_or_default();
        let live: Option<String> = tx
            .query_row("SELECT hash FROM audit_log WHERE id = ?1", [id], |x| {
                x.get(0)
            })
            .optional()?;
        if live.as_deref() == Some(hash) {
            r.changes("audit_log").skipped += 1;
        } else {
            segment.push(row);
        }
    }
    let mut digest = Sha256::new();
    for row in &segment {
        digest.update(
            ah.and_then(|c| row[c].as_str())
                .unwrap_or_default()
                .as_bytes(),
        );
        digest.update([0x1f]);
    }
    let digest = hex::encode(digest.finalize());
    r.report.audit_segment_rows = segment.len() as u64;
    if target.existing.is_none() && r.report.conflicts.is_empty() {
        let money = tx.query_row(
            "SELECT coalesce(sum(balance), 0) FROM tenants WHERE id IN (SELECT value FROM json_each(?1))",
            [serde_json::to_string(&r.new_tenants.iter().collect::<Vec<_>>()).unwrap_or_default()],
            |x| x.get::<_, i64>(0),
        )?;
        r.report.notes.push(format!(
            "the restored resellers' balances (sum {money} minor units) come with their ledgers; \
             the owner's own ledger is not changed"
        ));
    }
    if opts.dry_run || !r.report.conflicts.is_empty() {
        return Ok(r.report);
    }
    let summary = serde_json::json!({
        "archive_sha256": archive_sha256,
        "signer": body.manifest.signer,
        "exported_at": body.manifest.exported_at,
        "source_tenant_id": root.id,
        "mode": r.report.mode,
        "tables": r.report.tables,
        "audit_segment_rows": segment.len(),
        "audit_segment_digest": digest,
    });
    let entry = match actor {
        Some(a) => Entry::by(a, root_new, "reseller.restore", "reseller", root_new),
        None => Entry::new(who, root_new, "reseller.restore", "reseller", root_new),
    };
    let audit_id = entry.after(&summary).record(tx)?;
    tx.execute(
        "INSERT INTO reseller_restores (audit_id, tenant_id, source_tenant_id, signer, archive_sha256,
             segment_rows, segment_digest, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            audit_id,
            root_new,
            root.id,
            body.manifest.signer,
            archive_sha256,
            segment.len() as i64,
            digest,
            crate::db::now()
        ],
    )?;
    let restore_id = tx.last_insert_rowid();
    let mut cols = vec!["restore_id".to_string()];
    cols.extend(audit.columns.iter().cloned());
    for row in segment {
        let mut vals = vec![Sql::Integer(restore_id)];
        vals.extend(row.iter().map(to_sql));
        r.insert("restored_audit", &cols, &vals)?;
    }
    r.report.applied = true;
    Ok(r.report)
}

/// A broken restored segment.
#[derive(Debug)]
pub struct SegmentProblem {
    pub restore_id: i64,
    pub message: String,
}

/// Checks every restore's audit segment: each entry's hash recomputes from its fields
/// and `prev_hash`, and the segment's digest is the one its `reseller.restore` entry in
/// the live chain recorded. Returns the number of entries checked and the problems.
pub fn verify_segments(conn: &Connection) -> rusqlite::Result<(u64, Vec<SegmentProblem>)> {
    let mut problems = Vec::new();
    let mut n = 0u64;
    let mut restores = conn.prepare(
        "SELECT r.id, r.segment_rows, r.segment_digest, a.after FROM reseller_restores r
         LEFT JOIN audit_log a ON a.id = r.audit_id ORDER BY r.id",
    )?;
    let list: Vec<(i64, i64, String, Option<String>)> = restores
        .query_map([], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (rid, rows, digest, after) in list {
        let recorded = after
            .as_deref()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .and_then(|v| v["audit_segment_digest"].as_str().map(String::from));
        if recorded.as_deref() != Some(digest.as_str()) {
            problems.push(SegmentProblem {
                restore_id: rid,
                message: "its digest is not the one its reseller.restore entry recorded".into(),
            });
        }
        let mut stmt = conn.prepare(
            "SELECT id, at, actor_user_id, actor_name, impersonator_id, impersonator_name, tenant_id,
                    action, target_kind, target_id, before, after, ip, user_agent, security, prev_hash, hash
             FROM restored_audit WHERE restore_id = ?1 ORDER BY id",
        )?;
        let mut q = stmt.query([rid])?;
        let mut d = Sha256::new();
        let mut count = 0i64;
        while let Some(x) = q.next()? {
            n += 1;
            count += 1;
            let id: i64 = x.get(0)?;
            let prev: String = x.get(15)?;
            let hash: String = x.get(16)?;
            let fields = crate::db::audit::HashedOwned {
                id,
                at: x.get(1)?,
                actor_user_id: x.get(2)?,
                actor_name: x.get(3)?,
                impersonator_id: x.get(4)?,
                impersonator_name: x.get(5)?,
                tenant_id: x.get(6)?,
                action: x.get(7)?,
                target_kind: x.get(8)?,
                target_id: x.get(9)?,
                before: x.get(10)?,
                after: x.get(11)?,
                ip: x.get(12)?,
                user_agent: x.get(13)?,
                security: x.get(14)?,
            };
            if fields.hash_after(&prev) != hash {
                problems.push(SegmentProblem {
                    restore_id: rid,
                    message: format!("restored entry {id} does not match its hash"),
                });
            }
            d.update(hash.as_bytes());
            d.update([0x1f]);
        }
        if count != rows || hex::encode(d.finalize()) != digest {
            problems.push(SegmentProblem {
                restore_id: rid,
                message: format!(
                    "its {count} entries do not make the recorded segment ({rows} entries, digest {digest})"
                ),
            });
        }
    }
    Ok((n, problems))
}
