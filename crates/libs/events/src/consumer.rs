//! Consuming a stream exactly once in effect (REL-09, REL-10).
//!
//! A consumer group reads the stream. For each entry, the handler's effect and an inbox row
//! (consumer, event id) commit in one transaction, and the entry is acknowledged only after
//! that commit: a redelivered event finds its inbox row and has no second effect; a crash
//! before the commit leaves nothing behind and the entry is delivered again.
//!
//! On start the consumer re-reads its own pending entries (what it had received but not
//! acknowledged before it stopped). Entries left pending too long — by a dead consumer, or by
//! a failed attempt of our own — are claimed with `XAUTOCLAIM` and retried. After
//! `max_deliveries` an entry moves to `<stream>.dlq`, an `EventDeadLettered` ops event is
//! written, and the original is acknowledged; `bourse admin dlq` lists and replays them.
//!
//! Handlers run inside the event's context: its correlation id and trace continue, so events
//! they write carry them on (OBS-02, OBS-06).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingCountReply,
    StreamReadOptions, StreamReadReply,
};
use service_kit::Shutdown;
use service_kit::http::RequestContext;
use service_kit::redis::KeyPrefix;
use service_kit::telemetry::TraceContext;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;

use crate::envelope::Envelope;
use crate::{Error, outbox};

/// The logical stream dead-letter notices go to.
pub const OPS_STREAM: &str = "ops";

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

