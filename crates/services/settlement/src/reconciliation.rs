//! Reconciliation (REL-15): proving the books, not trusting them.
//!
//! Each check is one query that returns a row per discrepancy, so an empty result is a pass
//! and a failure says exactly what is wrong. Run periodically (a failure writes
//! `ReconciliationFailed` to the outbox, for alerting, and sets
//! `settlement_reconciliation_ok` to 0) and on demand by `POST /v1/admin/reconciliation`.

use std::time::Duration;

use serde::Serialize;
use service_kit::Shutdown;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::error::Result;
use crate::store;

/// A discrepancy is described by the query itself; at most this many are reported per check.
const REPORTED: usize = 10;

const CHECKS: &[(&str, &str)] = &[
    (
        // Double entry: every transfer moves money between two accounts of one asset, so per
        // asset everything sums to zero (the external account is minus all deposits).
        "ledger_balanced",
        "SELECT format('%s sums to %s', asset, sum(available + held))
           FROM accounts GROUP BY asset HAVING sum(available + held) <> 0",
    ),
    (
        // Balances are the sum of their history: nothing changed an account but a transfer.
        // (Holds move money inside an account, between available and held.)
        "balances_match_transfers",
        "WITH history AS (
             SELECT owner, asset, sum(amount) AS net FROM (
                 SELECT credit_owner_id AS owner, asset, amount FROM transfers
                 UNION ALL
                 SELECT debit_owner_id, asset, -amount FROM transfers) AS moves
              GROUP BY owner, asset)
         SELECT format('account %s %s holds %s but its transfers sum to %s',
                       a.owner_id, a.asset, a.available + a.held, coalesce(h.net, 0))
           FROM accounts a FULL JOIN history h ON h.owner = a.owner_id AND h.asset = a.asset
          WHERE coalesce(a.available + a.held, 0) <> coalesce(h.net, 0)",
    ),
    (
        // What is held is exactly what pending holds have left.
        "holds_match_held",
        "WITH pending AS (
             SELECT owner_id, asset, sum(amount - posted) AS rest
               FROM holds WHERE status = 'pending' GROUP BY owner_id, asset)
         SELECT format('account %s %s has %s held but its pending holds need %s',
                       a.owner_id, a.asset, a.held, coalesce(p.rest, 0))
           FROM accounts a LEFT JOIN pending p ON p.owner_id = a.owner_id AND p.asset = a.asset
          WHERE a.held <> coalesce(p.rest, 0)",
    ),
    (
        // Holds match open orders: a hold still pending five minutes after it was placed, for
        // an order that never reached the book (no `OrderAccepted`), was orphaned by orders
        // stopping between the hold and its commit; its funds are stuck until it is voided.
        "holds_match_open_orders",
        "SELECT format('hold %s of %s %s is pending but its order never reached the book', id,
                       owner_id, asset)
           FROM holds
          WHERE status = 'pending' AND accepted_at IS NULL
            AND created_at < now() - interval '5 minutes'",
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

/// Runs every check; records the outcome as metrics.
pub async fn run(pool: &PgPool) -> Result<Report> {
    let mut checks = Vec::with_capacity(CHECKS.len());
    for (name, sql) in CHECKS {
        let found = store::discrepancies(pool, sql).await?;
        let shown: Vec<&str> = found.iter().take(REPORTED).map(String::as_str).collect();
        let mut detail = shown.join("; ");
        if found.len() > REPORTED {
            detail.push_str(&format!("; and {} more", found.len() - REPORTED));
        }
        checks.push(Check {
            name: (*name).to_owned(),
            ok: found.is_empty(),
            detail,
        });
    }
    let ok = checks.iter().all(|c| c.ok);
    metrics::gauge!("settlement_reconciliation_ok").set(if ok { 1.0 } else { 0.0 });
    metrics::counter!("settlement_reconciliations_total", "ok" => ok.to_string()).increment(1);
    Ok(Report { ok, checks })
}

/// Runs [`run`] and, on a mismatch, announces it: a log at error level and a
/// `ReconciliationFailed` event through the outbox (alerting pages on it).
pub async fn run_and_announce(pool: &PgPool) -> Result<Report> {
    let report = run(pool).await?;
    if !report.ok {
        let failed: Vec<&Check> = report.checks.iter().filter(|c| !c.ok).collect();
        tracing::error!(checks = ?failed, "reconciliation found a mismatch");
        let event = events::Envelope::new(
            crate::SERVICE,
            "ReconciliationFailed",
            1,
            crate::SERVICE,
            0,
            serde_json::json!({ "checks": failed }),
        );
        let mut tx = pool.begin().await?;
        events::outbox::append(&mut tx, crate::STREAM, &event).await?;
        tx.commit().await?;
    }
    Ok(report)
}

/// The periodic job.
pub async fn every(pool: PgPool, interval: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    // The first tick is immediate; the books were just opened, give them one interval.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(err) = run_and_announce(&pool).await {
                    tracing::warn!(error = %err, "reconciliation could not run");
                }
            }
            () = shutdown.triggered() => break,
        }
    }
}
