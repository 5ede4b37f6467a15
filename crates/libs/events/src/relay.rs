//! The outbox relay: outbox rows → Redis Streams, in order, at least once.
//!
//! One relay per schema publishes at a time: replicas compete for a session advisory lock and
//! the holder publishes while the others wait, so the stream receives events in outbox order.
//! A batch is `XADD`ed and only then recorded published; a crash in between republishes that
//! batch on restart — a duplicate, never a loss. Consumers deduplicate by event id (REL-09).
//!
//! **The broker may forget; the outbox does not.** A row is done when every consumer group of
//! its stream has acknowledged it (it is confirmed), not when Redis took it:
//! - Each batch is added by one script that first checks a marker key holding the position of
//!   the last row this schema published. A Redis that restarted empty has no marker; a replica
//!   promoted before it received the last writes has an older one. Either way the script adds
//!   nothing, and the relay rewinds every stream to what its groups had confirmed and carries
//!   on — so the lost events go out again *before* anything newer, in outbox order. An idle
//!   relay checks the marker every `confirm_interval` too.
//! - Every second the relay reads each stream's groups (`XINFO GROUPS`, `XPENDING`) for the
//!   slowest group's first unacknowledged entry. The newest entry of this outbox below it
//!   carries a position: every row of that stream up to it is confirmed. The stream is trimmed
//!   up to that first unacknowledged entry (`XTRIM MINID`, exact), never past it. Entries stay
//!   at least `stream_keep` for readers without a group (the gateway's live feed). A stream
//!   with no group at all is trimmed by age alone.
//! - Confirmed rows are deleted `retention` after they were written; unconfirmed ones are kept
//!   `unconfirmed_retention` (a stream nobody consumes must not fill the database).
//!
//! **Rows are never updated** (ADR 0024). What is published and what is confirmed are
//! watermarks — `outbox_relay.published_position`, and per stream `outbox_streams`' published
//! and confirmed positions — written once per batch and once per confirmation round. Rows
//! commit in position order and each stream's groups acknowledge a prefix of it, so a position
//! says everything a stamp on each row said, for a write per batch instead of two per event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply, StreamRangeReply};
use service_kit::LastShutdown;
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
    /// How long the leader's session may stay unused before PostgreSQL ends it, and its
    /// leadership with it: a leader whose process was paused gives way after this. A live
    /// leader uses it at least every `poll_interval`, `confirm_interval` and `linger`; the
    /// timeout is raised to four times the longest of them if it is not above that already.
    pub leader_idle_timeout: Duration,
    /// How often consumption is confirmed and streams trimmed.
    pub confirm_interval: Duration,
    /// How long an acknowledged entry stays in its stream, for readers without a group.
    pub stream_keep: Duration,
    /// Confirmed rows older than this are deleted.
    pub retention: Duration,
    /// Published rows no group has confirmed (a stream nobody consumes) are deleted after this.
    pub unconfirmed_retention: Duration,
    /// How often rows past their retention are looked for and deleted.
    pub cleanup_interval: Duration,
    /// After a batch smaller than `batch_size`, how long rows gather before the next read. A
    /// batch costs the same round trips and watermark commit at any size; under load the
    /// relay would otherwise publish every writer's commit on its own. An idle relay still
    /// publishes the next row as soon as it is notified. Zero looks again at once.
    pub linger: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            leader_idle_timeout: Duration::from_secs(5),
            confirm_interval: Duration::from_secs(1),
            stream_keep: Duration::from_secs(60),
            retention: Duration::from_secs(3600),
            unconfirmed_retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            // Every event's consumers wait this much longer at most; under load the relay's
            // batches grow by the writes of this long (docs/performance.md, "Consumers that
            // let entries gather").
            linger: Duration::from_millis(5),
        }
    }
}

