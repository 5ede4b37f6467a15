//! Escalation (ALR-05): an alert still firing — not acknowledged, not resolved, not silenced —
//! `escalate_after_seconds` after it first fired is sent to its rule's `escalate_to` channels,
//! once. Every replica may run this job: the alert is marked escalated in the statement that
//! selects it, so no two replicas escalate the same alert.

use std::sync::Arc;
use std::time::Duration;

use service_kit::Shutdown;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::error::Result;
use crate::store;

/// Escalates what is due; how many alerts escalated.
pub async fn escalate_due(pool: &PgPool) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let due = store::take_due_escalations(&mut tx).await?;
    for (alert, channels) in &due {
        store::enqueue(&mut tx, *alert, channels, "escalation").await?;
        tracing::warn!(alert_id = %alert, ?channels, "alert escalated: unacknowledged");
    }
    tx.commit().await?;
    metrics::counter!("alerts_escalated_total").increment(due.len() as u64);
    Ok(due.len())
}

/// The periodic job.
pub async fn every(pool: PgPool, interval: Duration, wake: Arc<Notify>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => match escalate_due(&pool).await {
                Ok(0) => {}
                Ok(_) => wake.notify_one(),
                Err(err) => tracing::warn!(error = %err, "escalation could not run"),
            },
            () = shutdown.triggered() => break,
        }
    }
}
