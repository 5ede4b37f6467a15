//! Consuming a stream exactly once in effect (REL-09, REL-10).
//!
//! A consumer group reads the stream. For each entry, the handler's effect and an inbox row
//! (consumer, event id) commit in one transaction, and the entry is acknowledged only after
//! that commit: a redelivered event finds its inbox row and has no second effect; a crash
//! before the commit leaves nothing behind and the entry is delivered again.
//!
//! On start, and again after any failed step, the consumer re-reads its own pending entries
//! (what it had received but not acknowledged) before it reads anything new. After a restart
//! those are what it held when it stopped; after a failure they may be the entries of a read
//! whose answer never came back — a read that timed out while Redis stalled still runs once
//! Redis resumes and hands its entries to this consumer — and reading on from `>` would apply
//! the entries after them first. Entries left pending too long — by a dead consumer, or by a
//! failed attempt of our own — are claimed with `XAUTOCLAIM` and retried; the consumer looks
//! for them once a second, not on every read.
//!
//! Failures are told apart ([`HandlerError`]). A transient one — the database or Redis away,
//! a serialization failure — is retried in place with capped, jittered backoff for as long as
//! it takes: the entry stays this consumer's, no delivery is counted, nothing is dead-lettered
//! because a dependency was down. A permanent one leaves the entry pending for another try;
//! when it fails permanently on its `max_deliveries`-th delivery it moves to `<stream>.dlq`, an
//! `EventDeadLettered` ops event is written, and the original is acknowledged; `bourse admin
//! dlq` lists and replays them. A handler that panics fails permanently.
//!
//! The broker may forget: when Redis restarts empty, the group (and the stream) are gone and
//! every read answers `NOGROUP`. The consumer then creates them again and carries on; the
//! outbox relay publishes again what no group had confirmed ([`crate::relay`]), and the inbox
//! turns the duplicates into no-ops. How far a group is behind is exported as
//! `events_consumer_lag` (entries not yet delivered plus delivered but unacknowledged).
//!
//! An inbox row is kept for `inbox_retention` (a week), then the consumer deletes it: once a
//! minute, a chunk at a time, by its primary key (event ids are UUIDv7, time first). That bounds
//! how late a copy of an event may arrive and still be known; `dlq::replay` refuses dead letters
//! older than that (ADR 0028).
//!
//! Handlers run inside the event's context: its correlation id and trace continue, so events
//! they write carry them on (OBS-02, OBS-06).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamInfoGroupsReply, StreamPendingCountReply,
    StreamReadOptions,
};
use service_kit::Shutdown;
use service_kit::backoff::Backoff;
use service_kit::http::RequestContext;
use service_kit::redis::KeyPrefix;
use service_kit::telemetry::TraceContext;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::entry::{Entry, StreamEntries};
use crate::envelope::{Envelope, first_id_within};
use crate::failure::HandlerError;
use crate::{Error, outbox};

/// The logical stream dead-letter notices go to.
pub const OPS_STREAM: &str = "ops";

/// How often a consumer exports its group's lag.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a consumer goes without looking for stale pending entries. An entry becomes
/// stale only `retry_after` after its delivery, so looking on every read (hundreds of times a
/// second under load, each an `XAUTOCLAIM` round trip that finds nothing) buys nothing; a
/// stale entry now waits at most this long past its `retry_after`.
const CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// How often a consumer deletes the inbox rows past their retention.
const INBOX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The most inbox rows one sweep deletes in one statement: a backlog (the first sweep after a
/// long pause) is worked off a chunk per step, between batches, instead of in one long
/// transaction that holds the consumer up.
const INBOX_SWEEP_CHUNK: i64 = 5_000;

/// A connection for one consumer alone. Its `XREADGROUP … BLOCK` holds the connection for
/// the whole wait, so on a shared connection every other command of the service — the relay's
/// `XADD`s, a rate limiter's scripts — would queue behind each wait.
pub async fn own_connection(
    common: &service_kit::CommonConfig,
) -> Result<ConnectionManager, Error> {
    Ok(service_kit::redis::connect(common).await?)
}

/// This replica's name in a consumer group: the host name (a pod's name) where there is one,
/// so a restarted replica re-reads its own pending entries first; else `<service>-1`.
pub fn replica_name(service: &str) -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("{service}-1"))
}

