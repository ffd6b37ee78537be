//! Reports: renewals and revenue per day or month, subscribers by status now and per
//! day over the last 31 days (the daily snapshots, [`crate::db::snapshot`]), traffic per
//! day, over the actor's part of the tree (or one reseller in it), each drawn as an SVG
//! chart on the server and downloadable as CSV. The figures are the API's
//! (`/api/v1/reports/summary`'s `ledger::summary`), read through the same scope.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;

use super::chart::{self, Series};
use super::{Chrome, PageResult, Viewer, opt_i64, render};
use crate::AppState;
use crate::db::agent::{self, UsageDay};
use crate::db::ledger::{self, PeriodSummary};
use crate::db::snapshot::{self, StatusDay};
use crate::db::{subscriber, tenant};
use crate::error::{Error, Result};
use crate::scope::{Actor, Permission};

#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    /// `day` (the last 31 days) or `month` (the last 12 months, the default).
    period: Option<String>,
    /// One reseller in the actor's part of the tree; default: the actor's own tenant.
    tenant_id: Option<String>,
}

/// What one report shows, read in one go.
struct Figures {
    tenant_id: i64,
    tenant_name: String,
    daily: bool,
    periods: Vec<PeriodSummary>,
    statuses: Vec<(String, i64)>,
    /// The daily snapshots of the last 31 days (days without one are left out).
    history: Vec<StatusDay>,
    usage: Vec<UsageDay>,
}

/// The statuses the history shows, in the order of its series and CSV columns.
const STATUSES: [&str; 4] = ["active", "suspended", "expired", "disabled"];

async fn figures(st: &AppState, actor: &Actor, q: &ReportQuery) -> Result<Figures> {
    actor.require(Permission::ViewReports)?;
    let daily = match q.period.as_deref().unwrap_or("month") {
        "month" => false,
        "day" => true,
        p => {
            return Err(Error::invalid(format!(
                "period: '{p}' is neither day nor month"
            )));
        }
    };
    let tenant_id = opt_i64("tenant_id", &q.tenant_id)?.unwrap_or(actor.tenant_id);
    let until = crate::db::now() + 1;
    let (labels, since) = span(daily);
    // Traffic is always the last 31 days, whatever the money's period.
    let since_day = span(true).0.swap_remove(0);
    let cur = st.currency.clone();
    st.read_scoped(actor, move |c, scope| {
        let (t, over) = tenant::rows_scope(c, scope, tenant_id)?;
        let periods = every_period(
            labels,
            ledger::summary(c, &over, !daily, since, until, &cur)?,
        );
        let (by_status, _) = subscriber::counts(c, &over, until, until)?;
        let usage = agent::usage_in_scope(c, &over, &since_day)?;
        let history = snapshot::history(c, &over, &since_day)?;
        Ok(Figures {
            tenant_id: t.id,
            tenant_name: t.name,
            daily,
            periods,
            statuses: by_status
                .into_iter()
                .map(|(s, n)| (s.as_str().to_string(), n))
                .collect(),
            history,
            usage,
        })
    })
    .await
}

/// The report's periods, oldest first (the last 31 days, or the last 12 calendar
/// months, UTC), and the unix time the first one starts.
fn span(daily: bool) -> (Vec<String>, i64) {
    let today = time::OffsetDateTime::now_utc().date();
    if daily {
        let first = today - time::Duration::days(30);
        let labels = (0..31)
            .map(|d| (first + time::Duration::days(d)).to_string())
            .collect();
        (labels, first.midnight().assume_utc().unix_timestamp())
    } else {
        let now = today.year() * 12 + i32::from(u8::from(today.month())) - 1;
        let labels = (now - 11..=now)
            .map(|n| format!("{:04}-{:02}", n / 12, n % 12 + 1))
            .collect();
        let (y, m) = ((now - 11) / 12, ((now - 11) % 12 + 1) as u8);
        let month = time::Month::try_from(m).expect("1..=12");
        let first = time::Date::from_calendar_date(y, month, 1).expect("a valid date");
        (labels, first.midnight().assume_utc().unix_timestamp())
    }
}

