//! The ledger: every change of money is one append-only row, written in the same
//! transaction as the balance it changes. Per tenant and account, `balance_after`
//! chains from zero by `amount`; for the 'balance' account the chain ends at
//! `tenants.balance`. [`verify`] checks both.

use super::Cached;
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paging::list_filter;
use super::row::stored_row;
use super::{Filter, Paging};
use crate::error::{Error, Result};
use crate::money::{Currency, decimal_str};
use crate::scope::Scope;

/// How a statement is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementFormat {
    Json,
    Csv,
}

/// Which money of a tenant an entry moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// Prepaid balance held with the parent; renewals are paid from it.
    Balance,
    /// Money collected from subscribers: the tenant's revenue.
    Collections,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Balance => "balance",
            Account::Collections => "collections",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Balance received from the parent (or created by the operator).
    Credit,
    /// Balance given to a child.
    TransferOut,
    /// A renewal's wholesale cost.
    Renewal,
    /// Money collected from a subscriber.
    Payment,
    /// Balance given back by the parent.
    Refund,
    /// Balance given back to a child.
    RefundOut,
    /// A correction by the parent, with a reason.
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::TransferOut => "transfer_out",
            EntryKind::Renewal => "renewal",
            EntryKind::Payment => "payment",
            EntryKind::Refund => "refund",
            EntryKind::RefundOut => "refund_out",
            EntryKind::Adjustment => "adjustment",
        }
    }
    fn parse(s: &str) -> EntryKind {
        match s {
            "credit" => EntryKind::Credit,
            "transfer_out" => EntryKind::TransferOut,
            "renewal" => EntryKind::Renewal,
            "payment" => EntryKind::Payment,
            "refund" => EntryKind::Refund,
            "refund_out" => EntryKind::RefundOut,
            _ => EntryKind::Adjustment,
        }
    }
}

/// One money operation: groups its rows, names its actor and Idempotency-Key.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: i64,
    pub actor_user_id: Option<i64>,
    pub key: Option<String>,
}

pub fn begin(
    conn: &Connection,
    kind: &str,
    actor_user_id: Option<i64>,
    key: Option<&str>,
) -> Result<Operation> {
    conn.cached_exec(
        "INSERT INTO operations (kind, actor_user_id, idempotency_key, at) VALUES (?1, ?2, ?3, ?4)",
        params![kind, actor_user_id, key, super::now()],
    )?;
    Ok(Operation {
        id: conn.last_insert_rowid(),
        actor_user_id,
        key: key.map(str::to_string),
    })
}

/// One row to write.
#[derive(Debug, Clone)]
pub struct Posting<'a> {
    pub tenant_id: i64,
    pub account: Account,
    pub kind: EntryKind,
    /// Signed minor units: positive adds to the account.
    pub amount: i64,
    pub subscriber_id: Option<i64>,
    pub plan_id: Option<i64>,
    pub counterparty_tenant_id: Option<i64>,
    pub reason: Option<&'a str>,
}

/// A debit the balance and credit limit cannot cover.
#[derive(Debug, Clone)]
pub struct Shortfall {
    pub tenant_id: i64,
    pub tenant_name: String,
    pub balance: i64,
    pub credit_limit: i64,
    pub debit: i64,
    /// How much more would be needed: `-(balance - debit + credit_limit)`.
    pub short_by: i64,
}

#[derive(Debug)]
pub enum PostError {
    Insufficient(Shortfall),
    Api(Error),
}

impl From<rusqlite::Error> for PostError {
    fn from(e: rusqlite::Error) -> Self {
        PostError::Api(e.into())
    }
}

