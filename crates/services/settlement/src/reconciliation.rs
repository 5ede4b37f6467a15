//! Reconciliation (REL-15): proving the books, not trusting them.
//!
//! Each check of the ledger is one query that returns a row per discrepancy, so an empty
//! result is a pass and a failure says exactly what is wrong. One more check looks outside:
//! per symbol, the trades orders executed in the last day (its own trade table, over its
//! internal API) against the trades settled in the same window — so a trade that never
//! reached settlement is found, not only one that settled wrongly. Run periodically (a failure
//! writes `ReconciliationFailed` to the outbox, for alerting, and sets
//! `settlement_reconciliation_ok` to 0) and on demand by `POST /v1/admin/reconciliation`.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::events::{FailedCheck, ReconciliationFailed};
use contracts::reconciliation::TradeTotals;
use resilience::Call;
use serde::Serialize;
use service_kit::Shutdown;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::error::Result;
use crate::store;

/// A discrepancy is described by the query itself; at most this many are reported per check.
const REPORTED: usize = 10;

/// A balance is `available` alone: the ledger holds nothing for open orders since ADR 0023
/// slice 3b (risk reserves them), and its column `held` is gone (a check here looked for
/// anything in it, then the table refused it, then the column went).
const CHECKS: &[(&str, &str)] = &[
    (
        // Double entry: every transfer moves money between two accounts of one asset, so per
        // asset everything sums to zero (the external account is minus all deposits).
        "ledger_balanced",
        "SELECT format('%s sums to %s', asset, sum(available))
           FROM accounts GROUP BY asset HAVING sum(available) <> 0",
    ),
    (
        // Balances are the sum of their history: nothing changed an account but a transfer.
        "balances_match_transfers",
        "WITH history AS (
             SELECT owner, asset, sum(amount) AS net FROM (
                 SELECT credit_owner_id AS owner, asset, amount FROM transfers
                 UNION ALL
                 SELECT debit_owner_id, asset, -amount FROM transfers) AS moves
              GROUP BY owner, asset)
         SELECT format('account %s %s holds %s but its transfers sum to %s',
                       a.owner_id, a.asset, a.available, coalesce(h.net, 0))
           FROM accounts a FULL JOIN history h ON h.owner = a.owner_id AND h.asset = a.asset
          WHERE coalesce(a.available, 0) <> coalesce(h.net, 0)",
    ),
    (
        // Every settled trade moved its base and its quote exactly once, and no trade transfer
        // exists without a settled trade.
        "trades_settled_once",
        "WITH moved AS (
             SELECT trade_id,
                    count(*) FILTER (WHERE kind = 'trade' AND debit_owner_id = s.seller_id) AS base_moves,
                    coalesce(sum(amount) FILTER (WHERE kind = 'trade' AND debit_owner_id = s.buyer_id), 0) AS quote_moved
               FROM transfers t JOIN settled_trades s USING (trade_id)
              GROUP BY trade_id)
         SELECT format('trade %s moved base %s times and %s quote (expected 1 and %s)',
                       s.trade_id, coalesce(m.base_moves, 0), coalesce(m.quote_moved, 0), s.notional)
           FROM settled_trades s LEFT JOIN moved m USING (trade_id)
          WHERE coalesce(m.base_moves, 0) <> 1 OR coalesce(m.quote_moved, 0) <> s.notional
         UNION ALL
         SELECT format('transfer %s names trade %s, which never settled', t.id, t.trade_id)
           FROM transfers t LEFT JOIN settled_trades s USING (trade_id)
          WHERE t.trade_id IS NOT NULL AND s.trade_id IS NULL",
    ),
];

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What is wrong, when it is not ok; empty otherwise.
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Runs the checks; what the periodic job and the admin route share.
pub struct Reconciler {
    pub pool: PgPool,
    /// Orders' internal API, with settlement's service token.
    pub orders: resilience::Upstream,
    /// Trades younger than this are still in flight and left out of the comparison.
    pub grace: Duration,
}

/// A count of trades and their base quantity.
type Totals = (i64, i64);

/// How far back executed trades are compared: older ones were compared by earlier runs.
const WINDOW: time::Duration = time::Duration::days(1);