/// Every period of the span with the ones that had nothing as zeros: a chart's bars then
/// stand at their dates, gaps included.
fn every_period(labels: Vec<String>, found: Vec<PeriodSummary>) -> Vec<PeriodSummary> {
    let zero = rust_decimal::Decimal::ZERO;
    let mut by: std::collections::HashMap<String, PeriodSummary> =
        found.into_iter().map(|p| (p.period.clone(), p)).collect();
    labels
        .into_iter()
        .map(|period| {
            by.remove(&period).unwrap_or(PeriodSummary {
                period,
                renewals: 0,
                renewal_value: zero,
                cost: zero,
                collected: zero,
                balance_bought: zero,
            })
        })
        .collect()
}

/// Renewal value and money collected per period, in the currency `cur`.
fn money_chart(periods: &[PeriodSummary], labels: &[String], cur: &str) -> String {
    chart::bars(
        "Renewal value and money collected per period",
        labels,
        &[
            Series {
                name: "renewal value",
                class: "a",
                values: periods.iter().map(|p| money(p.renewal_value)).collect(),
            },
            Series {
                name: "collected",
                class: "b",
                values: periods.iter().map(|p| money(p.collected)).collect(),
            },
        ],
        cur,
    )
}

/// The dashboard's revenue over time: the last 12 months' renewal value and money
/// collected over `scope` (the reports' figures, read the same way).
pub(super) fn dashboard_revenue(
    c: &rusqlite::Connection,
    scope: &crate::scope::Scope,
    cur: &crate::money::Currency,
) -> Result<String> {
    let (labels, since) = span(false);
    let periods = every_period(
        labels.clone(),
        ledger::summary(c, scope, true, since, crate::db::now() + 1, cur)?,
    );
    Ok(money_chart(&periods, &labels, &cur.code))
}

