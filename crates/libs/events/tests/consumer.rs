//! Consumers against real PostgreSQL and Redis: exactly-once effect, recovery, dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use events::consumer::OPS_STREAM;
use events::dlq::Replay;
use events::{Consumer, ConsumerSettings, Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use service_kit::Shutdown;
use service_kit::redis::KeyPrefix;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod common;

use common::{eventually, redis};

const SCHEMA: &str = "consumer";
const GROUP: &str = "ledger";
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records the event; fails its first `failures` attempts.
struct Recorder {
    failures: usize,
    attempts: AtomicUsize,
}

impl Recorder {
    fn new(failures: usize) -> Arc<Self> {
        Arc::new(Self {
            failures,
            attempts: AtomicUsize::new(0),
        })
    }
}

impl Handler for Recorder {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
                .bind(event.id)
                .execute(&mut *tx)
                .await?;
            if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(HandlerError::permanent("not yet"));
            }
            Ok(())
        })
    }
}

fn consumer(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    name: &str,
    max_deliveries: usize,
) -> Consumer {
    consumer_with(
        pool,
        redis,
        prefix,
        name,
        ConsumerSettings {
            batch: 10,
            block: Duration::from_millis(50),
            max_deliveries,
            retry_after: Duration::from_millis(100),
            max_backoff: Duration::from_millis(100),
            linger: Duration::ZERO,
            inbox_retention: events::consumer::DEFAULT_INBOX_RETENTION,
        },
    )
}

/// A consumer of `trades` in the test group with `settings`.
fn consumer_with(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    name: &str,
    settings: ConsumerSettings,
) -> Consumer {
    Consumer::new(
        pool.clone(),
        redis.clone(),
        prefix.clone(),
        "trades",
        GROUP,
        name,
        "test",
        settings,
    )
}

async fn publish(redis: &mut ConnectionManager, prefix: &KeyPrefix, event: &Envelope) -> String {
    events::envelope::xadd(
        &prefix.stream("trades"),
        None,
        &event.id.to_string(),
        &event.event_type,
        &serde_json::to_string(event).unwrap(),
    )
    .query_async(redis)
    .await
    .unwrap()
}

/// Consumer `name` of the group receives the stream's entries and never acknowledges them
/// (a consumer that dies right after reading).
async fn deliver_without_ack(redis: &mut ConnectionManager, prefix: &KeyPrefix, name: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(prefix.stream("trades"))
        .arg(GROUP)
        .arg("0")
        .query_async(redis)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(name)
        .arg("STREAMS")
        .arg(prefix.stream("trades"))
        .arg(">")
        .query_async(redis)
        .await
        .unwrap();
}

fn trade(n: i64) -> Envelope {
    Envelope::new(
        "orders",
        "TradeExecuted",
        1,
        format!("trade-{n}"),
        n,
        serde_json::value::to_raw_value(&serde_json::json!({ "n": n })).unwrap(),
    )
}