/// Applies events. Runs inside the consumer's transaction; an `Err` rolls it back, and what
/// happens next depends on its kind ([`HandlerError`]).
///
/// One transaction may carry many events (a batch). A handler can gather its work over them in
/// [`Handler::Deferred`] and write it in [`Handler::finish`], right before the commit —
/// settlement and risk read every event first and write the batch with one statement per kind
/// of write, settlement's account balances last, so the rows every transaction touches are
/// locked for the last statement only instead of the whole batch. `finish` runs outside any one
/// event's context: what it writes on an event's behalf names its cause (`caused_by`).
pub trait Handler: Send + Sync + 'static {
    /// What [`Handler::handle`] gathers over one transaction for [`Handler::finish`]; `()` for
    /// a handler that writes as it goes.
    type Deferred: Default + Send;

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut Self::Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;

    /// Writes what the transaction's events deferred; runs once per transaction, after its
    /// last event, and its failure rolls the whole transaction back.
    fn finish<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        deferred: Self::Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        drop(deferred);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether this handler acts on events of `event_type`. Others are acknowledged unread:
    /// no transaction, no inbox row — a consumer of a busy stream pays only for what it uses.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    /// Called once the event's transaction has committed (never for a duplicate): where a
    /// handler updates in-memory state derived from what it wrote, so memory never runs ahead
    /// of the database. A crash before it runs loses nothing — state is rebuilt from the
    /// database on start.
    fn committed(&self, _event: &Envelope) {}
}

/// A week: longer than any outage a consumer is expected to come back from with its pending
/// entries, and the window in which a dead letter can still be replayed.
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// The delivery on which an entry that fails permanently is dead-lettered.
    pub max_deliveries: usize,
    /// How long an entry stays pending before it is claimed and retried.
    pub retry_after: Duration,
    /// The longest wait between two attempts while a dependency is away (full jitter, doubling
    /// from 50 ms up to this).
    pub max_backoff: Duration,
    /// After a batch smaller than `batch`, how long to let entries gather before reading again.
    /// Each batch costs a fixed handful of round trips and a commit whatever its size, so under
    /// load a consumer that reads the moment anything arrives spends most of its work on tiny
    /// batches. An idle consumer still gets the next entry at once (its read blocks); what
    /// follows waits at most this long. Zero reads again at once.
    pub linger: Duration,
    /// How long an applied event's inbox row is kept. A copy of the event delivered later than
    /// this would be applied again, so it must outlast every way a copy can come: a pending
    /// entry re-read after an outage, the relay publishing again what a lost broker had not
    /// confirmed (up to the relay's `unconfirmed_retention`, a day), a dead letter replayed
    /// ([`crate::dlq::replay`] refuses events older than this).
    pub inbox_retention: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch: 100,
            // Well under the connection's 500 ms response timeout (`service_kit::redis`):
            // a block as long as the timeout makes idle reads fail as timeouts.
            block: Duration::from_millis(200),
            max_deliveries: 5,
            retry_after: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            // Settlement finality's budget is 250 ms at p99 (docs/design.md §6); this spends
            // a few percent of it to let batches grow (docs/performance.md, "Consumers that
            // let entries gather").
            linger: Duration::from_millis(10),
            inbox_retention: DEFAULT_INBOX_RETENTION,
        }
    }
}

#[derive(Clone)]
pub struct Consumer {
    pool: PgPool,
    redis: ConnectionManager,
    keys: KeyPrefix,
    /// Logical stream name (`orders`); the Redis key is `<prefix>.orders`.
    stream: String,
    group: String,
    /// This replica's name within the group.
    name: String,
    producer: String,
    settings: ConsumerSettings,
}