fn money(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

fn gib(octets: i64) -> f64 {
    (octets as f64 / 1_073_741_824.0 * 100.0).round() / 100.0
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    chrome: Chrome,
    title: String,
    tenant_id: i64,
    tenant_name: String,
    daily: bool,
    currency: String,
    periods: Vec<PeriodSummary>,
    statuses: Vec<(String, i64)>,
    usage: Vec<UsageDay>,
    renewals_chart: String,
    money_chart: String,
    status_chart: String,
    history: Vec<StatusDay>,
    history_chart: String,
    usage_chart: String,
}

/// The reports page.
pub async fn reports(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<ReportQuery>,
) -> PageResult {
    let f = figures(&st, &v.actor, &q).await?;
    let cur = st.currency.code.clone();
    let labels: Vec<String> = f.periods.iter().map(|p| p.period.clone()).collect();
    let renewals_chart = chart::bars(
        "Renewals per period",
        &labels,
        &[Series {
            name: "renewals",
            class: "a",
            values: f.periods.iter().map(|p| p.renewals as f64).collect(),
        }],
        "",
    );
    let money_chart = money_chart(&f.periods, &labels, &cur);
    let status_labels: Vec<String> = f.statuses.iter().map(|(s, _)| s.clone()).collect();
    let status_chart = chart::bars(
        "Subscribers by status",
        &status_labels,
        &[Series {
            name: "subscribers",
            class: "a",
            values: f.statuses.iter().map(|(_, n)| *n as f64).collect(),
        }],
        "",
    );
    let history_days: Vec<String> = f.history.iter().map(|d| d.day.clone()).collect();
    let history_chart = chart::bars(
        "Subscribers by status per day",
        &history_days,
        &STATUSES
            .iter()
            .zip(["a", "b", "c", "d"])
            .map(|(status, class)| Series {
                name: status,
                class,
                values: f.history.iter().map(|d| d.count(status) as f64).collect(),
            })
            .collect::<Vec<_>>(),
        "",
    );
    let days: Vec<String> = f.usage.iter().map(|u| u.day.clone()).collect();
    let usage_chart = chart::bars(
        "Traffic per day",
        &days,
        &[
            Series {
                name: "download",
                class: "a",
                values: f.usage.iter().map(|u| gib(u.output_octets)).collect(),
            },
            Series {
                name: "upload",
                class: "b",
                values: f.usage.iter().map(|u| gib(u.input_octets)).collect(),
            },
        ],
        "GiB",
    );
    Ok(render(&ReportsPage {
        chrome: Chrome::new(&v.ctx, "reports"),
        title: "Reports".into(),
        tenant_id: f.tenant_id,
        tenant_name: f.tenant_name,
        daily: f.daily,
        currency: cur,
        periods: f.periods,
        statuses: f.statuses,
        usage: f.usage,
        renewals_chart,
        money_chart,
        status_chart,
        history: f.history,
        history_chart,
        usage_chart,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_31_days_or_12_months_ending_now_and_starts_at_its_first() {
        let (days, since) = span(true);
        let today = time::OffsetDateTime::now_utc().date();
        assert_eq!(
            (days.len(), days.last().unwrap().as_str()),
            (31, today.to_string().as_str())
        );
        assert_eq!(
            time::OffsetDateTime::from_unix_timestamp(since)
                .unwrap()
                .date()
                .to_string(),
            days[0]
        );
        let (months, since) = span(false);
        assert_eq!(months.len(), 12);
        assert_eq!(
            months[11],
            format!("{:04}-{:02}", today.year(), u8::from(today.month()))
        );
        let first = time::OffsetDateTime::from_unix_timestamp(since)
            .unwrap()
            .date();
        assert_eq!(
            (
                format!("{:04}-{:02}", first.year(), u8::from(first.month())),
                first.day()
            ),
            (months[0].clone(), 1)
        );
        let filled = every_period(months.clone(), vec![]);
        assert_eq!(
            filled.iter().map(|p| p.period.clone()).collect::<Vec<_>>(),
            months
        );
    }
}

#[derive(Debug, Deserialize)]
pub struct CsvQuery {
    /// `revenue` (renewals and money per period), `statuses` (subscribers by status per
    /// day, from the daily snapshots) or `usage` (traffic per day).
    report: Option<String>,
    #[serde(flatten)]
    q: ReportQuery,
}

/// One report as CSV, for a spreadsheet.
pub async fn csv(State(st): State<AppState>, v: Viewer, Query(c): Query<CsvQuery>) -> PageResult {
    let f = figures(&st, &v.actor, &c.q).await?;
    let (name, body) = match c.report.as_deref().unwrap_or("revenue") {
        "revenue" => {
            let mut out =
                String::from("period,renewals,renewal_value,cost,collected,balance_bought\n");
            for p in &f.periods {
                out.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    p.period, p.renewals, p.renewal_value, p.cost, p.collected, p.balance_bought
                ));
            }
            ("revenue", out)
        }
        "statuses" => {
            let mut out = format!("day,{}\n", STATUSES.join(","));
            for d in &f.history {
                let counts: Vec<String> = STATUSES.iter().map(|s| d.count(s).to_string()).collect();
                out.push_str(&format!("{},{}\n", d.day, counts.join(",")));
            }
            ("statuses", out)
        }
        "usage" => {
            let mut out = String::from("day,download_octets,upload_octets\n");
            for u in &f.usage {
                out.push_str(&format!(
                    "{},{},{}\n",
                    u.day, u.output_octets, u.input_octets
                ));
            }
            ("usage", out)
        }
        r => {
            return Err(
                Error::invalid(format!("report: '{r}' is not revenue, statuses or usage")).into(),
            );
        }
    };
    let period = if f.daily || name != "revenue" {
        "daily"
    } else {
        "monthly"
    };
    let file = format!(
        "attachment; filename=\"{name}-{period}-{}.csv\"",
        f.tenant_id
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        body,
    )
        .into_response())
}