/// Writes one row and moves the tenant's balance with it. A debit of the 'balance'
/// account that would take it below `-credit_limit` writes nothing.
pub fn post(conn: &Connection, op: &Operation, p: &Posting<'_>) -> Result<LedgerRow, PostError> {
    let balance_after = match p.account {
        Account::Balance => {
            let (name, balance, credit): (String, i64, i64) = conn.cached_row(
                "SELECT name, balance, credit_limit FROM tenants WHERE id = ?1",
                [p.tenant_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let after = balance + p.amount;
            if p.amount < 0 && after < -credit {
                return Err(PostError::Insufficient(Shortfall {
                    tenant_id: p.tenant_id,
                    tenant_name: name,
                    balance,
                    credit_limit: credit,
                    debit: -p.amount,
                    short_by: -(after + credit),
                }));
            }
            conn.cached_exec(
                "UPDATE tenants SET balance = ?2 WHERE id = ?1",
                params![p.tenant_id, after],
            )?;
            after
        }
        Account::Collections => {
            let last: i64 = conn
                .cached_row(
                    "SELECT balance_after FROM ledger WHERE tenant_id = ?1 AND account = 'collections' ORDER BY id DESC LIMIT 1",
                    [p.tenant_id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            last + p.amount
        }
    };
    let at = super::now();
    conn.cached_exec(
        "INSERT INTO ledger (operation_id, tenant_id, account, kind, amount, balance_after, subscriber_id, plan_id,
             counterparty_tenant_id, actor_user_id, idempotency_key, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            op.id,
            p.tenant_id,
            p.account.as_str(),
            p.kind.as_str(),
            p.amount,
            balance_after,
            p.subscriber_id,
            p.plan_id,
            p.counterparty_tenant_id,
            op.actor_user_id,
            op.key,
            p.reason,
            at
        ],
    )?;
    Ok(LedgerRow {
        id: conn.last_insert_rowid(),
        operation_id: op.id,
        tenant_id: p.tenant_id,
        account: p.account,
        kind: p.kind,
        amount: p.amount,
        balance_after,
        subscriber_id: p.subscriber_id,
        plan_id: p.plan_id,
        counterparty_tenant_id: p.counterparty_tenant_id,
        actor_user_id: op.actor_user_id,
        reason: p.reason.map(str::to_string),
        at,
    })
}

stored_row! {
    /// A stored ledger row (minor units).
    #[derive(Debug, Clone)]
    pub struct LedgerRow in COLS, read by from_row {
        pub id: i64 = "l.id",
        pub operation_id: i64 = "l.operation_id",
        pub tenant_id: i64 = "l.tenant_id",
        pub account: Account = "l.account" => stored_account,
        pub kind: EntryKind = "l.kind" => stored_kind,
        pub amount: i64 = "l.amount",
        pub balance_after: i64 = "l.balance_after",
        pub subscriber_id: Option<i64> = "l.subscriber_id",
        pub plan_id: Option<i64> = "l.plan_id",
        pub counterparty_tenant_id: Option<i64> = "l.counterparty_tenant_id",
        pub actor_user_id: Option<i64> = "l.actor_user_id",
        pub reason: Option<String> = "l.reason",
        pub at: i64 = "l.at",
    }
}

fn stored_account(s: String) -> Account {
    if s == "balance" {
        Account::Balance
    } else {
        Account::Collections
    }
}

fn stored_kind(s: String) -> EntryKind {
    EntryKind::parse(&s)
}

/// A ledger entry as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntry {
    pub id: i64,
    pub operation_id: i64,
    pub tenant_id: i64,
    pub account: Account,
    pub kind: EntryKind,
    /// Signed: positive adds to the account.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "-18.00")]
    pub amount: Decimal,
    #[serde(with = "decimal_str")]
    #[schema(value_type = String, example = "82.00")]
    pub balance_after: Decimal,
    pub subscriber_id: Option<i64>,
    pub plan_id: Option<i64>,
    pub counterparty_tenant_id: Option<i64>,
    pub actor_user_id: Option<i64>,
    pub reason: Option<String>,
    pub at: String,
}

impl LedgerRow {
    pub fn view(&self, cur: &Currency) -> LedgerEntry {
        LedgerEntry {
            id: self.id,
            operation_id: self.operation_id,
            tenant_id: self.tenant_id,
            account: self.account,
            kind: self.kind,
            amount: cur.from_minor(self.amount),
            balance_after: cur.from_minor(self.balance_after),
            subscriber_id: self.subscriber_id,
            plan_id: self.plan_id,
            counterparty_tenant_id: self.counterparty_tenant_id,
            actor_user_id: self.actor_user_id,
            reason: self.reason.clone(),
            at: super::rfc3339(self.at),
        }
    }
}

list_filter! {
    pub struct LedgerFilter {
        pub tenant_id: Option<i64>,
        pub account: Option<Account>,
        pub kind: Option<EntryKind>,
        pub subscriber_id: Option<i64>,
        /// RFC 3339 lower bound (inclusive).
        #[param(value_type = Option<String>, format = DateTime)]
        pub since: Option<crate::db::paging::QueryTime>,
        /// RFC 3339 upper bound (exclusive).
        #[param(value_type = Option<String>, format = DateTime)]
        pub until: Option<crate::db::paging::QueryTime>,
        /// `csv` for `text/csv` (statements only; `Accept: text/csv` works too). A CSV
        /// statement without a `limit` holds up to 100000 rows.
        #[param(inline)]
        pub format: Option<StatementFormat>,
    }
}

/// Oldest first, within `scope`.
pub fn list(
    conn: &Connection,
    scope: &Scope,
    f: &LedgerFilter,
    since: Option<i64>,
    until: Option<i64>,
    paging: Paging,
) -> Result<Vec<LedgerRow>> {
    let mut w = Filter::scoped(scope, "l.tenant_id");
    w.and_opt("l.tenant_id = ?", f.tenant_id)
        .and_opt("l.account = ?", f.account.map(|a| a.as_str().to_string()))
        .and_opt("l.kind = ?", f.kind.map(|k| k.as_str().to_string()))
        .and_opt("l.subscriber_id = ?", f.subscriber_id)
        .and_opt("l.at >= ?", since)
        .and_opt("l.at < ?", until);
    let select = format!("SELECT {COLS} FROM ledger l");
    w.page(conn, &select, "l.id", paging, from_row)
}

/// What `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub tenant_id: i64,
    pub message: String,
}

/// Checks, for every tenant, that each account's `balance_after` chains from zero by
/// `amount`, and that `tenants.balance` equals the 'balance' account's sum.
pub fn verify(conn: &Connection) -> rusqlite::Result<(u64, Vec<Problem>)> {
    let mut problems = Vec::new();
    let mut running: std::collections::HashMap<(i64, String), i64> =
        std::collections::HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, tenant_id, account, amount, balance_after FROM ledger ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let (id, tenant, account, amount, after): (i64, i64, String, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        n += 1;
        let sum = running.entry((tenant, account.clone())).or_insert(0);
        *sum += amount;
        if *sum != after {
            problems.push(Problem {
                tenant_id: tenant,
                message: format!(
                    "entry {id} ({account}) says balance_after {after}, but the entries so far sum to {sum}"
                ),
            });
            *sum = after; // report each break once, not every row after it
        }
    }
    let mut stmt = conn.prepare(
        "SELECT t.id, t.name, t.balance, coalesce((SELECT sum(amount) FROM ledger l WHERE l.tenant_id = t.id AND l.account = 'balance'), 0)
         FROM tenants t ORDER BY t.id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (id, name, balance, sum): (i64, String, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if balance != sum {
            problems.push(Problem {
                tenant_id: id,
                message: format!(
                    "'{name}' has balance {balance} (minor units) but its ledger sums to {sum}"
                ),
            });
        }
    }
    Ok((n, problems))
}

/// A stored response for an Idempotency-Key.
pub struct Remembered {
    pub request_hash: String,
    pub status: u16,
    pub response: String,
}

pub fn remembered(conn: &Connection, user_id: i64, key: &str) -> Result<Option<Remembered>> {
    Ok(conn
        .cached_row(
            "SELECT request_hash, status, response FROM idempotency WHERE user_id = ?1 AND key = ?2",
            params![user_id, key],
            |r| Ok(Remembered { request_hash: r.get(0)?, status: r.get(1)?, response: r.get(2)? }),
        )
        .optional()?)
}

pub fn remember(
    conn: &Connection,
    user_id: i64,
    key: &str,
    request_hash: &str,
    status: u16,
    response: &str,
) -> Result<()> {
    conn.cached_exec(
        "INSERT INTO idempotency (user_id, key, request_hash, status, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![user_id, key, request_hash, status, response, super::now()],
    )?;
    Ok(())
}

/// One period of the renewals and revenue summary.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeriodSummary {
    /// `2026-11` (monthly) or `2026-11-23` (daily), UTC.
    pub period: String,
    pub renewals: i64,
    /// Retail value of those renewals (plan price × periods).
    #[serde(with = "decimal_str")]
    #[schema(value_type = String)]
    pub renewal_value: Decimal,
    /// Wholesale cost debited for renewals.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String)]
    pub cost: Decimal,
    /// Money collected from subscribers.
    #[serde(with = "decimal_str")]
    #[schema(value_type = String)]
    pub collected: Decimal,
    /// Balance bought from the parent (credits and refunds received).
    #[serde(with = "decimal_str")]
    #[schema(value_type = String)]
    pub balance_bought: Decimal,
}

/// Renewals and revenue per period over the tenants `scope` covers.
pub fn summary(
    conn: &Connection,
    scope: &Scope,
    monthly: bool,
    since: i64,
    until: i64,
    cur: &Currency,
) -> Result<Vec<PeriodSummary>> {
    let fmt = if monthly { "%Y-%m" } else { "%Y-%m-%d" };
    // The scope's one parameter is the first `?` (so ?1); the bounds are ?2 and ?3.
    let (pred, p) = scope.owns("t.id");
    let sql = format!(
        "WITH ts AS (SELECT t.id FROM tenants t WHERE {pred}),
         r AS (
             SELECT strftime('{fmt}', r.at, 'unixepoch') AS period, count(*) AS renewals, sum(r.retail_price) AS value
             FROM renewals r WHERE r.tenant_id IN ts AND r.at >= ?2 AND r.at < ?3 GROUP BY 1),
         l AS (
             SELECT strftime('{fmt}', l.at, 'unixepoch') AS period,
                    sum(CASE WHEN l.kind = 'renewal' THEN -l.amount ELSE 0 END) AS cost,
                    sum(CASE WHEN l.kind = 'payment' THEN l.amount ELSE 0 END) AS collected,
                    sum(CASE WHEN l.kind IN ('credit', 'refund') THEN l.amount ELSE 0 END) AS bought
             FROM ledger l WHERE l.tenant_id IN ts AND l.at >= ?2 AND l.at < ?3 GROUP BY 1),
         p AS (SELECT period FROM r UNION SELECT period FROM l)
         SELECT p.period, coalesce(r.renewals, 0), coalesce(r.value, 0), coalesce(l.cost, 0),
                coalesce(l.collected, 0), coalesce(l.bought, 0)
         FROM p LEFT JOIN r USING (period) LEFT JOIN l USING (period) ORDER BY p.period"
    );
    let args: Vec<rusqlite::types::Value> = vec![p, since.into(), until.into()];
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok(PeriodSummary {
            period: r.get(0)?,
            renewals: r.get(1)?,
            renewal_value: cur.from_minor(r.get(2)?),
            cost: cur.from_minor(r.get(3)?),
            collected: cur.from_minor(r.get(4)?),
            balance_bought: cur.from_minor(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