/// The event's effect and its inbox row, as a consumer of [`GROUP`] writes them.
async fn apply_as_the_consumer_would(conn: &mut PgConnection, id: Uuid) {
    sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO inbox (consumer, event_id, stream) VALUES ($1, $2, 'trades')")
        .bind(GROUP)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn applied(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM applied WHERE event_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn pending(redis: &mut ConnectionManager, prefix: &KeyPrefix) -> usize {
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(prefix.stream("trades"))
        .arg(GROUP)
        .query_async(redis)
        .await
        .unwrap();
    reply.count()
}

/// Waits until the group has no entry pending: every one read was acknowledged.
async fn until_nothing_pending(redis: &ConnectionManager, prefix: &KeyPrefix, what: &str) {
    eventually(what, || {
        let (mut r, p) = (redis.clone(), prefix.clone());
        async move { pending(&mut r, &p).await == 0 }
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_redelivered_event_has_no_second_effect(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let event = trade(1);
    // The relay's at-least-once: the same event published twice.
    publish(&mut redis, &prefix, &event).await;
    publish(&mut redis, &prefix, &event).await;
    let other = trade(2);
    publish(&mut redis, &prefix, &other).await;

    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("both events applied", || async {
        applied(&pool, other.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "all entries acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(applied(&pool, event.id).await, 1, "exactly once in effect");
}

/// Another consumer is still applying an event of this batch (it claimed the entry from a
/// consumer it thought dead): its inbox row is written and not yet committed. The batch's
/// insert waits for it, and once it commits the event is not applied a second time — nor is it
/// dead-lettered, nor is the rest of the batch held back.
#[sqlx::test(migrations = false)]
async fn an_event_another_consumer_is_applying_is_applied_once_and_the_rest_of_its_batch_too(
    pool: PgPool,
) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let (taken, other) = (trade(1), trade(2));
    let mut elsewhere = pool.begin().await.unwrap();
    apply_as_the_consumer_would(&mut elsewhere, taken.id).await;
    publish(&mut redis, &prefix, &taken).await;
    publish(&mut redis, &prefix, &other).await;

    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(Recorder::new(0), shutdown.clone()),
    );
    service_kit::testing::until_waiting_for_a_lock(&pool, "INSERT INTO inbox").await;
    elsewhere.commit().await.unwrap();

    eventually("the other event applied", || async {
        applied(&pool, other.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "both entries acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(applied(&pool, taken.id).await, 1, "exactly once in effect");
    assert!(
        events::dlq::list(&redis, &prefix, "trades")
            .await
            .unwrap()
            .is_empty(),
        "nothing dead-lettered"
    );
}

#[sqlx::test(migrations = false)]
async fn a_crash_between_commit_and_ack_is_healed_on_restart_without_a_second_effect(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let event = trade(1);
    publish(&mut redis, &prefix, &event).await;

    // "c1" received the entry, committed its effect and inbox row, and died before XACK.
    deliver_without_ack(&mut redis, &prefix, "c1").await;
    apply_as_the_consumer_would(&mut pool.acquire().await.unwrap(), event.id).await;
    assert_eq!(pending(&mut redis, &prefix).await, 1);

    // "c1" restarts: it re-reads its own pending entry, finds the inbox row, acknowledges.
    let shutdown = Shutdown::new();
    let recorder = Recorder::new(0);
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(recorder.clone(), shutdown.clone()),
    );
    until_nothing_pending(&redis, &prefix, "the pending entry acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(
        recorder.attempts.load(Ordering::SeqCst),
        0,
        "the handler never ran again"
    );
    assert_eq!(applied(&pool, event.id).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_dead_consumers_entries_are_claimed_by_a_live_one(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let event = trade(7);
    publish(&mut redis, &prefix, &event).await;
    // "dead" took the entry and vanished without applying it.
    deliver_without_ack(&mut redis, &prefix, "dead").await;

    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "alive", 5).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("the orphaned event applied", || async {
        applied(&pool, event.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "and acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_poison_event_is_dead_lettered_announced_and_replayable(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let poison = trade(13);
    publish(&mut redis, &prefix, &poison).await;

    // The handler keeps failing: after 3 deliveries the event goes to the dead-letter stream.
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 3).run(Recorder::new(usize::MAX), shutdown.clone()),
    );
    eventually("a dead letter", || {
        let r = redis.clone();
        let p = prefix.clone();
        async move {
            !events::dlq::list(&r, &p, "trades")
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    until_nothing_pending(&redis, &prefix, "the original acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(
        applied(&pool, poison.id).await,
        0,
        "every failed attempt rolled back"
    );

    let letters = events::dlq::list(&redis, &prefix, "trades").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, poison.id.to_string());
    assert_eq!(letters[0].group, GROUP);
    let notice: (String, String) = sqlx::query_as(
        "SELECT stream, envelope FROM outbox WHERE event_type = 'EventDeadLettered'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(notice.0, OPS_STREAM);
    assert!(notice.1.contains(&poison.id.to_string()));

    // Fixed handler, replayed letter: applied once, dead-letter stream empty.
    assert!(
        events::dlq::replay(&redis, &prefix, "trades", &letters[0].id, WEEK)
            .await
            .unwrap()
            == Replay::Replayed
    );
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 3).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("the replayed event applied", || async {
        applied(&pool, poison.id).await == 1
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    assert!(
        events::dlq::list(&redis, &prefix, "trades")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        events::dlq::replay(&redis, &prefix, "trades", &letters[0].id, WEEK)
            .await
            .unwrap(),
        Replay::NotFound,
        "replayed once"
    );
}

#[sqlx::test(migrations = false)]
async fn a_malformed_entry_goes_straight_to_the_dead_letters(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let _: String = redis::cmd("XADD")
        .arg(prefix.stream("trades"))
        .arg("*")
        .arg("envelope")
        .arg("{not json")
        .query_async(&mut redis)
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let recorder = Recorder::new(0);
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(recorder.clone(), shutdown.clone()),
    );
    eventually("a dead letter", || {
        let r = redis.clone();
        let p = prefix.clone();
        async move { events::dlq::list(&r, &p, "trades").await.unwrap().len() == 1 }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(recorder.attempts.load(Ordering::SeqCst), 0);
    assert_eq!(
        events::dlq::list(&redis, &prefix, "trades").await.unwrap()[0].reason,
        "malformed envelope"
    );
}

#[sqlx::test(migrations = false)]
async fn a_pending_entry_deleted_from_the_stream_is_dead_lettered_and_the_rest_applied(
    pool: PgPool,
) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let (lost, kept) = (trade(1), trade(2));
    let lost_entry = publish(&mut redis, &prefix, &lost).await;
    publish(&mut redis, &prefix, &kept).await;
    // "c1" read both and died; meanwhile the first entry left the stream (trimmed, deleted).
    // Redis still lists it as c1's pending entry and answers it as `[id, nil]`.
    deliver_without_ack(&mut redis, &prefix, "c1").await;
    let _: usize = redis
        .xdel(prefix.stream("trades"), &[&lost_entry])
        .await
        .unwrap();

    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("the entry that is still there applied", || async {
        applied(&pool, kept.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "nothing left pending").await;
    shutdown.trigger();
    task.await.unwrap();
    let dead = events::dlq::list(&redis, &prefix, "trades").await.unwrap();
    assert_eq!(dead.len(), 1, "the deleted entry, set aside: {dead:?}");
    assert_eq!(dead[0].reason, "malformed envelope");
    assert_eq!(applied(&pool, lost.id).await, 0);
}

/// The consumer's pool; the "effect" table gets one row per application, so a second effect would show.
async fn consumer_db(test_pool: &PgPool) -> PgPool {
    common::service_db(
        test_pool,
        SCHEMA,
        "CREATE TABLE applied (n bigserial PRIMARY KEY, event_id uuid NOT NULL)",
    )
    .await
}

/// Wants trades only.
struct TradesOnly(Arc<Recorder>);

impl Handler for TradesOnly {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        self.0.handle(tx, event, deferred)
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == "TradeExecuted"
    }
}

#[sqlx::test(migrations = false)]
async fn events_a_handler_does_not_want_are_acknowledged_without_an_inbox_row(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let unwanted = Envelope::new(
        "orders",
        "OrderAccepted",
        1,
        "o-1",
        1,
        serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
    );
    publish(&mut redis, &prefix, &unwanted).await;
    let wanted = trade(2);
    publish(&mut redis, &prefix, &wanted).await;

    let shutdown = Shutdown::new();
    let handler = Arc::new(TradesOnly(Recorder::new(0)));
    let task =
        tokio::spawn(consumer(&pool, &redis, &prefix, "c1", 5).run(handler, shutdown.clone()));
    eventually("the trade applied", || async {
        applied(&pool, wanted.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "all entries acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(applied(&pool, unwanted.id).await, 0);
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(inbox, 1, "only the wanted event left an inbox row");
}

/// Fails every delivery of one event; applies the others.
struct Poisoned {
    poison: Uuid,
    inner: Arc<Recorder>,
}

impl Handler for Poisoned {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        if event.id == self.poison {
            return Box::pin(async { Err(HandlerError::permanent("poison")) });
        }
        self.inner.handle(tx, event, deferred)
    }
}

#[sqlx::test(migrations = false)]
async fn one_bad_event_in_a_batch_holds_back_no_other(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    // Published before the consumer starts: read as one batch of three.
    let (first, poison, last) = (trade(1), trade(2), trade(3));
    for event in [&first, &poison, &last] {
        publish(&mut redis, &prefix, event).await;
    }

    let shutdown = Shutdown::new();
    let handler = Arc::new(Poisoned {
        poison: poison.id,
        inner: Recorder::new(0),
    });
    let task =
        tokio::spawn(consumer(&pool, &redis, &prefix, "c1", 2).run(handler, shutdown.clone()));
    eventually("the good events applied", || async {
        applied(&pool, first.id).await == 1 && applied(&pool, last.id).await == 1
    })
    .await;
    until_nothing_pending(
        &redis,
        &prefix,
        "the poison dead-lettered and nothing left pending",
    )
    .await;
    shutdown.trigger();
    task.await.unwrap();
    // The batch's failed attempt rolled back whole; the retry one by one applied each once.
    assert_eq!(applied(&pool, first.id).await, 1);
    assert_eq!(applied(&pool, last.id).await, 1);
    assert_eq!(applied(&pool, poison.id).await, 0);
    let letters = events::dlq::list(&redis, &prefix, "trades").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, poison.id.to_string());
}

/// Fails with a transient error — the database away — on its first `outages` attempts.
struct Flaky {
    outages: usize,
    attempts: AtomicUsize,
}

impl Handler for Flaky {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if self.attempts.fetch_add(1, Ordering::SeqCst) < self.outages {
                return Err(sqlx::Error::PoolTimedOut.into());
            }
            sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
                .bind(event.id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }
}

#[sqlx::test(migrations = false)]
async fn a_transient_failure_is_retried_until_it_passes_and_never_dead_lettered(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let event = trade(1);
    publish(&mut redis, &prefix, &event).await;

    // Two deliveries would dead-letter a permanent failure; eight transient ones must not.
    let handler = Arc::new(Flaky {
        outages: 8,
        attempts: AtomicUsize::new(0),
    });
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 2).run(handler.clone(), shutdown.clone()),
    );
    eventually("the event applied once the dependency is back", || async {
        applied(&pool, event.id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "and acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        9,
        "retried in place"
    );
    assert!(
        events::dlq::list(&redis, &prefix, "trades")
            .await
            .unwrap()
            .is_empty(),
        "nothing dead-lettered"
    );
}

#[sqlx::test(migrations = false)]
async fn a_group_the_broker_lost_is_created_again_and_consumption_goes_on(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let before = trade(1);
    publish(&mut redis, &prefix, &before).await;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("the first event applied", || async {
        applied(&pool, before.id).await == 1
    })
    .await;

    // The broker forgets the stream and with it the group (what a restart without
    // persistence does); the next event lands in a new stream no group reads yet.
    let _: () = redis.del(prefix.stream("trades")).await.unwrap();
    let after = trade(2);
    publish(&mut redis, &prefix, &after).await;

    eventually("the event after the loss applied", || async {
        applied(&pool, after.id).await == 1
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    assert_eq!(applied(&pool, before.id).await, 1);
}

/// The events `applied` records, in the order they were applied.
async fn applied_in_order(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM applied ORDER BY n")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A read whose answer never reaches the consumer still hands it the entries: a read that
/// timed out on the client while Redis stalled runs once Redis resumes. Reading on from `>`
/// after the failure would apply what came after those entries first (an order's end before
/// its acceptance, say) and leave them until `XAUTOCLAIM` found them idle. Here the test makes
/// that read itself, under the consumer's name, and cuts the consumer's connection so that its
/// step fails as the timed-out read's did.
#[sqlx::test(migrations = false)]
async fn entries_of_a_read_whose_answer_was_lost_are_applied_before_newer_ones(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let key = prefix.stream("trades");
    let consumers_connection = common::redis().await;
    let consumers_client: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut consumers_connection.clone())
        .await
        .unwrap();
    let first = trade(1);
    publish(&mut redis, &prefix, &first).await;
    let settings = ConsumerSettings {
        // Smaller than the lost read: its entries are re-read a batch at a time, to the end.
        batch: 2,
        // Nothing is idle this long during the test: only the consumer's own re-read can
        // bring the lost entries back.
        retry_after: Duration::from_secs(3600),
        ..ConsumerSettings::default()
    };
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer_with(&pool, &consumers_connection, &prefix, "c1", settings)
            .run(Recorder::new(0), shutdown.clone()),
    );
    eventually("the first event applied", || async {
        applied(&pool, first.id).await == 1
    })
    .await;

    // The lost read: three entries added and delivered to c1 in one transaction, so c1's own
    // blocked read cannot take them first.
    let lost = [trade(2), trade(3), trade(4)];
    let mut transaction = redis::pipe();
    transaction.atomic();
    for event in &lost {
        transaction
            .add_command(events::envelope::xadd(
                &key,
                None,
                &event.id.to_string(),
                &event.event_type,
                &serde_json::to_string(event).unwrap(),
            ))
            .ignore();
    }
    transaction
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("c1")
        .arg("COUNT")
        .arg(lost.len())
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .ignore();
    let () = transaction.query_async(&mut redis).await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(consumers_client)
        .query_async(&mut redis)
        .await
        .unwrap();
    let newer = trade(5);
    publish(&mut redis, &prefix, &newer).await;

    eventually("every event applied", || async {
        applied_in_order(&pool).await.len() == 5
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    let expected: Vec<Uuid> = [&first, &lost[0], &lost[1], &lost[2], &newer]
        .iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(
        applied_in_order(&pool).await,
        expected,
        "in stream order, once each"
    );
    until_nothing_pending(&redis, &prefix, "every entry acknowledged").await;
}

/// Defers its writes to the end of the transaction; its first `failures` finishes fail.
struct Deferring {
    failures: usize,
    /// How many events each finish was given, in order.
    finishes: std::sync::Mutex<Vec<usize>>,
}

impl Handler for Deferring {
    type Deferred = Vec<Uuid>;

    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut Vec<Uuid>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        deferred.push(event.id);
        Box::pin(async { Ok(()) })
    }

    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        deferred: Vec<Uuid>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO applied (event_id) SELECT * FROM UNNEST($1::uuid[])")
                .bind(&deferred)
                .execute(&mut *tx)
                .await?;
            let mut finishes = self.finishes.lock().unwrap();
            finishes.push(deferred.len());
            if finishes.len() <= self.failures {
                return Err(HandlerError::permanent("finish failed"));
            }
            Ok(())
        })
    }
}

#[sqlx::test(migrations = false)]
async fn deferred_work_is_written_once_per_transaction_and_rolls_back_with_it(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let trades: Vec<Envelope> = (1..=3).map(trade).collect();
    for event in &trades {
        publish(&mut redis, &prefix, event).await;
    }

    // The batch's finish fails: the batch rolls back and each event goes alone.
    let shutdown = Shutdown::new();
    let handler = Arc::new(Deferring {
        failures: 1,
        finishes: std::sync::Mutex::new(Vec::new()),
    });
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(handler.clone(), shutdown.clone()),
    );
    eventually("the last event applied", || async {
        applied(&pool, trades[2].id).await == 1
    })
    .await;
    until_nothing_pending(&redis, &prefix, "all entries acknowledged").await;
    shutdown.trigger();
    task.await.unwrap();

    assert_eq!(
        *handler.finishes.lock().unwrap(),
        vec![3, 1, 1, 1],
        "one finish for the batch of three, then one per event"
    );
    for event in &trades {
        assert_eq!(
            applied(&pool, event.id).await,
            1,
            "the failed finish's writes were rolled back"
        );
    }
}

/// Records the `plan_cache_mode` each event's transaction runs with.
#[derive(Default)]
struct PlanModes(std::sync::Mutex<Vec<String>>);

impl Handler for PlanModes {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        _: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
                .fetch_one(&mut *tx)
                .await?;
            self.0.lock().unwrap().push(mode);
            Ok(())
        })
    }
}

#[sqlx::test(migrations = false)]
async fn a_batch_is_applied_on_generic_plans(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    for n in 1..=3 {
        publish(&mut redis, &prefix, &trade(n)).await;
    }

    let modes = Arc::new(PlanModes::default());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 5).run(modes.clone(), shutdown.clone()),
    );
    eventually("three events applied", || async {
        modes.0.lock().unwrap().len() == 3
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();

    // ADR 0026: a batch's statements are not planned again on every execution.
    assert!(
        modes
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|m| m == "force_generic_plan"),
        "{:?}",
        modes.0.lock().unwrap()
    );
}

#[sqlx::test(migrations = false)]
async fn what_arrives_while_a_consumer_lingers_is_applied_as_one_batch(pool: PgPool) {
    let pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let handler = Arc::new(Deferring {
        failures: 0,
        finishes: std::sync::Mutex::new(Vec::new()),
    });
    // Long enough that three separate `XADD`s fall inside it on a busy machine.
    let settings = ConsumerSettings {
        block: Duration::from_millis(50),
        linger: Duration::from_secs(2),
        ..ConsumerSettings::default()
    };
    let consumer = consumer_with(&pool, &redis, &prefix, "c1", settings);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(consumer.run(handler.clone(), shutdown.clone()));

    // An idle consumer takes the first entry as soon as it arrives…
    let trades: Vec<Envelope> = (1..=4).map(trade).collect();
    publish(&mut redis, &prefix, &trades[0]).await;
    eventually("the first event applied", || async {
        applied(&pool, trades[0].id).await == 1
    })
    .await;
    // …then lets the next ones gather: each is added on its own, yet they are one batch.
    for event in &trades[1..] {
        publish(&mut redis, &prefix, event).await;
    }
    eventually("the last event applied", || async {
        applied(&pool, trades[3].id).await == 1
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();

    assert_eq!(*handler.finishes.lock().unwrap(), vec![1, 3]);
}

/// An event id made `days` ago (UUIDv7, as `Envelope::new` makes them).
fn id_made_days_ago(days: u64) -> Uuid {
    let made = std::time::SystemTime::now() - Duration::from_secs(days * 24 * 3600);
    let since_epoch = made.duration_since(std::time::UNIX_EPOCH).unwrap();
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
    ))
}

async fn inbox_rows(pool: &PgPool, consumer: &str, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = ANY($2)")
        .bind(consumer)
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_consumer_forgets_the_events_it_applied_longer_ago_than_its_inbox_retention(
    pool: PgPool,
) {
    let pool = consumer_db(&pool).await;
    let redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    // More expired rows than one sweep deletes at a time, all applied ten days ago.
    let expired: Vec<Uuid> = (0..12_000).map(|_| id_made_days_ago(10)).collect();
    // Made ten days ago but applied just now (a relay that had been down): kept a week from now.
    let applied_late = id_made_days_ago(10);
    let recent = Uuid::now_v7();
    // Not a UUIDv7: its bits say nothing of when it was made.
    let timeless = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
    let insert = "INSERT INTO inbox (consumer, event_id, stream, processed_at)
                  SELECT $1, id, 'trades', now() - make_interval(days => $3) FROM UNNEST($2::uuid[]) AS id";
    for (consumer, ids, days_ago) in [
        (GROUP, expired.clone(), 10),
        (GROUP, vec![applied_late, recent, timeless], 0),
        // Another consumer's rows are its own to sweep.
        ("another-group", expired[..10].to_vec(), 10),
    ] {
        sqlx::query(insert)
            .bind(consumer)
            .bind(ids)
            .bind(days_ago)
            .execute(&pool)
            .await
            .unwrap();
    }

    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        consumer(&pool, &redis, &prefix, "c1", 3).run(Recorder::new(0), shutdown.clone()),
    );
    eventually("every expired inbox row deleted", || async {
        inbox_rows(&pool, GROUP, &expired).await == 0
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();

    assert_eq!(
        inbox_rows(&pool, GROUP, &[applied_late, recent, timeless]).await,
        3,
        "rows applied within the retention stay"
    );
    assert_eq!(inbox_rows(&pool, "another-group", &expired[..10]).await, 10);
}

#[sqlx::test(migrations = false)]
async fn a_dead_letter_older_than_the_inbox_retention_is_not_replayed(pool: PgPool) {
    let _pool = consumer_db(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let mut event = trade(1);
    event.id = id_made_days_ago(8);
    let letter: String = redis
        .xadd(
            format!("{}.dlq", prefix.stream("trades")),
            "*",
            &[
                ("event_id", event.id.to_string()),
                ("type", event.event_type.clone()),
                ("envelope", serde_json::to_string(&event).unwrap()),
                ("group", GROUP.to_owned()),
                ("reason", "not yet".to_owned()),
            ],
        )
        .await
        .unwrap();

    let replay = events::dlq::replay(&redis, &prefix, "trades", &letter, WEEK).await;

    assert_eq!(replay.unwrap(), Replay::TooOld);
    let stream_length: usize = redis.xlen(prefix.stream("trades")).await.unwrap();
    assert_eq!(stream_length, 0, "nothing went back onto the stream");
    assert_eq!(
        events::dlq::list(&redis, &prefix, "trades")
            .await
            .unwrap()
            .len(),
        1,
        "the dead letter stays"
    );
    // Within the retention it goes back.
    assert_eq!(
        events::dlq::replay(&redis, &prefix, "trades", &letter, 9 * WEEK / 7)
            .await
            .unwrap(),
        Replay::Replayed
    );
}
