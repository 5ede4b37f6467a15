//! The outbox relay: outbox rows → Redis Streams, in order, at least once.
//!
//! One relay per schema publishes at a time: replicas compete for a session advisory lock and
//! the holder publishes while the others wait, so the stream receives events in outbox order.
//! A batch is `XADD`ed and only then stamped published; a crash in between republishes that
//! batch on restart — a duplicate, never a loss. Consumers deduplicate by event id (REL-09).
//!
//! **The broker may forget; the outbox does not.** A row is done when every consumer group of
//! its stream has acknowledged it (`confirmed_at`), not when Redis took it:
//! - Each batch is added by one script that first checks a marker key holding the position of
//!   the last row this schema published. A Redis that restarted empty has no marker; a replica
//!   promoted before it received the last writes has an older one. Either way the script adds
//!   nothing, and the relay marks every published-but-unconfirmed row unpublished again and
//!   carries on — so the lost events go out again *before* anything newer, in outbox order.
//!   An idle relay checks the marker every `confirm_interval` too.
//! - Every second the relay reads each stream's groups (`XINFO GROUPS`, `XPENDING`): rows below
//!   the slowest group's first unacknowledged entry are confirmed, and the stream is trimmed
//!   up to there (`XTRIM MINID`, exact) — never past an entry some group has not acknowledged. Entries
//!   stay at least `stream_keep` for readers without a group (the gateway's live feed).
//!   A stream with no group at all is trimmed by age alone.
//! - Confirmed rows are deleted after `retention`; unconfirmed ones are kept
//!   `unconfirmed_retention` (a stream nobody consumes must not fill the database).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
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
    /// How often consumption is confirmed and streams trimmed.
    pub confirm_interval: Duration,
    /// How long an acknowledged entry stays in its stream, for readers without a group.
    pub stream_keep: Duration,
    /// Confirmed rows older than this are deleted.
    pub retention: Duration,
    /// Published rows no group has confirmed (a stream nobody consumes) are deleted after this.
    pub unconfirmed_retention: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            confirm_interval: Duration::from_secs(1),
            stream_keep: Duration::from_secs(60),
            retention: Duration::from_secs(3600),
            unconfirmed_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Adds a batch to its streams only if the marker still names the last row published (the
/// broker kept everything), then moves the marker on. `KEYS[1]` the marker, `KEYS[2..]` each
/// entry's stream; `ARGV[1]` the expected marker (`""` for none), `ARGV[2]` the new one, then
/// `event_id, type, envelope` per entry. Returns the entry ids.
const PUBLISH_SCRIPT: &str = r#"
local marker = redis.call('GET', KEYS[1]) or ''
if marker ~= ARGV[1] then
  return redis.error_reply('BROKERLOST the stream marker is ' .. marker .. ', expected ' .. ARGV[1])
end
local ids = {}
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 3
  ids[#ids + 1] = redis.call('XADD', KEYS[i], '*',
    'event_id', ARGV[a], 'type', ARGV[a + 1], 'envelope', ARGV[a + 2])
end
redis.call('SET', KEYS[1], ARGV[2])
return ids
"#;

#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    redis: ConnectionManager,
    keys: KeyPrefix,
    schema: &'static str,
    settings: RelaySettings,
    script: redis::Script,
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
            script: redis::Script::new(PUBLISH_SCRIPT),
        }
    }

    /// The key naming the last outbox position of this schema the broker holds.
    fn marker_key(&self) -> String {
        self.keys.key(&["outbox", self.schema, "published"])
    }

    /// Publishes until `shutdown`. Errors are logged and retried: the relay never gives up.
    pub async fn run(self, shutdown: Shutdown) {
        // Born at zero, so a dashboard shows "none yet" rather than "No data".
        metrics::counter!("outbox_republished_total", "schema" => self.schema).increment(0);
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
        // What the broker must hold for this schema; checked (and reconciled) with the first
        // batch.
        let mut marker = self.last_published().await?;
        self.check_marker(&mut marker).await?;
        let mut last_cleanup = tokio::time::Instant::now();
        let mut last_confirm = tokio::time::Instant::now();
        loop {
            // The leader connection must stay alive: a dead one means the lock is gone.
            sqlx::query("SELECT 1").execute(&mut *leader).await?;
            let published = self.publish_batch(&mut marker).await?;
            self.record_lag().await?;
            if last_confirm.elapsed() >= self.settings.confirm_interval {
                self.check_marker(&mut marker).await?;
                self.confirm_and_trim().await?;
                last_confirm = tokio::time::Instant::now();
            }
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                self.delete_expired().await?;
                last_cleanup = tokio::time::Instant::now();
            }
            if published < self.settings.batch_size {
                tokio::select! {
                    () = shutdown.triggered() => return Ok(()),
                    notified = listener.recv() => { notified?; }
                    () = tokio::time::sleep(self.poll_wait()) => {}
                }
            }
        }
    }

    /// Idle waits end in time for the next confirmation.
    fn poll_wait(&self) -> Duration {
        self.settings
            .poll_interval
            .min(self.settings.confirm_interval)
    }

    /// The marker the broker should hold: the position of the last row published, `""` when
    /// none is left in the outbox.
    async fn last_published(&self) -> Result<String, Error> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT max(position) FROM outbox WHERE published_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(position.map(|p| p.to_string()).unwrap_or_default())
    }

    /// Publishes the oldest unpublished rows; returns how many. `marker` is what the broker
    /// should hold; when it does not, nothing is added and every row the groups had not
    /// confirmed is made unpublished again, to go out (again) before anything newer.
    async fn publish_batch(&self, marker: &mut String) -> Result<i64, Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT position, event_id, stream, event_type, envelope FROM outbox
             WHERE published_at IS NULL ORDER BY position LIMIT $1",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&self.pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let next_marker = last.position.to_string();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.marker_key())
            .arg(marker.as_str())
            .arg(&next_marker);
        for row in &rows {
            invocation
                .key(self.keys.stream(&row.stream))
                .arg(row.event_id.to_string())
                .arg(&row.event_type)
                .arg(&row.envelope);
        }
        let mut redis = self.redis.clone();
        let ids: Vec<String> = match invocation.invoke_async(&mut redis).await {
            Ok(ids) => ids,
            Err(err) if err.code() == Some("BROKERLOST") => {
                *marker = self.republish_unconfirmed(&err).await?;
                return Ok(0);
            }
            Err(err) => return Err(err.into()),
        };
        let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
        let (millis, sequences): (Vec<i64>, Vec<i64>) = ids
            .iter()
            .map(|id| parse_entry_id(id).unwrap_or((0, 0)))
            .unzip();
        sqlx::query(
            "UPDATE outbox o SET published_at = now(), entry_ms = e.ms, entry_seq = e.seq
               FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS e(position, ms, seq)
              WHERE o.position = e.position",
        )
        .bind(&positions)
        .bind(&millis)
        .bind(&sequences)
        .execute(&self.pool)
        .await?;
        *marker = next_marker;
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        metrics::counter!("outbox_published_total", "schema" => self.schema)
            .increment(count.unsigned_abs());
        Ok(count)
    }

    /// An idle relay publishes nothing, so it also looks at the marker on its own (and a new
    /// leader before its first batch): a broker that forgot is found even when no new event
    /// comes to find it. A marker *ahead* of the outbox is no loss: the previous leader
    /// published a batch and died before stamping it, and that batch goes out again anyway.
    async fn check_marker(&self, marker: &mut String) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let held: Option<String> = redis.get(self.marker_key()).await?;
        let held = held.unwrap_or_default();
        // Ahead of the outbox: a leader published a batch and died before stamping it — that
        // batch goes out again anyway (at least once), nothing was lost.
        let position = |m: &str| m.parse::<i64>().ok();
        if position(&held) > position(marker) {
            *marker = held;
            return Ok(());
        }
        if held != *marker {
            let lost = redis::RedisError::from((
                redis::ErrorKind::Client,
                "the stream marker is gone or behind",
                format!("held {held:?}, expected {marker:?}"),
            ));
            *marker = self.republish_unconfirmed(&lost).await?;
        }
        Ok(())
    }

    /// The broker lost entries of this schema: every published row no group had confirmed is
    /// unpublished again, and the marker is reset to what is still confirmed. Returns the new
    /// marker.
    async fn republish_unconfirmed(&self, lost: &redis::RedisError) -> Result<String, Error> {
        let republished = sqlx::query(
            "UPDATE outbox SET published_at = NULL, entry_ms = NULL, entry_seq = NULL
              WHERE published_at IS NOT NULL AND confirmed_at IS NULL",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        let marker = self.last_published().await?;
        let mut redis = self.redis.clone();
        let _: () = redis.set(self.marker_key(), &marker).await?;
        tracing::warn!(schema = self.schema, republished, cause = %lost,
            "the broker lost published events; publishing every unconfirmed one again");
        metrics::counter!("outbox_republished_total", "schema" => self.schema)
            .increment(republished);
        Ok(marker)
    }

    /// Confirms what every group of each stream has acknowledged and trims the streams up to
    /// there (REL-08: retention follows the consumers, never runs ahead of them).
    async fn confirm_and_trim(&self) -> Result<(), Error> {
        let streams: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT stream FROM outbox
              WHERE published_at IS NOT NULL AND confirmed_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        for stream in streams {
            let key = self.keys.stream(&stream);
            let keep_from = (unix_millis_ago(self.settings.stream_keep), 0);
            let acknowledged = self.acknowledged_below(&key).await?;
            if let Some((ms, seq)) = acknowledged {
                sqlx::query(
                    "UPDATE outbox SET confirmed_at = now()
                      WHERE stream = $1 AND published_at IS NOT NULL AND confirmed_at IS NULL
                        AND (entry_ms, entry_seq) < ($2, $3)",
                )
                .bind(&stream)
                .bind(ms)
                .bind(seq)
                .execute(&self.pool)
                .await?;
            }
            let (ms, seq) = acknowledged.map_or(keep_from, |bound| bound.min(keep_from));
            let mut redis = self.redis.clone();
            let _: i64 = redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(format!("{ms}-{seq}"))
                .query_async(&mut redis)
                .await?;
        }
        let unconfirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND confirmed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("outbox_unconfirmed_events", "schema" => self.schema)
            .set(unconfirmed as f64);
        Ok(())
    }

    /// The first entry id some group of stream `key` has not acknowledged: every entry below it
    /// is acknowledged by every group. `None` when the stream has no group (or no stream).
    async fn acknowledged_below(&self, key: &str) -> Result<Option<(i64, i64)>, Error> {
        let mut redis = self.redis.clone();
        let exists: bool = redis.exists(key).await?;
        if !exists {
            return Ok(None);
        }
        let info: StreamInfoGroupsReply = redis.xinfo_groups(key).await?;
        let mut bound: Option<(i64, i64)> = None;
        for group in info.groups {
            let group_bound = if group.pending > 0 {
                let pending: StreamPendingReply = redis.xpending(key, &group.name).await?;
                match pending {
                    StreamPendingReply::Data(data) => parse_entry_id(&data.start_id),
                    _ => None,
                }
            } else {
                None
            };
            // Nothing pending: everything up to the last entry delivered is acknowledged.
            let group_bound = group_bound.or_else(|| {
                parse_entry_id(&group.last_delivered_id)
                    .map(|(ms, seq)| (ms, seq.saturating_add(1)))
            });
            let Some(group_bound) = group_bound else {
                continue;
            };
            bound = Some(bound.map_or(group_bound, |b: (i64, i64)| b.min(group_bound)));
        }
        Ok(bound)
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
        sqlx::query(
            // The last published row stays: it is what the broker's marker names.
            "DELETE FROM outbox
              WHERE published_at < now() - make_interval(secs => $1)
                AND (confirmed_at IS NOT NULL OR published_at < now() - make_interval(secs => $2))
                AND position < (SELECT max(position) FROM outbox WHERE published_at IS NOT NULL)",
        )
        .bind(self.settings.retention.as_secs_f64())
        .bind(self.settings.unconfirmed_retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A stream entry id `<ms>-<seq>` as numbers (they compare as ids do). Both fit `bigint`:
/// milliseconds since 1970, and a sequence that restarts every millisecond.
fn parse_entry_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Milliseconds since the epoch `ago` before now: the stream entry id time of that moment.
fn unix_millis_ago(ago: Duration) -> i64 {
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_compare_as_redis_orders_them() {
        assert_eq!(
            parse_entry_id("1700000000000-5"),
            Some((1_700_000_000_000, 5))
        );
        assert!(
            parse_entry_id("1-10") > parse_entry_id("1-9"),
            "numeric, not textual"
        );
        assert!(parse_entry_id("2-0") > parse_entry_id("1-99"));
        assert_eq!(parse_entry_id("garbage"), None);
    }
}
