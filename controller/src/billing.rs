//! Money operations. Each runs inside the caller's one write transaction, writes its
//! ledger rows through [`ledger::post`] (which moves the balance with the row), and
//! leaves one audit entry. If any balance involved would go below its credit limit,
//! the operation fails and the transaction writes nothing at all.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, Month, OffsetDateTime};
use utoipa::ToSchema;

use crate::db::Cached;
use crate::db::audit::{self, Entry, Who};
use crate::db::ledger::{
    self, Account, EntryKind, LedgerEntry, LedgerRow, Operation, PostError, Posting, Shortfall,
};
use crate::db::plan::{self, PlanRow};
use crate::db::subscriber::{Subscriber, SubscriberRow, SubscriberStatus};
use crate::db::tenant::{self, Tenant};
use crate::error::{Error, Result};
use crate::money::{Currency, decimal_str};
use crate::scope::{OPERATOR_TENANT, Scope};
use rusqlite::{Connection, params};

/// Who is moving money: for the audit log, the ledger's actor column, and for deciding
/// which tenants' figures the answer may show.
pub struct By<'a> {
    pub who: &'a Who,
    pub user_id: Option<i64>,
    pub scope: Scope,
    pub idempotency_key: Option<&'a str>,
}

impl<'a> By<'a> {
    /// Money moved by `who` outside any request (seeds, fixtures, benchmarks), seeing
    /// `tenant`'s whole subtree, with no user and no idempotency key.
    pub fn within(who: &'a Who, tenant: &Tenant) -> By<'a> {
        By {
            who,
            user_id: None,
            scope: Scope::Subtree {
                tenant_id: tenant.id,
                path: tenant.path.clone(),
            },
            idempotency_key: None,
        }
    }
}

impl By<'_> {
    /// Whether `t` lies inside the caller's view (its balance may be shown).
    fn sees(&self, t_id: i64, conn: &Connection) -> Result<bool> {
        // The same test that decides where an actor may put rows decides what it sees.
        Ok(tenant::get(conn, t_id)?.is_some_and(|t| self.scope.may_assign_to(t.id, &t.path)))
    }

    fn visible(
        &self,
        conn: &Connection,
        rows: &[LedgerRow],
        cur: &Currency,
    ) -> Result<Vec<LedgerEntry>> {
        let mut out = Vec::new();
        for r in rows {
            if self.sees(r.tenant_id, conn)? {
                out.push(r.view(cur));
            }
        }
        Ok(out)
    }
}

/// Posts, turning a shortfall into the answer the caller may see: whose balance and by
/// how much when that tenant is in its view, only whose when it is a provider above.
fn post(
    conn: &Connection,
    by: &By<'_>,
    op: &Operation,
    p: &Posting<'_>,
    cur: &Currency,
) -> Result<LedgerRow> {
    match ledger::post(conn, op, p) {
        Ok(row) => Ok(row),
        Err(PostError::Api(e)) => Err(e),
        Err(PostError::Insufficient(s)) => Err(shortfall_error(conn, by, &s, cur)?),
    }
}

fn shortfall_error(conn: &Connection, by: &By<'_>, s: &Shortfall, cur: &Currency) -> Result<Error> {
    let msg = if by.sees(s.tenant_id, conn)? {
        format!(
            "'{}' has a balance of {} {} and a credit limit of {}: it cannot pay {}, short by {} {}; nothing was charged",
            s.tenant_name,
            cur.format(s.balance),
            cur.code,
            cur.format(s.credit_limit),
            cur.format(s.debit),
            cur.format(s.short_by),
            cur.code
        )
    } else {
        format!(
            "your provider '{}' does not have the balance to cover its share of this; nothing was charged — contact your provider",
            s.tenant_name
        )
    };
    Ok(Error::conflict("insufficient_balance", msg))
}

/// The result of a balance movement between a parent and a child.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub operation_id: i64,
    /// The rows written that you may see.
    pub entries: Vec<LedgerEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// Give balance back (the parent pays it, like adding balance).
    Refund,
    /// Correct the child's balance up or down; the parent's balance does not move.
    Adjustment,
}