impl Consumer {
    /// `pool` is the consuming service's pool (its schema holds the inbox and the outbox);
    /// `redis` a connection of this consumer's own ([`own_connection`]: its reads block);
    /// `group` names the consuming service, `name` this replica.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        redis: ConnectionManager,
        keys: KeyPrefix,
        stream: &str,
        group: &str,
        name: &str,
        producer: &str,
        settings: ConsumerSettings,
    ) -> Self {
        Self {
            pool,
            redis,
            keys,
            stream: stream.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
            producer: producer.to_owned(),
            settings,
        }
    }

    fn key(&self) -> String {
        self.keys.stream(&self.stream)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(50),
            cap: self.settings.max_backoff,
        }
    }

    /// Consumes until `shutdown`. Nothing ends it but `shutdown`: failures are logged and
    /// retried with backoff, a missing group is created again.
    pub async fn run<H: Handler>(self, handler: Arc<H>, shutdown: Shutdown) {
        // Whether the group is known to exist and our own pending entries were re-read since
        // the start or the last failure.
        let mut recovered = false;
        let mut failures: u32 = 0;
        let mut lag_measured = tokio::time::Instant::now();
        // `None`: look on the next step (the first, and after any failure).
        let mut claimed_at: Option<tokio::time::Instant> = None;
        let claim_interval = self.settings.retry_after.min(CLAIM_INTERVAL);
        // `None`: sweep on the next step (the first, and again at once after a full chunk).
        let mut swept_at: Option<tokio::time::Instant> = None;
        // Born at zero, so a dashboard shows "none yet" rather than "No data".
        metrics::counter!("events_dead_lettered_total", "stream" => self.stream.clone())
            .increment(0);
        loop {
            let step = async {
                if !recovered {
                    self.ensure_group().await?;
                    // Exported from the start, not a second in: a dashboard or an alert sees
                    // the lag as soon as the consumer runs.
                    self.record_lag().await?;
                    self.process_own_pending(handler.as_ref()).await?;
                    recovered = true;
                }
                if claimed_at.is_none_or(|at| at.elapsed() >= claim_interval) {
                    self.claim_stale(handler.as_ref()).await?;
                    claimed_at = Some(tokio::time::Instant::now());
                }
                if swept_at.is_none_or(|at| at.elapsed() >= INBOX_SWEEP_INTERVAL) {
                    let deleted = self.sweep_inbox().await?;
                    swept_at = (deleted < INBOX_SWEEP_CHUNK).then(tokio::time::Instant::now);
                }
                let read = self.read_new(handler.as_ref()).await?;
                if (1..self.settings.batch).contains(&read) && !self.settings.linger.is_zero() {
                    tokio::time::sleep(self.settings.linger).await;
                }
                if lag_measured.elapsed() >= LAG_INTERVAL {
                    self.record_lag().await?;
                    lag_measured = tokio::time::Instant::now();
                }
                Ok::<(), Error>(())
            };
            let result = tokio::select! {
                () = shutdown.triggered() => return,
                result = step => result,
            };
            let Err(err) = result else {
                failures = 0;
                continue;
            };
            claimed_at = None;
            // The failed step may have been a read whose entries reached us but whose answer
            // did not: they are ours now, and the next step applies them before anything newer.
            recovered = false;
            if is_missing_group(&err) {
                // The broker lost the stream or the group (a restart without persistence, a
                // failover to a replica that lagged): create them again and go on.
                tracing::warn!(stream = %self.stream, group = %self.group,
                    "consumer group missing; creating it again");
                metrics::counter!("events_consumer_groups_recreated_total",
                    "stream" => self.stream.clone(), "group" => self.group.clone())
                .increment(1);
            } else {
                tracing::warn!(stream = %self.stream, error = %err, transient = err.is_transient(),
                    "consumer interrupted; retrying");
            }
            let delay = self.backoff().delay(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// `events_consumer_lag{stream,group}`: entries the group has not yet been given plus
    /// entries given but not acknowledged (Redis 7's `lag` and `pending` of `XINFO GROUPS`).
    async fn record_lag(&self) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let info: StreamInfoGroupsReply = redis.xinfo_groups(self.key()).await?;
        if let Some(group) = info.groups.iter().find(|g| g.name == self.group) {
            // `lag` is unknown to Redis after some deletions; the pending count still tells.
            let lag = group.lag.unwrap_or(0).saturating_add(group.pending);
            metrics::gauge!("events_consumer_lag", "stream" => self.stream.clone(),
                "group" => self.group.clone())
            .set(lag as f64);
        }
        Ok(())
    }

    /// Deletes up to [`INBOX_SWEEP_CHUNK`] of this consumer's inbox rows past their retention;
    /// returns how many it deleted.
    ///
    /// Event ids are UUIDv7, which begin with their creation time in milliseconds, so "created
    /// before the cutoff" is a range of the inbox's primary key `(consumer, event_id)` and the
    /// inbox needs no index of its own on time. The row's `processed_at` must be past the
    /// cutoff as well: an event the relay published long after it was written (a relay that was
    /// down for days) keeps its row for the full retention from when it was applied.
    async fn sweep_inbox(&self) -> Result<i64, Error> {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM inbox
                 WHERE consumer = $1 AND event_id < $2
                   AND processed_at < now() - make_interval(secs => $3)
                 LIMIT $4))",
        )
        .bind(&self.group)
        .bind(first_id_within(self.settings.inbox_retention))
        .bind(self.settings.inbox_retention.as_secs_f64())
        .bind(INBOX_SWEEP_CHUNK)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let deleted = i64::try_from(deleted).unwrap_or(i64::MAX);
        metrics::counter!("events_inbox_swept_total", "group" => self.group.clone())
            .increment(deleted.unsigned_abs());
        Ok(deleted)
    }

    async fn ensure_group(&self) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        // From the beginning of the stream: a new consumer service sees the whole history.
        let created: redis::RedisResult<()> = redis
            .xgroup_create_mkstream(self.key(), &self.group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// What this consumer received but never acknowledged — it stopped or crashed, or a read's
    /// answer was lost — oldest first, a batch at a time to the end of its pending list. An
    /// entry that fails again stays pending and is passed over here; `XAUTOCLAIM` retries it.
    /// Each re-read counts as a delivery of the entry (towards `max_deliveries`).
    async fn process_own_pending<H: Handler>(&self, handler: &H) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(self.settings.batch);
        let mut after = "0".to_owned();
        loop {
            let reply: StreamEntries = redis
                .xread_options(&[self.key()], &[after.as_str()], &options)
                .await?;
            let entries: Vec<Entry> = reply.into_entries().collect();
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after.clone_from(&last.id);
            for entry in entries {
                self.process(handler, entry).await?;
            }
        }
    }

    /// Entries pending longer than `retry_after`: a dead consumer's, or our own failed ones.
    async fn claim_stale<H: Handler>(&self, handler: &H) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let min_idle = u64::try_from(self.settings.retry_after.as_millis()).unwrap_or(u64::MAX);
        let reply: StreamAutoClaimReply = redis
            .xautoclaim_options(
                self.key(),
                &self.group,
                &self.name,
                min_idle,
                "0-0",
                StreamAutoClaimOptions::default().count(self.settings.batch),
            )
            .await?;
        for entry in reply.claimed {
            self.process(handler, Entry::from(entry)).await?;
        }
        Ok(())
    }

    /// Reads and processes what is new; returns how many entries it read.
    async fn read_new<H: Handler>(&self, handler: &H) -> Result<usize, Error> {
        let mut redis = self.redis.clone();
        let block = usize::try_from(self.settings.block.as_millis()).unwrap_or(usize::MAX);
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(self.settings.batch)
            .block(block);
        let reply: Option<StreamEntries> =
            redis.xread_options(&[self.key()], &[">"], &options).await?;
        let entries: Vec<Entry> = reply
            .into_iter()
            .flat_map(StreamEntries::into_entries)
            .collect();
        let read = entries.len();
        if read > 0 {
            self.process_batch(handler, entries).await?;
        }
        Ok(read)
    }

    /// New entries, read for the first time: all their effects and inbox rows commit in one
    /// transaction and are acknowledged with one `XACK` — one commit (one WAL flush) per
    /// batch instead of per event. If an event of the batch fails permanently, the batch is
    /// rolled back and its events are applied one by one, so one bad event holds back no other.
    async fn process_batch<H: Handler>(
        &self,
        handler: &H,
        entries: Vec<Entry>,
    ) -> Result<(), Error> {
        let mut acknowledge: Vec<String> = Vec::with_capacity(entries.len());
        let mut batch: Vec<(Entry, Envelope)> = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.field("type").is_some_and(|t| !handler.wants(t)) {
                acknowledge.push(entry.id);
                continue;
            }
            match parse(&entry) {
                Some(envelope) => batch.push((entry, envelope)),
                None => self.dead_letter(&entry, "malformed envelope", 1).await?,
            }
        }
        if !batch.is_empty() {
            match self.apply_batch(handler, &batch).await {
                Ok(fresh) => {
                    for envelope in fresh {
                        handler.committed(envelope);
                    }
                    acknowledge.extend(batch.iter().map(|(entry, _)| entry.id.clone()));
                }
                Err(err) => {
                    tracing::debug!(error = %err, size = batch.len(), "batch failed; applying its events one by one");
                    for (entry, envelope) in &batch {
                        self.apply_entry(handler, entry, envelope).await?;
                    }
                }
            }
        }
        self.acknowledge(&acknowledge).await
    }

    async fn acknowledge(&self, ids: &[String]) -> Result<(), Error> {
        if !ids.is_empty() {
            let mut redis = self.redis.clone();
            let _: usize = redis.xack(self.key(), &self.group, ids).await?;
        }
        Ok(())
    }

    /// Runs `attempt` until it succeeds or fails for good: a transient failure (a dependency
    /// away) is retried in place after a jittered, capped backoff, as often as it takes. The
    /// entry stays this consumer's meanwhile and no delivery is counted.
    async fn until_not_transient<T, F, Fut>(&self, mut attempt: F) -> Result<T, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HandlerError>>,
    {
        let mut retry: u32 = 0;
        loop {
            match attempt().await {
                Err(err) if err.is_transient() => {
                    metrics::counter!("events_transient_failures_total", "stream" => self.stream.clone())
                        .increment(1);
                    tracing::warn!(stream = %self.stream, error = %err, retry,
                        "a dependency is unavailable; retrying the event in place");
                    tokio::time::sleep(self.backoff().delay(retry)).await;
                    retry = retry.saturating_add(1);
                }
                outcome => return outcome,
            }
        }
    }

    /// Every event of `batch` with its inbox row in one transaction; the fresh ones (not seen
    /// before) are returned once it has committed. Transient failures are retried in place.
    async fn apply_batch<'b, H: Handler>(
        &self,
        handler: &H,
        batch: &'b [(Entry, Envelope)],
    ) -> Result<Vec<&'b Envelope>, HandlerError> {
        let fresh = self
            .until_not_transient(|| self.apply_batch_once(handler, batch))
            .await?;
        metrics::counter!("events_applied_total", "stream" => self.stream.clone())
            .increment(fresh.len() as u64);
        metrics::histogram!("events_batch_size", "stream" => self.stream.clone())
            .record(batch.len() as f64);
        Ok(fresh)
    }

    async fn apply_batch_once<'b, H: Handler>(
        &self,
        handler: &H,
        batch: &'b [(Entry, Envelope)],
    ) -> Result<Vec<&'b Envelope>, HandlerError> {
        let mut tx = service_kit::db::begin_batch(&self.pool).await?;
        let ids: Vec<Uuid> = batch.iter().map(|(_, envelope)| envelope.id).collect();
        let mut claimed = self.claim_inbox_all(&mut tx, &ids).await?;
        let mut deferred = H::Deferred::default();
        let mut fresh = Vec::with_capacity(batch.len());
        for (_, envelope) in batch {
            // Applied before, or already once in this batch (the relay published it again).
            if !claimed.remove(&envelope.id) {
                metrics::counter!("events_duplicates_total", "stream" => self.stream.clone())
                    .increment(1);
                continue;
            }
            within_event(
                envelope,
                &self.stream,
                guarded(handler, &mut tx, envelope, &mut deferred),
            )
            .await?;
            fresh.push(envelope);
        }
        finish(handler, &mut tx, deferred).await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// Inserts the inbox rows of a batch in one statement; returns the ids that were new (the
    /// others were applied before).
    ///
    /// A plain insert of the ids not found, not `ON CONFLICT DO NOTHING`: a speculative insert
    /// writes one more WAL record per row (its confirmation), on the one table every event of
    /// every consumer passes through (docs/performance.md). The key still guards: should
    /// another consumer hold a row of this batch uncommitted (an entry claimed from a consumer
    /// thought dead, still applying it), the insert waits for it and fails on the key, the batch
    /// rolls back, and its events are applied one by one through [`Self::claim_inbox`], which
    /// skips that event.
    async fn claim_inbox_all(
        &self,
        tx: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, Error> {
        // Each id once: a plain insert of an event published twice within the batch would fail
        // on its own second row.
        let mut distinct = HashSet::with_capacity(ids.len());
        let ids: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| distinct.insert(*id))
            .collect();
        Ok(sqlx::query_scalar(
            "INSERT INTO inbox (consumer, event_id, stream)
             SELECT $1, id, $3 FROM UNNEST($2::uuid[]) AS id
              WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = $1 AND i.event_id = id)
             RETURNING event_id",
        )
        .bind(&self.group)
        .bind(&ids)
        .bind(&self.stream)
        .fetch_all(tx)
        .await?
        .into_iter()
        .collect())
    }

    /// Inserts the inbox row; `false` when the event was applied before.
    async fn claim_inbox(&self, tx: &mut PgConnection, envelope: &Envelope) -> Result<bool, Error> {
        Ok(sqlx::query(
            "INSERT INTO inbox (consumer, event_id, stream) VALUES ($1, $2, $3)
             ON CONFLICT ON CONSTRAINT inbox_pkey DO NOTHING",
        )
        .bind(&self.group)
        .bind(envelope.id)
        .bind(&self.stream)
        .execute(tx)
        .await?
        .rows_affected()
            == 1)
    }

    async fn deliveries(&self, entry_id: &str) -> Result<usize, Error> {
        let mut redis = self.redis.clone();
        let pending: StreamPendingCountReply = redis
            .xpending_count(self.key(), &self.group, entry_id, entry_id, 1)
            .await?;
        Ok(pending.ids.first().map_or(0, |p| p.times_delivered))
    }

    /// An entry read again (our own pending after a restart, or claimed as stale).
    async fn process<H: Handler>(&self, handler: &H, entry: Entry) -> Result<(), Error> {
        if entry.field("type").is_some_and(|t| !handler.wants(t)) {
            return self.acknowledge(std::slice::from_ref(&entry.id)).await;
        }
        let Some(envelope) = parse(&entry) else {
            return self.dead_letter(&entry, "malformed envelope", 1).await;
        };
        self.apply_entry(handler, &entry, &envelope).await
    }

    /// Applies one event and settles its entry: acknowledged once applied; when it failed
    /// permanently, dead-lettered if this was its last allowed delivery, else left pending to
    /// be claimed and tried again after `retry_after` (another replica may still be applying
    /// an event this one depends on).
    async fn apply_entry<H: Handler>(
        &self,
        handler: &H,
        entry: &Entry,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let Err(err) = self.apply_in_context(handler, envelope).await else {
            return self.acknowledge(std::slice::from_ref(&entry.id)).await;
        };
        let deliveries = self.deliveries(&entry.id).await?;
        if deliveries >= self.settings.max_deliveries {
            return self.dead_letter(entry, &err.to_string(), deliveries).await;
        }
        tracing::warn!(event_id = %envelope.id, deliveries, error = %err, "event handler failed");
        metrics::counter!("events_handler_failures_total", "stream" => self.stream.clone())
            .increment(1);
        Ok(())
    }

    /// [`Self::apply`] inside the event's own context: its correlation id and trace continue.
    async fn apply_in_context<H: Handler>(
        &self,
        handler: &H,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        within_event(envelope, &self.stream, self.apply(handler, envelope)).await
    }

    /// Effect + inbox row in one transaction; a known event is a no-op. Transient failures are
    /// retried in place.
    async fn apply<H: Handler>(
        &self,
        handler: &H,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let fresh = self
            .until_not_transient(|| self.apply_once(handler, envelope))
            .await?;
        if fresh {
            metrics::counter!("events_applied_total", "stream" => self.stream.clone()).increment(1);
            handler.committed(envelope);
        } else {
            metrics::counter!("events_duplicates_total", "stream" => self.stream.clone())
                .increment(1);
        }
        Ok(())
    }

    async fn apply_once<H: Handler>(
        &self,
        handler: &H,
        envelope: &Envelope,
    ) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let fresh = self.claim_inbox(&mut tx, envelope).await?;
        if fresh {
            let mut deferred = H::Deferred::default();
            guarded(handler, &mut tx, envelope, &mut deferred).await?;
            finish(handler, &mut tx, deferred).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        reason: &str,
        deliveries: usize,
    ) -> Result<(), Error> {
        let (event_id, event_type) = (entry.field("event_id"), entry.field("type"));
        let mut redis = self.redis.clone();
        let _: String = redis::cmd("XADD")
            .arg(format!("{}.dlq", self.key()))
            .arg("*")
            .arg("source_id")
            .arg(&entry.id)
            .arg("group")
            .arg(&self.group)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(deliveries)
            .arg("event_id")
            .arg(event_id.unwrap_or_default())
            .arg("type")
            .arg(event_type.unwrap_or_default())
            .arg("envelope")
            .arg(entry.field("envelope").unwrap_or_default())
            .query_async(&mut redis)
            .await?;
        let notice = Envelope::of(
            &self.producer,
            event_id.unwrap_or_default(),
            0,
            &contracts::events::EventDeadLettered {
                stream: self.stream.clone(),
                group: self.group.clone(),
                entry_id: entry.id.clone(),
                event_id: event_id.map(str::to_owned),
                event_type: event_type.map(str::to_owned),
                reason: reason.to_string(),
                deliveries: u64::try_from(deliveries).unwrap_or(u64::MAX),
            },
        )?;
        let mut tx = self.pool.begin().await?;
        outbox::append(&mut tx, OPS_STREAM, &notice).await?;
        tx.commit().await?;
        let _: usize = redis.xack(self.key(), &self.group, &[&entry.id]).await?;
        tracing::error!(stream = %self.stream, entry = %entry.id, %reason, "event dead-lettered");
        metrics::counter!("events_dead_lettered_total", "stream" => self.stream.clone())
            .increment(1);
        Ok(())
    }
}