/// Applies one event. Runs inside the consumer's transaction; an `Err` rolls it back and the
/// event is retried later.
pub trait Handler: Send + Sync {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), String>>;

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

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Deliveries before an entry is dead-lettered.
    pub max_deliveries: usize,
    /// How long an entry stays pending before it is claimed and retried.
    pub retry_after: Duration,
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
        }
    }
}

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

    /// Consumes until `shutdown`; errors are logged and retried.
    pub async fn run(self, handler: Arc<dyn Handler>, shutdown: Shutdown) {
        let mut recovered = false;
        loop {
            let step = async {
                if !recovered {
                    self.ensure_group().await?;
                    self.process_own_pending(handler.as_ref()).await?;
                    recovered = true;
                }
                self.claim_stale(handler.as_ref()).await?;
                self.read_new(handler.as_ref()).await
            };
            let result = tokio::select! {
                () = shutdown.triggered() => return,
                result = step => result,
            };
            if let Err(err) = result {
                tracing::warn!(stream = %self.stream, error = %err, "consumer interrupted; retrying");
                tokio::select! {
                    () = shutdown.triggered() => return,
                    () = tokio::time::sleep(self.settings.retry_after) => {}
                }
            }
        }
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

    /// What this consumer received but never acknowledged (it stopped or crashed).
    async fn process_own_pending(&self, handler: &dyn Handler) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(self.settings.batch);
        let reply: StreamReadReply = redis.xread_options(&[self.key()], &["0"], &options).await?;
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            self.process(handler, entry).await?;
        }
        Ok(())
    }

    /// Entries pending longer than `retry_after`: a dead consumer's, or our own failed ones.
    async fn claim_stale(&self, handler: &dyn Handler) -> Result<(), Error> {
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
            self.process(handler, entry).await?;
        }
        Ok(())
    }

    async fn read_new(&self, handler: &dyn Handler) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let block = usize::try_from(self.settings.block.as_millis()).unwrap_or(usize::MAX);
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(self.settings.batch)
            .block(block);
        let reply: Option<StreamReadReply> =
            redis.xread_options(&[self.key()], &[">"], &options).await?;
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if !entries.is_empty() {
            self.process_batch(handler, entries).await?;
        }
        Ok(())
    }

    /// New entries, read for the first time: all their effects and inbox rows commit in one
    /// transaction and are acknowledged with one `XACK` — one commit (one WAL flush) per
    /// batch instead of per event. If any event of the batch fails, the batch is rolled back
    /// and its events are applied one by one, so one bad event holds back no other.
    async fn process_batch(
        &self,
        handler: &dyn Handler,
        entries: Vec<StreamId>,
    ) -> Result<(), Error> {
        let mut acknowledge: Vec<String> = Vec::with_capacity(entries.len());
        let mut batch: Vec<(String, Envelope)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let event_type: Option<String> = entry.get("type");
            if event_type.is_some_and(|t| !handler.wants(&t)) {
                acknowledge.push(entry.id);
                continue;
            }
            let raw: Option<String> = entry.get("envelope");
            match raw
                .as_deref()
                .and_then(|r| serde_json::from_str::<Envelope>(r).ok())
            {
                Some(envelope) => batch.push((entry.id, envelope)),
                None => self.dead_letter(&entry, "malformed envelope", 1).await?,
            }
        }
        if !batch.is_empty() {
            match self.apply_batch(handler, &batch).await {
                Ok(fresh) => {
                    for envelope in fresh {
                        handler.committed(envelope);
                    }
                    acknowledge.extend(batch.iter().map(|(id, _)| id.clone()));
                }
                Err(reason) => {
                    tracing::debug!(%reason, size = batch.len(), "batch failed; applying its events one by one");
                    for (id, envelope) in &batch {
                        match self.apply_in_context(handler, envelope).await {
                            Ok(()) => acknowledge.push(id.clone()),
                            // Left pending: retried after `retry_after`, dead-lettered after
                            // too many tries.
                            Err(reason) => {
                                tracing::warn!(event_id = %envelope.id, %reason, "event handler failed");
                                metrics::counter!("events_handler_failures_total", "stream" => self.stream.clone())
                                    .increment(1);
                            }
                        }
                    }
                }
            }
        }
        if !acknowledge.is_empty() {
            let mut redis = self.redis.clone();
            let _: usize = redis.xack(self.key(), &self.group, &acknowledge).await?;
        }
        Ok(())
    }

    /// [`Self::apply`] inside the event's own context: its correlation id and trace continue.
    async fn apply_in_context(
        &self,
        handler: &dyn Handler,
        envelope: &Envelope,
    ) -> Result<(), String> {
        within_event(envelope, &self.stream, self.apply(handler, envelope)).await
    }

    /// Every event of `batch` with its inbox row in one transaction; the fresh ones (not seen
    /// before) are returned once it has committed.
    async fn apply_batch<'b>(
        &self,
        handler: &dyn Handler,
        batch: &'b [(String, Envelope)],
    ) -> Result<Vec<&'b Envelope>, String> {
        let result: Result<Vec<&Envelope>, Error> = async {
            let mut tx = self.pool.begin().await?;
            let mut fresh = Vec::with_capacity(batch.len());
            for (_, envelope) in batch {
                if !self.claim_inbox(&mut tx, envelope).await? {
                    metrics::counter!("events_duplicates_total", "stream" => self.stream.clone())
                        .increment(1);
                    continue;
                }
                within_event(envelope, &self.stream, handler.handle(&mut tx, envelope))
                    .await
                    .map_err(Error::Handler)?;
                fresh.push(envelope);
            }
            tx.commit().await?;
            metrics::counter!("events_applied_total", "stream" => self.stream.clone())
                .increment(fresh.len() as u64);
            metrics::histogram!("events_batch_size", "stream" => self.stream.clone())
                .record(batch.len() as f64);
            Ok(fresh)
        }
        .await;
        result.map_err(|e| e.to_string())
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

    async fn process(&self, handler: &dyn Handler, entry: StreamId) -> Result<(), Error> {
        let event_type: Option<String> = entry.get("type");
        if let Some(event_type) = event_type
            && !handler.wants(&event_type)
        {
            let mut redis = self.redis.clone();
            let _: usize = redis.xack(self.key(), &self.group, &[&entry.id]).await?;
            return Ok(());
        }
        let raw: Option<String> = entry.get("envelope");
        let Some(envelope) = raw
            .as_deref()
            .and_then(|r| serde_json::from_str::<Envelope>(r).ok())
        else {
            return self.dead_letter(&entry, "malformed envelope", 1).await;
        };
        let deliveries = self.deliveries(&entry.id).await?;
        if deliveries > self.settings.max_deliveries {
            return self
                .dead_letter(&entry, "too many failed deliveries", deliveries)
                .await;
        }
        match self.apply_in_context(handler, &envelope).await {
            Ok(()) => {
                let mut redis = self.redis.clone();
                let _: usize = redis.xack(self.key(), &self.group, &[&entry.id]).await?;
                Ok(())
            }
            // Left pending: retried after `retry_after`, dead-lettered after too many tries.
            Err(reason) => {
                tracing::warn!(event_id = %envelope.id, deliveries, %reason, "event handler failed");
                metrics::counter!("events_handler_failures_total", "stream" => self.stream.clone())
                    .increment(1);
                Ok(())
            }
        }
    }

    /// Effect + inbox row in one transaction; a known event is a no-op.
    async fn apply(&self, handler: &dyn Handler, envelope: &Envelope) -> Result<(), String> {
        let result: Result<(), Error> = async {
            let mut tx = self.pool.begin().await?;
            let fresh = self.claim_inbox(&mut tx, envelope).await?;
            if fresh {
                if let Err(reason) = handler.handle(&mut tx, envelope).await {
                    return Err(Error::Handler(reason));
                }
                metrics::counter!("events_applied_total", "stream" => self.stream.clone())
                    .increment(1);
            } else {
                metrics::counter!("events_duplicates_total", "stream" => self.stream.clone())
                    .increment(1);
            }
            tx.commit().await?;
            if fresh {
                handler.committed(envelope);
            }
            Ok(())
        }
        .await;
        result.map_err(|e| e.to_string())
    }

    async fn dead_letter(
        &self,
        entry: &StreamId,
        reason: &str,
        deliveries: usize,
    ) -> Result<(), Error> {
        let fields: HashMap<&str, Option<String>> = ["event_id", "type", "envelope"]
            .into_iter()
            .map(|f| (f, entry.get(f)))
            .collect();
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
            .arg(fields["event_id"].clone().unwrap_or_default())
            .arg("type")
            .arg(fields["type"].clone().unwrap_or_default())
            .arg("envelope")
            .arg(fields["envelope"].clone().unwrap_or_default())
            .query_async(&mut redis)
            .await?;
        let notice = Envelope::new(
            &self.producer,
            "EventDeadLettered",
            1,
            fields["event_id"].clone().unwrap_or_default(),
            0,
            serde_json::json!({
                "stream": self.stream, "group": self.group, "entry_id": entry.id,
                "event_id": fields["event_id"], "event_type": fields["type"],
                "reason": reason, "deliveries": deliveries,
            }),
        );
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
    let context = RequestContext {
        request_id: envelope.correlation_id.clone(),
        trace: TraceContext::child_of(TraceContext::parse(envelope.traceparent.as_deref())),
    };
    service_kit::http::observe::within(Some(context), work.instrument(span)).await
}