impl Reconciler {
    /// Runs every check; records the outcome as metrics.
    pub async fn run(&self) -> Result<Report> {
        let mut checks = Vec::with_capacity(CHECKS.len() + 1);
        for (name, sql) in CHECKS {
            let found = store::discrepancies(&self.pool, sql).await?;
            checks.push(check(name, &found));
        }
        checks.push(self.trades_match_orders().await?);
        let ok = checks.iter().all(|c| c.ok);
        metrics::gauge!("settlement_reconciliation_ok").set(if ok { 1.0 } else { 0.0 });
        metrics::counter!("settlement_reconciliations_total", "ok" => ok.to_string()).increment(1);
        Ok(Report { ok, checks })
    }

    /// Every trade orders executed settled, and nothing else did: per symbol, counts and
    /// quantities over `[now - 1 day - grace, now - grace)`, the same window on both sides
    /// (a trade's time is its row's in orders, carried by `TradeExecuted`).
    async fn trades_match_orders(&self) -> Result<Check> {
        let grace = time::Duration::try_from(self.grace).unwrap_or(time::Duration::ZERO);
        let to = time::OffsetDateTime::now_utc() - grace;
        let from = to - WINDOW;
        let executed = match self.executed(from, to).await {
            Ok(executed) => executed,
            Err(reason) => {
                return Ok(check(
                    "trades_match_orders",
                    &[format!("orders could not be asked: {reason}")],
                ));
            }
        };
        let settled = store::settled_totals(&self.pool, from, to).await?;
        // Per symbol: (trades, quantity) executed, and settled.
        let mut sides: BTreeMap<String, (Totals, Totals)> = BTreeMap::new();
        for t in executed {
            sides.entry(t.symbol).or_default().0 = (t.trades, t.quantity);
        }
        for (symbol, trades, quantity) in settled {
            sides.entry(symbol).or_default().1 = (trades, quantity);
        }
        let found: Vec<String> = sides
            .into_iter()
            .filter(|(_, (executed, settled))| executed != settled)
            .map(|(symbol, (executed, settled))| {
                format!(
                    "{symbol}: orders executed {} trades ({} base units) but {} settled ({} base units)",
                    executed.0, executed.1, settled.0, settled.1
                )
            })
            .collect();
        Ok(check("trades_match_orders", &found))
    }

    async fn executed(
        &self,
        from: time::OffsetDateTime,
        to: time::OffsetDateTime,
    ) -> std::result::Result<Vec<TradeTotals>, String> {
        let format = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| e.to_string())
        };
        // RFC 3339 carries `+` only in offsets; UTC is written with `Z`, safe in a query.
        let path = format!(
            "/internal/v1/trade-totals?from={}&to={}",
            format(from)?,
            format(to)?
        );
        let response = self
            .orders
            .send(Call::get(&path))
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("orders answered {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    /// Runs [`Self::run`] and, on a mismatch, announces it: a log at error level and a
    /// `ReconciliationFailed` event through the outbox (alerting pages on it).
    pub async fn run_and_announce(&self) -> Result<Report> {
        let report = self.run().await?;
        if !report.ok {
            let failed: Vec<&Check> = report.checks.iter().filter(|c| !c.ok).collect();
            tracing::error!(checks = ?failed, "reconciliation found a mismatch");
            let failed = ReconciliationFailed {
                checks: failed
                    .into_iter()
                    .map(|c| FailedCheck {
                        name: c.name.clone(),
                        detail: c.detail.clone(),
                    })
                    .collect(),
            };
            let event = events::Envelope::of(crate::SERVICE, crate::SERVICE, 0, &failed)?;
            let mut tx = self.pool.begin().await?;
            events::outbox::append(&mut tx, crate::STREAM, &event).await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    /// The periodic job.
    pub async fn every(self: std::sync::Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(interval);
        // The first tick is immediate; the books were just opened, give them one interval.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(err) = self.run_and_announce().await {
                        tracing::warn!(error = %err, "reconciliation could not run");
                    }
                }
                () = shutdown.triggered() => break,
            }
        }
    }
}

/// A check from its findings (at most [`REPORTED`] of them quoted).
fn check(name: &str, found: &[String]) -> Check {
    let shown: Vec<&str> = found.iter().take(REPORTED).map(String::as_str).collect();
    let mut detail = shown.join("; ");
    if found.len() > REPORTED {
        detail.push_str(&format!("; and {} more", found.len() - REPORTED));
    }
    Check {
        name: name.to_owned(),
        ok: found.is_empty(),
        detail,
    }
}