/// The tenant that credits `child` must be its parent, acting itself.
fn parent_of(conn: &Connection, by: &By<'_>, child: &Tenant) -> Result<Tenant> {
    let parent_id = child.parent_id.ok_or_else(|| {
        Error::conflict(
            "operator_has_no_parent",
            "the operator has no balance to credit",
        )
    })?;
    if parent_id != by.scope.tenant_id() {
        let parent = tenant::get(conn, parent_id)?.expect("parent exists (foreign key)");
        return Err(Error::forbidden(
            "not_parent",
            format!(
                "only '{}', the parent of '{}', moves money to and from it",
                parent.name, child.name
            ),
        ));
    }
    Ok(tenant::get(conn, parent_id)?.expect("parent exists (foreign key)"))
}

/// A parent credits its child: the operator creates money; a reseller transfers its own.
pub fn add_balance(
    conn: &Connection,
    by: &By<'_>,
    child: &Tenant,
    amount: i64,
    kind: AdjustmentKind,
    reason: Option<&str>,
    cur: &Currency,
) -> Result<Transfer> {
    let parent = parent_of(conn, by, child)?;
    let (op_kind, out_kind, in_kind, action) = match kind {
        AdjustmentKind::Refund => (
            "refund",
            EntryKind::RefundOut,
            EntryKind::Refund,
            "balance.refund",
        ),
        AdjustmentKind::Adjustment => (
            "add_balance",
            EntryKind::TransferOut,
            EntryKind::Credit,
            "balance.add",
        ),
    };
    let op = ledger::begin(conn, op_kind, by.user_id, by.idempotency_key)?;
    let mut rows = Vec::new();
    if parent.id != OPERATOR_TENANT {
        rows.push(post(
            conn,
            by,
            &op,
            &Posting {
                tenant_id: parent.id,
                account: Account::Balance,
                kind: out_kind,
                amount: -amount,
                subscriber_id: None,
                plan_id: None,
                counterparty_tenant_id: Some(child.id),
                reason,
            },
            cur,
        )?);
    }
    rows.push(post(
        conn,
        by,
        &op,
        &Posting {
            tenant_id: child.id,
            account: Account::Balance,
            kind: in_kind,
            amount,
            subscriber_id: None,
            plan_id: None,
            counterparty_tenant_id: Some(parent.id),
            reason,
        },
        cur,
    )?);
    let entries = by.visible(conn, &rows, cur)?;
    audit::record(
        conn,
        &Entry::new(by.who, child.id, action, "reseller", child.id)
            .after(&json!({ "operation_id": op.id, "amount": cur.format(amount), "reason": reason, "entries": entries })),
    )?;
    Ok(Transfer {
        operation_id: op.id,
        entries,
    })
}

/// A correction of the child's balance by its parent, with a reason.
pub fn adjust(
    conn: &Connection,
    by: &By<'_>,
    child: &Tenant,
    amount: i64,
    reason: &str,
    cur: &Currency,
) -> Result<Transfer> {
    parent_of(conn, by, child)?;
    let op = ledger::begin(conn, "adjustment", by.user_id, by.idempotency_key)?;
    let row = post(
        conn,
        by,
        &op,
        &Posting {
            tenant_id: child.id,
            account: Account::Balance,
            kind: EntryKind::Adjustment,
            amount,
            subscriber_id: None,
            plan_id: None,
            counterparty_tenant_id: None,
            reason: Some(reason),
        },
        cur,
    )?;
    let entries = by.visible(conn, &[row], cur)?;
    audit::record(
        conn,
        &Entry::new(by.who, child.id, "balance.adjust", "reseller", child.id).after(
            &json!({ "operation_id": op.id, "amount": cur.format(amount), "reason": reason }),
        ),
    )?;
    Ok(Transfer {
        operation_id: op.id,
        entries,
    })
}

/// One renewal as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Renewal {
    pub id: i64,
    pub operation_id: i64,
    pub subscriber_id: i64,
    pub plan_id: i64,
    pub periods: i64,
    /// The plan's retail price × periods.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String)]
    pub retail_price: Decimal,
    pub old_expires_at: Option<String>,
    pub new_expires_at: String,
    pub automatic: bool,
    /// The debits you may see (cascade debits of providers above you are not shown).
    pub charges: Vec<LedgerEntry>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenewResult {
    pub subscriber: Subscriber,
    pub renewal: Renewal,
}

/// Adds whole calendar months, clamping to the month's last day (31 Jan + 1 = 28/29 Feb).
pub fn add_months(t: OffsetDateTime, n: i64) -> OffsetDateTime {
    let total = t.year() as i64 * 12 + (t.month() as i64 - 1) + n;
    let (y, m) = (
        total.div_euclid(12) as i32,
        (total.rem_euclid(12) + 1) as u8,
    );
    let month = Month::try_from(m).expect("1..=12");
    let day = t.day().min(month.length(y));
    t.replace_date(Date::from_calendar_date(y, month, day).expect("valid calendar date"))
}