/// Adds a batch to its streams only if the marker still names the last row published (the
/// broker kept everything), then moves the marker on. `KEYS[1]` the marker, `KEYS[2..]` each
/// entry's stream; `ARGV[1]` the expected marker (`""` for none), `ARGV[2]` the new one,
/// `ARGV[3]` the outbox's schema, then `position, event_id, type, envelope` per entry.
///
/// Each entry carries its outbox (`outbox`, the schema: several services' outboxes write the
/// `ops` stream) and its `position` there: confirmation reads them back from the entries the
/// groups have acknowledged. Readers of the event ignore both.
const PUBLISH_SCRIPT: &str = r#"
local marker = redis.call('GET', KEYS[1]) or ''
if marker ~= ARGV[1] then
  return redis.error_reply('BROKERLOST the stream marker is ' .. marker .. ', expected ' .. ARGV[1])
end
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 4
  redis.call('XADD', KEYS[i], '*', 'event_id', ARGV[a + 1], 'type', ARGV[a + 2],
    'envelope', ARGV[a + 3], 'outbox', ARGV[3], 'position', ARGV[a])
end
redis.call('SET', KEYS[1], ARGV[2])
return #KEYS - 1
"#;

/// How many entries confirmation reads at a time, walking back from the groups' bound to the
/// newest entry of this outbox (entries of other outboxes and replayed dead letters carry no
/// position of ours).
const CONFIRM_PAGE: usize = 32;

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
    ///
    /// A leading relay told to stop first publishes every row committed before it was told.
    /// It is told only once every other task of its service has ended (its token is a
    /// [`LastShutdown`], which [`service_kit::Supervisor::spawn_last`] hands out), so that is
    /// everything its service wrote: a stopping service's last events reach their consumers
    /// now, not when the next process starts — risk's handover waits for orders' last
    /// acceptances (ADR 0023).
    pub async fn run(self, shutdown: LastShutdown) {
        // Born at zero, so a dashboard shows "none yet" rather than "No data".
        metrics::counter!("outbox_republished_total", "schema" => self.schema).increment(0);
        loop {
            let outcome = self.lead(&shutdown).await;
            if shutdown.is_triggered() {
                if let Err(err) = outcome {
                    tracing::warn!(schema = self.schema, error = %err,
                        "outbox relay stopped before publishing everything; the next leader publishes the rest");
                }
                return;
            }
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
    async fn lead(&self, shutdown: &LastShutdown) -> Result<(), Error> {
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
        // Leadership is this session's lock, held for as long as the session lives — and a
        // process that stops without dying (SIGSTOP, a frozen VM) keeps its socket, so its
        // session would live, and hold the lock, for as long as it is stopped: no relay would
        // publish this outbox. A leader uses its session at least every `poll_interval`, so
        // PostgreSQL ends one idle for `leader_idle_timeout` and the lock goes with it; another
        // relay leads within a `poll_interval` of that.
        sqlx::query("SELECT set_config('idle_session_timeout', $1, false)")
            .bind(self.leader_idle_timeout().as_millis().to_string())
            .execute(&mut leader)
            .await?;
        tracing::info!(schema = self.schema, "outbox relay leading");
        let result = self.publish_until(shutdown, &mut leader).await;
        // Closing the session releases the lock.
        let _ = sqlx::Connection::close(leader).await;
        result
    }

    async fn publish_until(
        &self,
        shutdown: &LastShutdown,
        leader: &mut PgConnection,
    ) -> Result<(), Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&format!("{}_outbox", self.schema)).await?;
        // How far this outbox has published, and what the broker must hold for this schema;
        // checked (and reconciled) before the first batch.
        let mut progress = Progress::new(self.last_published(&mut *leader).await?);
        self.check_marker(&mut *leader, &mut progress).await?;
        self.record_lag(&mut *leader).await?;
        let mut last_cleanup = tokio::time::Instant::now();
        let mut last_confirm = tokio::time::Instant::now();
        loop {
            // Told to stop before this read: every row committed before then is in this batch
            // or an earlier one, so once a batch comes back short there is nothing more to do.
            let stopping = shutdown.is_triggered();
            // Every batch reads and writes on the leader connection: a dead one (the lock is
            // gone with it) fails the batch and ends this leadership.
            let published = self.publish_batch(&mut *leader, &mut progress).await?;
            if stopping && published < self.settings.batch_size {
                return Ok(());
            }
            if last_confirm.elapsed() >= self.settings.confirm_interval {
                // The lag gauges once a round, not once a batch: a gauge scraped every few
                // seconds gains nothing from a read per batch.
                self.record_lag(&mut *leader).await?;
                self.check_marker(&mut *leader, &mut progress).await?;
                self.confirm_and_trim(&mut *leader).await?;
                last_confirm = tokio::time::Instant::now();
            }
            if last_cleanup.elapsed() > self.settings.cleanup_interval {
                self.delete_expired(&mut *leader).await?;
                last_cleanup = tokio::time::Instant::now();
            }
            if published > 0
                && published < self.settings.batch_size
                && !self.settings.linger.is_zero()
            {
                tokio::select! {
                    () = shutdown.triggered() => continue,
                    () = tokio::time::sleep(self.settings.linger) => {}
                }
                // What the writers of that while announced, the next batch reads anyway: their
                // rows committed before their notices came. (Draining only here, before a read —
                // after a read, a notice could be of a row that read missed.)
                while listener.next_buffered().is_some() {}
            } else if published < self.settings.batch_size {
                tokio::select! {
                    () = shutdown.triggered() => {}
                    notified = listener.recv() => { notified?; }
                    () = tokio::time::sleep(self.poll_wait()) => {}
                }
            }
        }
    }

    /// `leader_idle_timeout`, raised to four times the longest a live leader leaves its
    /// session unused (a linger set longer than usual must not end every leadership).
    fn leader_idle_timeout(&self) -> Duration {
        let longest_wait = self.poll_wait().max(self.settings.linger);
        self.settings.leader_idle_timeout.max(longest_wait * 4)
    }

    /// Idle waits end in time for the next confirmation.
    fn poll_wait(&self) -> Duration {
        self.settings
            .poll_interval
            .min(self.settings.confirm_interval)
    }

    /// How far this outbox has published.
    async fn last_published(&self, leader: &mut PgConnection) -> Result<i64, Error> {
        let position = sqlx::query_scalar("SELECT published_position FROM outbox_relay")
            .fetch_one(leader)
            .await?;
        Ok(position)
    }

    /// Publishes the oldest unpublished rows; returns how many. `progress.marker` is what the
    /// broker should hold; when it does not, nothing is added and every stream is rewound to
    /// what its groups had confirmed, to go out (again) before anything newer.
    ///
    /// Unpublished is what the `outbox_unpublished` view says (the migration writes the rule
    /// once): above the published position and, after a rewind, above what the row's stream
    /// has confirmed.
    async fn publish_batch(
        &self,
        leader: &mut PgConnection,
        progress: &mut Progress,
    ) -> Result<i64, Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT position, event_id, stream, event_type, envelope FROM outbox_unpublished
              ORDER BY position LIMIT $1",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *leader)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let next = last.position;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.marker_key())
            .arg(progress.marker.as_str())
            .arg(next.to_string())
            .arg(self.schema);
        // The last position each stream of the batch was given.
        let mut streams: Vec<(&str, i64)> = Vec::new();
        for row in &rows {
            invocation
                .key(self.keys.stream(&row.stream))
                .arg(row.position)
                .arg(row.event_id.to_string())
                .arg(&row.event_type)
                .arg(&row.envelope);
            match streams.iter_mut().find(|(stream, _)| *stream == row.stream) {
                Some((_, position)) => *position = row.position,
                None => streams.push((&row.stream, row.position)),
            }
        }
        let mut redis = self.redis.clone();
        let added: i64 = match invocation.invoke_async(&mut redis).await {
            Ok(added) => added,
            Err(err) if err.code() == Some("BROKERLOST") => {
                self.republish_unconfirmed(leader, progress, &err).await?;
                return Ok(0);
            }
            Err(err) => return Err(err.into()),
        };
        let (names, positions): (Vec<&str>, Vec<i64>) = streams.into_iter().unzip();
        // One statement for the batch's watermarks: the rows themselves are never written.
        sqlx::query(
            "WITH relay AS (UPDATE outbox_relay SET published_position = $1)
             INSERT INTO outbox_streams AS s (stream, published_position)
             SELECT * FROM UNNEST($2::text[], $3::bigint[])
             ON CONFLICT (stream) DO UPDATE SET published_position = EXCLUDED.published_position",
        )
        .bind(next)
        .bind(&names)
        .bind(&positions)
        .execute(&mut *leader)
        .await?;
        progress.advance(next);
        metrics::counter!("outbox_published_total", "schema" => self.schema)
            .increment(added.unsigned_abs());
        Ok(added)
    }

    /// An idle relay publishes nothing, so it also looks at the marker on its own (and a new
    /// leader before its first batch): a broker that forgot is found even when no new event
    /// comes to find it. A marker *ahead* of the outbox is no loss: the previous leader
    /// published a batch and died before recording it, and that batch goes out again anyway.
    async fn check_marker(
        &self,
        leader: &mut PgConnection,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let held: Option<String> = redis.get(self.marker_key()).await?;
        let held = held.unwrap_or_default();
        let position = |m: &str| m.parse::<i64>().ok();
        if position(&held) > position(&progress.marker) {
            progress.marker = held;
            return Ok(());
        }
        if held != progress.marker {
            let lost = redis::RedisError::from((
                redis::ErrorKind::Client,
                "the stream marker is gone or behind",
                format!("held {held:?}, expected {:?}", progress.marker),
            ));
            self.republish_unconfirmed(leader, progress, &lost).await?;
        }
        Ok(())
    }

    /// The broker lost entries of this schema: every stream is rewound to what its groups had
    /// confirmed, the published position to just before the first row left unconfirmed, and
    /// the marker to match — so those rows go out again first, in outbox order.
    async fn republish_unconfirmed(
        &self,
        leader: &mut PgConnection,
        progress: &mut Progress,
        lost: &redis::RedisError,
    ) -> Result<(), Error> {
        let mut tx = sqlx::Connection::begin(&mut *leader).await?;
        let (republished, first): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(o.position)
               FROM outbox_streams s
               JOIN outbox o ON o.stream = s.stream
                            AND o.position > s.confirmed_position
                            AND o.position <= s.published_position",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE outbox_streams SET published_position = confirmed_position
              WHERE published_position > confirmed_position",
        )
        .execute(&mut *tx)
        .await?;
        let published = first.map_or(progress.published, |first| first - 1);
        sqlx::query("UPDATE outbox_relay SET published_position = $1")
            .bind(published)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let marker = Progress::new(published).marker;
        let mut redis = self.redis.clone();
        let _: () = redis.set(self.marker_key(), &marker).await?;
        *progress = Progress::new(published);
        tracing::warn!(schema = self.schema, republished, cause = %lost,
            "the broker lost published events; publishing every unconfirmed one again");
        metrics::counter!("outbox_republished_total", "schema" => self.schema)
            .increment(republished.unsigned_abs());
        Ok(())
    }

    /// Confirms what every group of each stream has acknowledged and trims the streams up to
    /// there (REL-08: retention follows the consumers, never runs ahead of them).
    async fn confirm_and_trim(&self, leader: &mut PgConnection) -> Result<(), Error> {
        let streams: Vec<String> = sqlx::query_scalar(
            "SELECT stream FROM outbox_streams WHERE confirmed_position < published_position",
        )
        .fetch_all(&mut *leader)
        .await?;
        for stream in streams {
            let key = self.keys.stream(&stream);
            let keep_from = (unix_millis_ago(self.settings.stream_keep), 0);
            let acknowledged = self.acknowledged_below(&key).await?;
            if let Some(bound) = acknowledged
                && let Some(position) = self.newest_position_below(&key, bound).await?
            {
                // Never past what was published: after a rewind, a lagging replica may still
                // hold acknowledged entries that are on their way out again.
                sqlx::query(
                    "UPDATE outbox_streams
                        SET confirmed_position = LEAST($2, published_position)
                      WHERE stream = $1 AND confirmed_position < LEAST($2, published_position)",
                )
                .bind(&stream)
                .bind(position)
                .execute(&mut *leader)
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
            "SELECT coalesce(sum(c.n), 0)::bigint FROM outbox_streams s,
                    LATERAL (SELECT count(*) AS n FROM outbox o
                              WHERE o.stream = s.stream
                                AND o.position > s.confirmed_position
                                AND o.position <= s.published_position) c",
        )
        .fetch_one(&mut *leader)
        .await?;
        metrics::gauge!("outbox_unconfirmed_events", "schema" => self.schema)
            .set(unconfirmed as f64);
        Ok(())
    }

    /// The position of this outbox's newest entry in stream `key` below entry id `bound`:
    /// every row of the stream up to it has been acknowledged by every group. `None` when no
    /// entry of ours is left below the bound (trimmed after an earlier round confirmed it).
    async fn newest_position_below(
        &self,
        key: &str,
        bound: (i64, i64),
    ) -> Result<Option<i64>, Error> {
        let mut redis = self.redis.clone();
        let mut end = format!("({}-{}", bound.0, bound.1);
        loop {
            let page: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(CONFIRM_PAGE)
                .query_async(&mut redis)
                .await?;
            let ours = page.ids.iter().find_map(|entry| {
                (entry.get::<String>("outbox").as_deref() == Some(self.schema))
                    .then(|| entry.get::<i64>("position"))
                    .flatten()
            });
            match (ours, page.ids.last()) {
                (Some(position), _) => return Ok(Some(position)),
                (None, Some(oldest)) if page.ids.len() == CONFIRM_PAGE => {
                    end = format!("({}", oldest.id);
                }
                _ => return Ok(None),
            }
        }
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
    async fn record_lag(&self, leader: &mut PgConnection) -> Result<(), Error> {
        let (waiting, oldest_secs): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
               FROM outbox_unpublished",
        )
        .fetch_one(leader)
        .await?;
        metrics::gauge!("outbox_unpublished_events", "schema" => self.schema).set(waiting as f64);
        metrics::gauge!("outbox_oldest_unpublished_age_seconds", "schema" => self.schema)
            .set(oldest_secs.unwrap_or(0.0));
        Ok(())
    }

    /// Deletes published rows past their retention: confirmed ones after `retention`, the
    /// others after `unconfirmed_retention`. Rows are taken in position order up to the first
    /// one still young, so the scan is a range of the primary key, not the whole table. The
    /// newest row always stays: it is how far the outbox has come, which a snapshot reads
    /// ([`crate::outbox::snapshot_position`]).
    async fn delete_expired(&self, leader: &mut PgConnection) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM outbox o USING outbox_streams s
              WHERE s.stream = o.stream
                AND o.position <= s.published_position
                AND o.position < (SELECT max(position) FROM outbox)
                AND o.position < (SELECT coalesce(min(position), 9223372036854775807) FROM outbox
                                   WHERE created_at >= now() - make_interval(secs => $1))
                AND (o.position <= s.confirmed_position
                     OR o.created_at < now() - make_interval(secs => $2))",
        )
        .bind(self.settings.retention.as_secs_f64())
        .bind(self.settings.unconfirmed_retention.as_secs_f64())
        .execute(leader)
        .await?;
        Ok(())
    }
}

/// How far the leader has published, and the marker the broker must hold for it: the same
/// position, except after a previous leader published a batch and died before recording it
/// (the broker is then ahead, and that batch goes out again).
struct Progress {
    published: i64,
    marker: String,
}

impl Progress {
    fn new(published: i64) -> Self {
        let marker = if published == 0 {
            String::new()
        } else {
            published.to_string()
        };
        Self { published, marker }
    }

    fn advance(&mut self, published: i64) {
        *self = Self::new(published);
    }
}

/// A stream entry id `<ms>-<seq>` as numbers (they compare as ids do). Both fit `bigint`:
/// milliseconds since 1970, and a sequence that restarts every millisecond.
fn parse_entry_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Milliseconds since the epoch `ago` before now: the stream entry id time of that moment.
pub(crate) fn unix_millis_ago(ago: Duration) -> i64 {
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
