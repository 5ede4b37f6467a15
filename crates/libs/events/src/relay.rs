//! The outbox relay: outbox rows → Redis Streams, in order, at least once.
//!
//! One relay per schema publishes at a time: replicas compete for a session advisory lock and
//! the holder publishes while the others wait, so the stream receives events in outbox order.
//! A batch is `XADD`ed and only then stamped published; a crash in between republishes that
//! batch on restart — a duplicate, never a loss. Consumers deduplicate by event id (REL-09).

use std::time::Duration;

use redis::aio::ConnectionManager;
use service_kit::Shutdown;
use service_kit::redis::KeyPrefix;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};

use crate::Error;

/// An arbitrary constant naming "outbox relays"; the second half of the lock key is the
/// schema's hash, so each schema's relays compete only with each other — services sharing a
/// database (as in `bourse serve all`) each get their own leader.
const LEADER_LOCK: i32 = 736_812_503;

#[derive(Clone, Debug)]
pub struct RelaySettings {
    pub batch_size: i64,
    /// How long to wait for a notification before looking anyway (and between leadership tries).
    pub poll_interval: Duration,
    /// Approximate cap on each stream's length (`XADD MAXLEN ~`).
    pub stream_max_len: usize,
    /// Published rows older than this are deleted.
    pub retention: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            stream_max_len: 1_000_000,
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct Relay {
    pool: PgPool,
    redis: ConnectionManager,
    keys: KeyPrefix,
    schema: &'static str,
    settings: RelaySettings,
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    event_id: uuid::Uuid,
    stream: String,
    event_type: String,
    envelope: String,
}

impl Relay {
    /// `pool` must be bound to `schema` (the producing service's pool).
    pub fn new(
        pool: PgPool,
        redis: ConnectionManager,
        keys: KeyPrefix,
        schema: &'static str,
        settings: RelaySettings,
    ) -> Self {
        Self {
            pool,
            redis,
            keys,
            schema,
            settings,
        }
    }

    /// Publishes until `shutdown`. Errors are logged and retried: the relay never gives up.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            let outcome = tokio::select! {
                () = shutdown.triggered() => return,
                outcome = self.lead(&shutdown) => outcome,
            };
            if let Err(err) = outcome {
                tracing::warn!(schema = self.schema, error = %err, "outbox relay interrupted; retrying");
            }
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Waits to become the publishing relay, then publishes while leadership lasts.
    async fn lead(&self, shutdown: &Shutdown) -> Result<(), Error> {
        // Detached from the pool: the session advisory lock lives as long as this connection,
        // and a relay task that dies must take the lock with it. A pooled connection would go
        // back to the pool still holding the lock and block every other relay.
        let mut leader = self.pool.acquire().await?.detach();
        loop {
            let acquired: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(LEADER_LOCK)
                    .bind(self.schema)
                    .fetch_one(&mut leader)
                    .await?;
            if acquired {
                break;
            }
            tokio::select! {
                () = shutdown.triggered() => return Ok(()),
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!(schema = self.schema, "outbox relay leading");
        let result = self.publish_until(shutdown, &mut leader).await;
        // Closing the session releases the lock.
        let _ = sqlx::Connection::close(leader).await;
        result
    }

    async fn publish_until(
        &self,
        shutdown: &Shutdown,
        leader: &mut PgConnection,
    ) -> Result<(), Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&format!("{}_outbox", self.schema)).await?;
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            // The leader connection must stay alive: a dead one means the lock is gone.
            sqlx::query("SELECT 1").execute(&mut *leader).await?;
            let published = self.publish_batch().await?;
            self.record_lag().await?;
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                self.delete_expired().await?;
                last_cleanup = tokio::time::Instant::now();
            }
            if published < self.settings.batch_size {
                tokio::select! {
                    () = shutdown.triggered() => return Ok(()),
                    notified = listener.recv() => { notified?; }
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            }
        }
    }

    /// Publishes the oldest unpublished rows; returns how many.
    async fn publish_batch(&self) -> Result<i64, Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT position, event_id, stream, event_type, envelope FROM outbox
             WHERE published_at IS NULL ORDER BY position LIMIT $1",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for row in &rows {
            pipe.add_command(crate::envelope::xadd(
                &self.keys.stream(&row.stream),
                Some(self.settings.stream_max_len),
                &row.event_id.to_string(),
                &row.event_type,
                &row.envelope,
            ))
            .ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE position = ANY($1)")
            .bind(&positions)
            .execute(&self.pool)
            .await?;
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        metrics::counter!("outbox_published_total", "schema" => self.schema)
            .increment(count.unsigned_abs());
        Ok(count)
    }

    /// Outbox lag (OBS-03): how many events wait, and how long the oldest has waited.
    async fn record_lag(&self) -> Result<(), Error> {
        let (waiting, oldest_secs): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("outbox_unpublished_events", "schema" => self.schema).set(waiting as f64);
        metrics::gauge!("outbox_oldest_unpublished_age_seconds", "schema" => self.schema)
            .set(oldest_secs.unwrap_or(0.0));
        Ok(())
    }

    async fn delete_expired(&self) -> Result<(), Error> {
        sqlx::query("DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)")
            .bind(self.settings.retention.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