/// The entry's envelope, with its origin; `None` when it has none or it does not parse.
fn parse(entry: &Entry) -> Option<Envelope> {
    let mut envelope = serde_json::from_str::<Envelope>(entry.field("envelope")?).ok()?;
    envelope.origin = crate::envelope::Origin::of_entry(entry);
    Some(envelope)
}

/// Whether a consumer step failed because its group (or the stream) does not exist.
fn is_missing_group(err: &Error) -> bool {
    matches!(err, Error::Redis(err) if err.code() == Some("NOGROUP"))
}

/// Runs the handler; a panic is a permanent failure of this event, not the end of the
/// consumer (the transaction is dropped, so rolled back).
async fn guarded<H: Handler>(
    handler: &H,
    tx: &mut PgConnection,
    envelope: &Envelope,
    deferred: &mut H::Deferred,
) -> Result<(), HandlerError> {
    match AssertUnwindSafe(handler.handle(tx, envelope, deferred))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(HandlerError::permanent(format!(
            "the handler panicked on {} {}",
            envelope.event_type, envelope.id
        ))),
    }
}

/// Runs the handler's end-of-transaction work; a panic fails the transaction permanently, as
/// one in [`guarded`] does.
async fn finish<H: Handler>(
    handler: &H,
    tx: &mut PgConnection,
    deferred: H::Deferred,
) -> Result<(), HandlerError> {
    match AssertUnwindSafe(handler.finish(tx, deferred))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(HandlerError::permanent(
            "the handler panicked finishing a transaction".to_owned(),
        )),
    }
}

/// Runs `work` in the event's context (its request id as correlation, its trace continued) and
/// span, so logs and events it writes carry them on (OBS-02, OBS-06).
async fn within_event<T>(
    envelope: &Envelope,
    stream: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let span = tracing::info_span!(
        "consume", stream = %stream, event_id = %envelope.id, event_type = %envelope.event_type,
        request_id = %envelope.correlation_id,
    );
    // The span continues the event's trace, so an exported trace runs from the request that
    // caused the event into every consumer of it (OBS-02).
    let trace = service_kit::telemetry::bind_span(
        &span,
        TraceContext::parse(envelope.traceparent.as_deref()),
    );
    let context = RequestContext {
        request_id: envelope.correlation_id.clone(),
        trace,
    };
    service_kit::http::observe::within(Some(context), work.instrument(span)).await
}
