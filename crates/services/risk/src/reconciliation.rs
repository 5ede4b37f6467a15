//! Risk's copy of the ledger checked against the ledger while the platform runs (ADR 0023,
//! "Risk's view reconciled").
//!
//! Orders are funded from [`Funds`](crate::funds::Funds), a copy of settlement's balances kept
//! current from its stream — not from the ledger. A copy that drifted (an event applied twice
//! or skipped, a balance edited behind the ledger's back) would let orders spend money that is
//! not there, or refuse money that is, and nothing else would notice. So, periodically and on
//! request, risk asks settlement for a snapshot of every balance with the outbox position it
//! includes, waits until its own balances include that position, and compares them after
//! rolling the snapshot forward by the movements it applied since ([`Funds::compare`]).
//! Nothing has to stand still for it.
//!
//! A mismatch is logged per balance and counted on `risk_ledger_mismatches`, which pages
//! (`deploy/prometheus/alerts.yml`, runbook `reconciliation-failure.md`).
//!
//! [`Funds::compare`]: crate::funds::Funds::compare

use std::sync::{Arc, Mutex};
use std::time::Duration;

use service_kit::Shutdown;
use service_kit::http::Problem;

use crate::book::Book;
use crate::error::{Error, Result};
use crate::funds::{Compared, Comparison};
use crate::kill_switches::lock;
use crate::ledger_feed;

/// How long a comparison waits for risk's balances to include the snapshot's position: the
/// time the ledger feed takes to read what settlement committed meanwhile, normally a few
/// milliseconds. Longer means the feed is stuck, which its own lag alert reports.
const CATCH_UP: Duration = Duration::from_secs(5);
/// How many mismatched balances one comparison logs (all are counted).
const LOGGED_MISMATCHES: usize = 20;

pub struct Reconciler {
    pub settlement: resilience::Upstream,
    pub book: Arc<Mutex<Book>>,
    /// The position the balances include, as the ledger feed announces it.
    pub positions: tokio::sync::watch::Receiver<Option<i64>>,
}

impl Reconciler {
    /// Compares risk's balances with a fresh snapshot of the ledger; records the outcome.
    #[tracing::instrument(name = "risk ledger reconciliation", skip_all)]
    pub async fn run(&self) -> Result<Compared> {
        let outcome = self.compare().await;
        let label = match &outcome {
            Ok(compared) if compared.mismatches.is_empty() => "ok",
            Ok(_) => "mismatch",
            Err(_) => "not_compared",
        };
        metrics::counter!("risk_ledger_reconciliations_total", "outcome" => label).increment(1);
        if let Ok(compared) = &outcome {
            report(compared);
        }
        outcome
    }

    async fn compare(&self) -> Result<Compared> {
        let ledger = ledger_feed::fetch_snapshot(&self.settlement)
            .await
            .map_err(|error| {
                Error::Problem(Problem::unavailable(
                    "ledger_unavailable",
                    format!("settlement's balances are not available: {error}"),
                    5,
                ))
            })?;
        // Wait until the feed has applied every event the snapshot includes.
        let mut positions = self.positions.clone();
        let caught_up = positions.wait_for(|p| p.is_some_and(|p| p >= ledger.position));
        // The guard `wait_for` returns is dropped at once: it would hold the feed back.
        let waited = tokio::time::timeout(CATCH_UP, caught_up)
            .await
            .map(|seen| seen.map(drop));
        let included = match waited {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(None), // no feed any more: the process is stopping
            Err(_) => Some(*positions.borrow()),
        };
        if let Some(included) = included {
            return Err(behind(included, ledger.position));
        }
        match lock(&self.book)?.funds().compare(&ledger) {
            Comparison::Compared(compared) => Ok(compared),
            Comparison::Outrun { kept_since } => Err(Problem::unavailable(
                "ledger_snapshot_outrun",
                format!(
                    "risk applied too many events after the snapshot's position {} to compare with it (it keeps those after {kept_since}); ask again",
                    ledger.position
                ),
                1,
            )
            .into()),
            Comparison::Behind { included } => Err(behind(included, ledger.position)),
        }
    }

    /// Compares every `interval` until `shutdown`. A comparison that cannot be made (settlement
    /// away, risk still loading) is counted and tried again at the next one.
    pub async fn every(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: let a start load its balances first.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.run().await {
                tracing::warn!(%error, "risk's balances could not be compared with the ledger");
            }
        }
    }
}

/// Risk's balances do not include the snapshot's position (yet).
fn behind(included: Option<i64>, snapshot: i64) -> Error {
    Problem::unavailable(
        "funds_behind",
        format!(
            "risk's balances include {}, not yet the snapshot's position {snapshot}",
            included.map_or_else(
                || "nothing yet (still loading)".to_owned(),
                |p| format!("settlement's events up to {p}")
            ),
        ),
        5,
    )
    .into()
}

fn report(compared: &Compared) {
    // The gauge stays at the last comparison's count until the next one: an alert on it holds
    // for as long as the drift does.
    #[allow(clippy::cast_precision_loss)] // a count of balances, far below 2^52
    metrics::gauge!("risk_ledger_mismatches").set(compared.mismatches.len() as f64);
    for mismatch in compared.mismatches.iter().take(LOGGED_MISMATCHES) {
        tracing::error!(
            account = %mismatch.account,
            asset = %mismatch.asset,
            ledger = %mismatch.ledger,
            risk = mismatch.risk,
            ledger_position = compared.ledger_position,
            risk_position = compared.risk_position,
            "risk's balance differs from the ledger's"
        );
    }
    if compared.mismatches.is_empty() {
        tracing::info!(
            balances = compared.balances,
            ledger_position = compared.ledger_position,
            risk_position = compared.risk_position,
            "risk's balances match the ledger"
        );
    }
}