/// Expiry after renewing `periods` of `plan` at `now`: from max(now, current expiry).
pub fn next_expiry(plan: &PlanRow, periods: i64, current: Option<i64>, now: i64) -> i64 {
    let base = current.map_or(now, |c| c.max(now));
    match (plan.validity_days, plan.validity_months) {
        (Some(d), _) => base + d * periods * 86_400,
        (None, Some(m)) => {
            let t = OffsetDateTime::from_unix_timestamp(base).expect("stored times are valid");
            add_months(t, m * periods).unix_timestamp()
        }
        (None, None) => unreachable!("the schema requires a validity"),
    }
}

/// Renews a subscriber: debits its owner's cost (and, in cascade mode, every reseller
/// above it its own cost), moves the expiry to max(now, expiry) + validity × periods,
/// and makes the subscriber active. `op` joins an operation already begun (a payment
/// with renewal); otherwise one is begun here.
#[allow(clippy::too_many_arguments)]
pub fn renew(
    conn: &Connection,
    by: &By<'_>,
    sub: &SubscriberRow,
    plan_id: Option<i64>,
    periods: i64,
    automatic: bool,
    op: Option<&Operation>,
    cur: &Currency,
) -> Result<RenewResult> {
    if !(1..=36).contains(&periods) {
        return Err(Error::invalid("periods must be between 1 and 36"));
    }
    if sub.sub.status == SubscriberStatus::Disabled {
        return Err(Error::conflict(
            "subscriber_disabled",
            "a disabled subscriber cannot be renewed; enable it first",
        ));
    }
    let owner = tenant::get(conn, sub.sub.tenant_id)?.expect("owner exists (foreign key)");
    let plan_id = plan_id.or(sub.sub.plan_id).ok_or_else(|| {
        Error::conflict(
            "no_plan",
            "plan_id: the subscriber has no plan; name the plan to renew",
        )
    })?;
    let plan = plan::usable_by(conn, &owner, plan_id)?;
    let charges = plan::charges(conn, &owner, &plan, periods)?;
    let begun;
    let op = match op {
        Some(op) => op,
        None => {
            begun = ledger::begin(
                conn,
                if automatic { "auto_renewal" } else { "renewal" },
                by.user_id,
                by.idempotency_key,
            )?;
            &begun
        }
    };
    let mut rows = Vec::new();
    for c in &charges {
        rows.push(post(
            conn,
            by,
            op,
            &Posting {
                tenant_id: c.tenant.id,
                account: Account::Balance,
                kind: EntryKind::Renewal,
                amount: -c.amount,
                subscriber_id: Some(sub.sub.id),
                plan_id: Some(c.plan_id),
                counterparty_tenant_id: None,
                reason: automatic.then_some("auto-renew"),
            },
            cur,
        )?);
    }
    let now = crate::db::now();
    let new_expiry = next_expiry(&plan, periods, sub.expires_at, now);
    let retail = plan.price * periods;
    conn.cached_exec(
        "UPDATE subscribers SET plan_id = ?2, expires_at = ?3, status = 'active', updated_at = ?4 WHERE id = ?1",
        params![sub.sub.id, plan.id, new_expiry, now],
    )?;
    conn.cached_exec(
        "INSERT INTO renewals (operation_id, subscriber_id, tenant_id, plan_id, periods, retail_price, cost,
             old_expires_at, new_expires_at, automatic, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            op.id,
            sub.sub.id,
            owner.id,
            plan.id,
            periods,
            retail,
            charges.first().map_or(0, |c| c.amount),
            sub.expires_at,
            new_expiry,
            automatic,
            now
        ],
    )?;
    let renewal_id = conn.last_insert_rowid();
    let after = crate::db::subscriber::get_visible(
        conn,
        &Scope::Direct {
            tenant_id: owner.id,
        },
        sub.sub.id,
    )?;
    let renewal = Renewal {
        id: renewal_id,
        operation_id: op.id,
        subscriber_id: sub.sub.id,
        plan_id: plan.id,
        periods,
        retail_price: cur.from_minor(retail),
        old_expires_at: sub.expires_at.map(crate::db::rfc3339),
        new_expires_at: crate::db::rfc3339(new_expiry),
        automatic,
        charges: by.visible(conn, &rows, cur)?,
    };
    audit::record(
        conn,
        &Entry::new(by.who, owner.id, if automatic { "subscriber.auto_renew" } else { "subscriber.renew" }, "subscriber", sub.sub.id)
            .before(&json!({ "status": sub.sub.status, "expires_at": sub.sub.expires_at, "plan_id": sub.sub.plan_id }))
            .after(&json!({ "status": "active", "expires_at": renewal.new_expires_at, "plan_id": plan.id,
                            "periods": periods, "operation_id": op.id })),
    )?;
    crate::messaging::triggers::renewed(conn, sub.sub.id, renewal_id, &cur.format(retail))?;
    Ok(RenewResult {
        subscriber: after.view(None)?,
        renewal,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Transfer,
    Card,
    Other,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentResult {
    pub operation_id: i64,
    pub payment: LedgerEntry,
    /// Present when the payment renewed the subscriber.
    pub renewal: Option<Renewal>,
    pub subscriber: Subscriber,
}

/// Records money collected from a subscriber into its owner's collections, and
/// optionally renews it in the same operation.
#[allow(clippy::too_many_arguments)]
pub fn record_payment(
    conn: &Connection,
    by: &By<'_>,
    sub: &SubscriberRow,
    amount: i64,
    method: PaymentMethod,
    reference: Option<&str>,
    renew_periods: Option<(Option<i64>, i64)>,
    cur: &Currency,
) -> Result<PaymentResult> {
    let op = ledger::begin(conn, "payment", by.user_id, by.idempotency_key)?;
    let method_name = serde_json::to_value(method).expect("serializes");
    let reason = match reference {
        Some(r) => format!("{}: {r}", method_name.as_str().unwrap_or("other")),
        None => method_name.as_str().unwrap_or("other").to_string(),
    };
    let row = post(
        conn,
        by,
        &op,
        &Posting {
            tenant_id: sub.sub.tenant_id,
            account: Account::Collections,
            kind: EntryKind::Payment,
            amount,
            subscriber_id: Some(sub.sub.id),
            plan_id: None,
            counterparty_tenant_id: None,
            reason: Some(&reason),
        },
        cur,
    )?;
    audit::record(
        conn,
        &Entry::new(by.who, sub.sub.tenant_id, "subscriber.payment", "subscriber", sub.sub.id)
            .after(&json!({ "operation_id": op.id, "amount": cur.format(amount), "method": method, "reference": reference })),
    )?;
    crate::messaging::triggers::payment_received(conn, sub.sub.id, op.id, &cur.format(amount))?;
    let (renewal, subscriber) = match renew_periods {
        Some((plan_id, periods)) => {
            let r = renew(conn, by, sub, plan_id, periods, false, Some(&op), cur)?;
            (Some(r.renewal), r.subscriber)
        }
        None => (None, sub.view(None)?),
    };
    Ok(PaymentResult {
        operation_id: op.id,
        payment: row.view(cur),
        renewal,
        subscriber,
    })
}

/// Subscribers due for the expiry sweep: active, with an expiry at or before `now`.
pub fn due(conn: &Connection, now: i64, limit: u32) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare(
        "SELECT id FROM subscribers WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What the sweep did to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    Renewed,
    Expired {
        reason: String,
    },
    /// No longer due (changed since it was listed).
    Skipped,
}

/// At expiry: renew automatically when the subscriber opted in and the balance allows,
/// otherwise mark it expired (which the agents enforce). Runs in its own transaction,
/// so one subscriber's failure does not hold back the others.
pub fn sweep_one(
    conn: &Connection,
    who: &Who,
    sub_id: i64,
    now: i64,
    cur: &Currency,
) -> Result<Swept> {
    let root = tenant::get(conn, OPERATOR_TENANT)?.expect("root exists");
    let scope = Scope::Subtree {
        tenant_id: root.id,
        path: root.path.clone(),
    };
    let sub = crate::db::subscriber::get_visible(conn, &scope, sub_id)?;
    if sub.sub.status != SubscriberStatus::Active || sub.expires_at.is_none_or(|e| e > now) {
        return Ok(Swept::Skipped);
    }
    // A disabled reseller (or one above it) renews nothing: its subscribers lapse.
    let chain = tenant::chain(conn, &sub.tenant_path)?;
    if let Some(off) = chain
        .iter()
        .find(|t| t.status != tenant::TenantStatus::Active)
    {
        return expire(
            conn,
            who,
            &sub,
            &format!("reseller '{}' is disabled", off.name),
            now,
        );
    }
    if sub.sub.auto_renew && sub.sub.plan_id.is_some() {
        // One key per expiry, so a sweep retried after a crash cannot renew twice.
        let key = format!("auto-renew:{}:{}", sub.sub.id, sub.expires_at.unwrap_or(0));
        let by = By {
            who,
            user_id: None,
            scope: scope.clone(),
            idempotency_key: Some(&key),
        };
        conn.execute_batch("SAVEPOINT auto_renew")?;
        match renew(conn, &by, &sub, None, 1, true, None, cur) {
            Ok(_) => {
                conn.execute_batch("RELEASE auto_renew")?;
                return Ok(Swept::Renewed);
            }
            Err(e) if e.kind.is_refusal() => {
                conn.execute_batch("ROLLBACK TO auto_renew; RELEASE auto_renew")?;
                return expire(
                    conn,
                    who,
                    &sub,
                    &format!("auto-renew failed: {}", e.message),
                    now,
                );
            }
            Err(e) => {
                conn.execute_batch("ROLLBACK TO auto_renew; RELEASE auto_renew")?;
                return Err(e);
            }
        }
    }
    expire(conn, who, &sub, "expired without renewal", now)
}

fn expire(
    conn: &Connection,
    who: &Who,
    sub: &SubscriberRow,
    reason: &str,
    now: i64,
) -> Result<Swept> {
    conn.cached_exec(
        "UPDATE subscribers SET status = 'expired', updated_at = ?2 WHERE id = ?1",
        params![sub.sub.id, now],
    )?;
    audit::record(
        conn,
        &Entry::new(
            who,
            sub.sub.tenant_id,
            "subscriber.expire",
            "subscriber",
            sub.sub.id,
        )
        .before(&json!({ "status": sub.sub.status, "expires_at": sub.sub.expires_at }))
        .after(&json!({ "status": "expired", "reason": reason })),
    )?;
    crate::messaging::triggers::expired(conn, sub.sub.id, sub.expires_at)?;
    Ok(Swept::Expired {
        reason: reason.to_string(),
    })
}

/// What a money operation run once per key answered: the stored status and body, and
/// whether this call replayed an earlier one.
pub struct OnceAnswer {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

/// Runs `op` at most once per (user, key) inside the caller's write transaction: the
/// first call runs it and remembers its answer under `hash` (the request's hash); a
/// later call with the same key and hash gets that answer without running anything; the
/// same key with another hash is a 409 `idempotency_key_reused` saying `reused`. The API
/// (`Idempotency-Key`) and the panel (a form's key) share this, and the key namespace.
pub fn once_per_key<R: Serialize>(
    tx: &rusqlite::Transaction<'_>,
    actor: &crate::scope::Actor,
    key: &str,
    hash: &str,
    status: u16,
    reused: &'static str,
    op: impl FnOnce(&rusqlite::Transaction<'_>, &By<'_>) -> Result<R>,
) -> Result<OnceAnswer> {
    if let Some(prev) = crate::db::ledger::remembered(tx, actor.user_id, key)? {
        if prev.request_hash != hash {
            return Err(Error::conflict("idempotency_key_reused", reused));
        }
        return Ok(OnceAnswer {
            status: prev.status,
            body: prev.response,
            replayed: true,
        });
    }
    let who = Who::from(actor);
    let by = By {
        who: &who,
        user_id: Some(actor.user_id),
        scope: actor.scope(),
        idempotency_key: Some(key),
    };
    let body = serde_json::to_string(&op(tx, &by)?).expect("answers serialize");
    crate::db::ledger::remember(tx, actor.user_id, key, hash, status, &body)?;
    Ok(OnceAnswer {
        status,
        body,
        replayed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn calendar_months_clamp_to_the_last_day() {
        for (from, months, to) in [
            (
                datetime!(2027-01-31 12:00 UTC),
                1,
                datetime!(2027-02-28 12:00 UTC),
            ),
            (
                datetime!(2028-01-31 00:00 UTC),
                1,
                datetime!(2028-02-29 00:00 UTC),
            ),
            (
                datetime!(2026-11-15 08:30 UTC),
                2,
                datetime!(2027-01-15 08:30 UTC),
            ),
            (
                datetime!(2026-12-31 23:59 UTC),
                12,
                datetime!(2027-12-31 23:59 UTC),
            ),
        ] {
            assert_eq!(add_months(from, months), to, "{from} + {months} months");
        }
    }
}
