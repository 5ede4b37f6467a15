//! The outbox and its relay against real PostgreSQL and Redis (REL-08).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use events::{Envelope, Relay, RelaySettings, outbox};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use service_kit::redis::KeyPrefix;
use service_kit::testing::RedisServer;
use service_kit::{LastShutdown, Shutdown};
use sqlx::PgPool;
use uuid::Uuid;

mod common;

use common::{eventually, redis};

const SCHEMA: &str = "producer";

fn envelope(n: i64) -> Envelope {
    Envelope::new(
        "test",
        "ItemCreated",
        1,
        format!("item-{n}"),
        n,
        serde_json::value::to_raw_value(&serde_json::json!({ "n": n })).unwrap(),
    )
}

/// Creates `count` items, each with its event on `items`, `per_tx` to a transaction; returns
/// the event ids in commit order.
async fn produce(pool: &PgPool, count: i64, per_tx: i64) -> Vec<Uuid> {
    produce_to(pool, "items", count, per_tx).await
}

/// [`produce`], with the events on `stream`.
async fn produce_to(pool: &PgPool, stream: &str, count: i64, per_tx: i64) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut n = 0;
    while n < count {
        let mut tx = pool.begin().await.unwrap();
        for _ in 0..per_tx.min(count - n) {
            sqlx::query("INSERT INTO items (id) VALUES ($1)")
                .bind(Uuid::now_v7())
                .execute(&mut *tx)
                .await
                .unwrap();
            let event = envelope(n);
            outbox::append(&mut tx, stream, &event).await.unwrap();
            ids.push(event.id);
            n += 1;
        }
        tx.commit().await.unwrap();
    }
    ids
}

/// Rows the relay has still to publish.
async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_unpublished")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Event ids in the stream, in stream order.
async fn stream_ids(redis: &mut ConnectionManager, key: &str) -> Vec<Uuid> {
    try_stream_ids(redis, key).await.unwrap()
}

/// [`stream_ids`], or the error of a connection that has not reconnected yet (its first command
/// after the server restarted fails with a broken pipe, then it reconnects).
async fn try_stream_ids(redis: &mut ConnectionManager, key: &str) -> redis::RedisResult<Vec<Uuid>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await?;
    Ok(entries
        .into_iter()
        .map(|(_, fields)| {
            let id = fields
                .iter()
                .find(|(k, _)| k == "event_id")
                .map(|(_, v)| v.clone())
                .unwrap();
            Uuid::from_str(&id).unwrap()
        })
        .collect())
}

fn relay(pool: &PgPool, redis: &ConnectionManager, prefix: &KeyPrefix, batch_size: i64) -> Relay {
    relay_with(
        pool,
        redis,
        prefix,
        RelaySettings {
            batch_size,
            poll_interval: Duration::from_millis(50),
            ..RelaySettings::default()
        },
    )
}

/// The producer schema's relay with `settings`.
fn relay_with(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    settings: RelaySettings,
) -> Relay {
    Relay::new(
        pool.clone(),
        redis.clone(),
        prefix.clone(),
        SCHEMA,
        settings,
    )
}

/// Runs `relay` on its own until `shutdown`: nothing else runs beside it for it to outlast.
fn start(relay: Relay, shutdown: &Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(relay.run(LastShutdown::alone(shutdown.clone())))
}

/// Runs the producer schema's relay, letting rows gather for `linger` after each batch; the
/// token stops it.
fn run_lingering(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    linger: Duration,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let relay = relay_with(
        pool,
        redis,
        prefix,
        RelaySettings {
            linger,
            ..RelaySettings::default()
        },
    );
    let shutdown = Shutdown::new();
    let task = start(relay, &shutdown);
    (shutdown, task)
}

#[sqlx::test(migrations = false)]
async fn events_exist_if_and_only_if_the_state_change_commits(pool: PgPool) {
    let pool = producer(&pool).await;

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id) VALUES ($1)")
        .bind(Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox::append(&mut tx, "items", &envelope(1))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a rolled-back change leaves no event");

    produce(&pool, 3, 3).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);

    // The same event id twice is refused by the constraint.
    let event = envelope(9);
    let mut tx = pool.begin().await.unwrap();
    outbox::append(&mut tx, "items", &event).await.unwrap();
    assert!(outbox::append(&mut tx, "items", &event).await.is_err());
}

#[sqlx::test(migrations = false)]
async fn rows_committed_while_the_relay_lingers_go_out_as_one_batch(pool: PgPool) {
    let pool = producer(&pool).await;
    // Every batch writes the relay's watermark once: counting those writes counts batches.
    execute_all(
        &pool,
        &[
            "CREATE TABLE relay_batches (at timestamptz NOT NULL DEFAULT now())",
            "CREATE FUNCTION count_relay_batch() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO relay_batches DEFAULT VALUES; RETURN NULL; END $$",
            "CREATE TRIGGER count_relay_batch AFTER UPDATE ON outbox_relay
               FOR EACH STATEMENT EXECUTE FUNCTION count_relay_batch()",
        ],
    )
    .await;
    let batches = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM relay_batches")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    // Long enough that three separate commits fall inside it on a busy machine.
    let (shutdown, task) = run_lingering(&pool, &redis, &prefix, Duration::from_secs(2));

    // An idle relay publishes a row as soon as it is told of it…
    produce(&pool, 1, 1).await;
    eventually("the first row published", || async {
        unpublished(&pool).await == 0
    })
    .await;
    let before = batches().await;
    // …then lets the next ones gather: three commits, one batch.
    produce(&pool, 3, 1).await;
    eventually("the three rows published", || async {
        unpublished(&pool).await == 0
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();

    assert_eq!(batches().await - before, 1);
}

#[sqlx::test(migrations = false)]
async fn a_relay_told_to_stop_first_publishes_what_was_committed_before(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    // Rows gather for a minute after each batch: only the stop can end that wait.
    let (shutdown, task) = run_lingering(&pool, &redis, &prefix, Duration::from_secs(60));
    let first = produce(&pool, 1, 1).await;
    eventually("the first row published", || async {
        unpublished(&pool).await == 0
    })
    .await;
    // A service's last writes, committed while the relay lingers.
    let last = produce(&pool, 3, 1).await;

    shutdown.trigger();
    task.await.unwrap();

    assert_eq!(
        unpublished(&pool).await,
        0,
        "the stopped relay left rows behind"
    );
    assert_eq!(
        stream_ids(&mut redis, &prefix.stream("items")).await,
        [first, last].concat()
    );
}

#[sqlx::test(migrations = false)]
async fn any_insert_into_the_outbox_serializes_its_writers_and_wakes_the_relay(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(&format!("{SCHEMA}_outbox")).await.unwrap();

    // A writer that inserts by hand, not through `outbox::append`.
    let mut writer = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, stream, event_type, envelope) VALUES ($1, 'items', 'ItemCreated', '{}')",
    )
    .bind(Uuid::now_v7())
    .execute(&mut *writer)
    .await
    .unwrap();

    // It holds the writers' lock until it ends: another writer could not take it now.
    let mut other = pool.begin().await.unwrap();
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
        .bind(outbox::WRITE_LOCK)
        .bind(SCHEMA)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(!free, "the insert took the outbox writers' lock");
    other.rollback().await.unwrap();

    // Its commit wakes the relay.
    writer.commit().await.unwrap();
    let notification = listener.recv().await.unwrap();
    assert_eq!(notification.channel(), format!("{SCHEMA}_outbox"));
}

#[sqlx::test(migrations = false)]
async fn the_relay_publishes_every_event_in_order(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let written = produce(&pool, 25, 4).await;

    let shutdown = Shutdown::new();
    let task = start(relay(&pool, &redis, &prefix, 10), &shutdown);
    eventually("the outbox to drain", || async {
        unpublished(&pool).await == 0
    })
    .await;

    // Events written while the relay runs are picked up too (woken by NOTIFY or the poll).
    let more = produce(&pool, 5, 1).await;
    eventually("the new events", || async { unpublished(&pool).await == 0 }).await;
    shutdown.trigger();
    task.await.unwrap();

    let published = stream_ids(&mut redis, &prefix.stream("items")).await;
    assert_eq!(published, [written, more].concat());

    let entry: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(prefix.stream("items"))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let envelope_json = &entry[0].1.iter().find(|(k, _)| k == "envelope").unwrap().1;
    let decoded: Envelope = serde_json::from_str(envelope_json).unwrap();
    assert_eq!(decoded.event_type, "ItemCreated");
    assert_eq!(decoded.producer, "test");
}

#[sqlx::test(migrations = false)]
async fn a_relay_killed_mid_stream_loses_nothing_and_keeps_order(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let key = prefix.stream("items");
    let written = produce(&pool, 300, 10).await;

    // Small batches, so the kill lands between batches — or inside one.
    let crashing = start(relay(&pool, &redis, &prefix, 3), &Shutdown::new());
    eventually("a first part to be published", || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            redis::cmd("XLEN")
                .arg(&key)
                .query_async::<i64>(&mut redis)
                .await
                .unwrap()
                >= 30
        }
    })
    .await;
    crashing.abort();
    let _ = crashing.await;
    let left = unpublished(&pool).await;
    assert!(
        left > 0,
        "the crash must happen before the end for this test to mean anything"
    );

    // A new relay (after restart, or on another replica) finishes the job.
    let shutdown = Shutdown::new();
    let restarted = start(relay(&pool, &redis, &prefix, 50), &shutdown);
    eventually("the outbox to drain", || async {
        unpublished(&pool).await == 0
    })
    .await;
    shutdown.trigger();
    restarted.await.unwrap();

    let published = stream_ids(&mut redis, &key).await;
    let mut first_seen = Vec::new();
    for id in &published {
        if !first_seen.contains(id) {
            first_seen.push(*id);
        }
    }
    assert_eq!(first_seen, written, "every event, in order");
    let duplicates = published.len() - written.len();
    assert!(
        duplicates <= 3,
        "at most the batch in flight is republished, got {duplicates}"
    );
}

#[sqlx::test(migrations = false)]
async fn two_relays_publish_each_event_once_in_order(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let shutdown = Shutdown::new();
    let first = start(relay(&pool, &redis, &prefix, 5), &shutdown);
    let second = start(relay(&pool, &redis, &prefix, 5), &shutdown);
    let written = produce(&pool, 100, 7).await;
    eventually("the outbox to drain", || async {
        unpublished(&pool).await == 0
    })
    .await;
    shutdown.trigger();
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(
        stream_ids(&mut redis, &prefix.stream("items")).await,
        written
    );
}

/// A leader whose process stops without dying (SIGSTOP, a frozen VM) keeps its socket, so its
/// session and the leadership lock would live as long as it is stopped and nothing would be
/// published. PostgreSQL ends the leader's session once it has been idle for
/// `leader_idle_timeout`, and another relay leads. The first relay runs on a runtime of its
/// own thread, which the test stops as SIGSTOP stops a process: nothing of it runs, its sockets
/// stay open.
#[sqlx::test(migrations = false)]
async fn a_paused_leader_gives_way_to_another_relay(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let settings = RelaySettings {
        poll_interval: Duration::from_millis(50),
        leader_idle_timeout: Duration::from_secs(1),
        ..RelaySettings::default()
    };
    let shutdown = Shutdown::new();
    let (pause, paused) = tokio::sync::oneshot::channel::<()>();
    let (stopped, stopped_seen) = tokio::sync::oneshot::channel::<()>();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    let first = std::thread::spawn({
        let (options, prefix, settings) =
            (pool.connect_options(), prefix.clone(), settings.clone());
        let shutdown = shutdown.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // Its own pool and Redis connection: their sockets belong to this runtime.
                let pool = PgPool::connect_with(options.as_ref().clone())
                    .await
                    .unwrap();
                let redis = common::redis().await;
                let relay = relay_with(&pool, &redis, &prefix, settings);
                let running = start(relay, &shutdown);
                paused.await.unwrap();
                stopped.send(()).unwrap();
                // The whole runtime blocks here: the relay is stopped mid-leadership.
                resumed.recv().unwrap();
                running.await.unwrap();
            });
        }
    });
    // Alone, the first relay leads and publishes.
    let mut written = produce(&pool, 1, 1).await;
    eventually("the first relay to publish", || async {
        unpublished(&pool).await == 0
    })
    .await;

    pause.send(()).unwrap();
    stopped_seen.await.unwrap();
    let second = start(relay_with(&pool, &redis, &prefix, settings), &shutdown);
    written.extend(produce(&pool, 3, 1).await);
    eventually(
        "another relay to publish while the leader is paused",
        || async { unpublished(&pool).await == 0 },
    )
    .await;

    // Resumed, the old leader finds its session gone and publishes nothing twice.
    resume.send(()).unwrap();
    shutdown.trigger();
    second.await.unwrap();
    first.join().unwrap();
    assert_eq!(
        stream_ids(&mut redis, &prefix.stream("items")).await,
        written
    );
}

#[test]
fn an_event_caused_by_another_keeps_its_correlation_and_trace() {
    let mut cause = envelope(1);
    cause.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
    let effect = envelope(2).caused_by(&cause);
    assert_eq!(effect.correlation_id, cause.correlation_id);
    assert_eq!(effect.traceparent, cause.traceparent);
    assert_eq!(effect.causation_id, Some(cause.id));
    assert_ne!(effect.id, cause.id);
    // Outside a request, an event correlates with itself.
    assert_eq!(cause.correlation_id, cause.id.to_string());
    let json = serde_json::to_value(&cause).unwrap();
    for field in [
        "id",
        "type",
        "version",
        "occurred_at",
        "producer",
        "aggregate_id",
        "sequence",
        "correlation_id",
        "causation_id",
        "traceparent",
        "payload",
    ] {
        assert!(json.get(field).is_some(), "envelope field {field}");
    }
}

#[sqlx::test(migrations = false)]
async fn many_events_appended_at_once_keep_their_order(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let batch: Vec<Envelope> = (0..50).map(envelope).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox::append(&mut tx, "items", &envelope(-1))
        .await
        .unwrap();
    outbox::append_all(&mut tx, "items", &batch).await.unwrap();
    outbox::append_all(&mut tx, "items", &[]).await.unwrap();
    tx.commit().await.unwrap();

    let shutdown = Shutdown::new();
    let task = start(relay(&pool, &redis, &prefix, 20), &shutdown);
    eventually("the outbox to drain", || async {
        unpublished(&pool).await == 0
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    let published = stream_ids(&mut redis, &prefix.stream("items")).await;
    assert_eq!(published.len(), 51);
    assert_eq!(
        published[1..],
        batch.iter().map(|e| e.id).collect::<Vec<_>>()[..]
    );
}

/// A relay that confirms and trims every 50 ms and keeps acknowledged entries for `keep`.
fn confirming_relay(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    keep: Duration,
) -> Relay {
    relay_with(
        pool,
        redis,
        prefix,
        RelaySettings {
            batch_size: 100,
            poll_interval: Duration::from_millis(50),
            confirm_interval: Duration::from_millis(50),
            stream_keep: keep,
            ..RelaySettings::default()
        },
    )
}

/// Starts [`confirming_relay`] and waits until it has published everything written so far.
async fn drained_by_a_confirming_relay(
    pool: &PgPool,
    redis: &ConnectionManager,
    prefix: &KeyPrefix,
    keep: Duration,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let relay = confirming_relay(pool, redis, prefix, keep);
    let task = start(relay, &shutdown);
    eventually("the outbox to drain", || async {
        unpublished(pool).await == 0
    })
    .await;
    (shutdown, task)
}

/// Rows every group of their stream has acknowledged: at or below the stream's confirmed
/// position.
async fn confirmed(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox o JOIN outbox_streams s USING (stream)
          WHERE o.position <= s.confirmed_position",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Group `group` is given up to `count` new entries of `key` and acknowledges the first `ack`.
async fn read_and_ack(
    redis: &mut ConnectionManager,
    key: &str,
    group: &str,
    count: usize,
    ack: usize,
) {
    let options = redis::streams::StreamReadOptions::default()
        .group(group, "reader")
        .count(count);
    let reply: redis::streams::StreamReadReply =
        redis.xread_options(&[key], &[">"], &options).await.unwrap();
    let ids: Vec<String> = reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|e| e.id)
        .take(ack)
        .collect();
    if !ids.is_empty() {
        let _: usize = redis.xack(key, group, &ids).await.unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn retention_trims_only_what_every_group_acknowledged(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let key = prefix.stream("items");
    for group in ["fast", "slow"] {
        let _: () = redis
            .xgroup_create_mkstream(&key, group, "0")
            .await
            .unwrap();
    }
    let written = produce(&pool, 10, 10).await;
    let (shutdown, task) =
        drained_by_a_confirming_relay(&pool, &redis, &prefix, Duration::ZERO).await;

    // One group has everything, the other only the first four.
    read_and_ack(&mut redis, &key, "fast", 10, 10).await;
    read_and_ack(&mut redis, &key, "slow", 10, 4).await;
    eventually("the first four confirmed", || async {
        confirmed(&pool).await == 4
    })
    .await;
    eventually("the stream trimmed up to the slow group", || {
        let mut r = redis.clone();
        let k = key.clone();
        async move { stream_ids(&mut r, &k).await.len() == 6 }
    })
    .await;
    assert_eq!(stream_ids(&mut redis, &key).await, written[4..]);

    // The slow group catches up: everything is confirmed and the stream emptied.
    let pending: Vec<String> = {
        let reply: redis::streams::StreamPendingCountReply = redis
            .xpending_count(&key, "slow", "-", "+", 10)
            .await
            .unwrap();
        reply.ids.into_iter().map(|p| p.id).collect()
    };
    let _: usize = redis.xack(&key, "slow", &pending).await.unwrap();
    eventually("all confirmed", || async { confirmed(&pool).await == 10 }).await;
    eventually("the stream trimmed", || {
        let mut r = redis.clone();
        let k = key.clone();
        async move { stream_ids(&mut r, &k).await.is_empty() }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn what_a_redis_restarted_empty_lost_is_published_again_before_anything_newer(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut server = RedisServer::start().await;
    let url = secrecy::SecretString::from(server.url());
    let mut redis = service_kit::redis::connect_url(&url, None).await.unwrap();
    let prefix = KeyPrefix::new("bourse");
    let key = prefix.stream("items");
    let _: () = redis
        .xgroup_create_mkstream(&key, "consumer", "0")
        .await
        .unwrap();
    let before = produce(&pool, 6, 2).await;
    let shutdown = Shutdown::new();
    // Entries stay a minute for readers without a group: after the restart no group exists
    // until consumers create theirs again.
    let relay = confirming_relay(&pool, &redis, &prefix, Duration::from_secs(60));
    let task = start(relay, &shutdown);
    eventually("the outbox to drain", || async {
        unpublished(&pool).await == 0
    })
    .await;
    read_and_ack(&mut redis, &key, "consumer", 2, 2).await;
    eventually("the first two confirmed", || async {
        confirmed(&pool).await == 2
    })
    .await;

    // Redis dies and comes back with nothing: four published events were never acknowledged.
    server.restart().await;
    let after = produce(&pool, 3, 3).await;

    let expected: Vec<Uuid> = before[2..].iter().chain(&after).copied().collect();
    let wanted = expected.len();
    eventually(
        "the unconfirmed and the new events in the new stream",
        || {
            let mut r = redis.clone();
            let k = key.clone();
            async move {
                try_stream_ids(&mut r, &k)
                    .await
                    .is_ok_and(|ids| ids.len() >= wanted)
            }
        },
    )
    .await;
    assert_eq!(
        stream_ids(&mut redis, &key).await,
        expected,
        "what was lost goes out again first, in outbox order, and nothing confirmed is repeated"
    );
    shutdown.trigger();
    task.await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_lost_broker_gets_back_what_each_stream_had_not_confirmed_and_nothing_else(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut server = RedisServer::start().await;
    let url = secrecy::SecretString::from(server.url());
    let mut redis = service_kit::redis::connect_url(&url, None).await.unwrap();
    let prefix = KeyPrefix::new("bourse");
    let (items, other) = (prefix.stream("items"), prefix.stream("other"));
    for key in [&items, &other] {
        let _: () = redis
            .xgroup_create_mkstream(key, "consumer", "0")
            .await
            .unwrap();
    }
    // Interleaved: items' rows at positions 1 and 3, other's at 2 and 4.
    let mut written = Vec::new();
    for _ in 0..2 {
        written.extend(produce_to(&pool, "items", 1, 1).await);
        written.extend(produce_to(&pool, "other", 1, 1).await);
    }
    let (shutdown, task) =
        drained_by_a_confirming_relay(&pool, &redis, &prefix, Duration::from_secs(60)).await;
    // items' group has everything; other's has read its two and acknowledged neither.
    read_and_ack(&mut redis, &items, "consumer", 2, 2).await;
    read_and_ack(&mut redis, &other, "consumer", 2, 0).await;
    eventually("items' two rows confirmed", || async {
        confirmed(&pool).await == 2
    })
    .await;

    // Redis comes back empty. The rewind starts at other's first row (position 2), below
    // items' confirmed second row (position 3): that one must not go out again.
    server.restart().await;
    let newer = produce_to(&pool, "items", 1, 1).await;
    eventually("other's two rows and the new one published", || {
        let mut r = redis.clone();
        let (items, other) = (items.clone(), other.clone());
        async move {
            let items = try_stream_ids(&mut r, &items)
                .await
                .map_or(0, |ids| ids.len());
            let other = try_stream_ids(&mut r, &other)
                .await
                .map_or(0, |ids| ids.len());
            items >= 1 && other >= 2
        }
    })
    .await;
    assert_eq!(
        stream_ids(&mut redis, &other).await,
        [written[1], written[3]]
    );
    assert_eq!(
        stream_ids(&mut redis, &items).await,
        newer,
        "a confirmed row is not sent again, even when the rewind starts below it"
    );
    shutdown.trigger();
    task.await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn entries_of_other_outboxes_in_a_shared_stream_leave_confirmation_to_our_own(pool: PgPool) {
    let pool = producer(&pool).await;
    let mut redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let key = prefix.stream("items");
    let _: () = redis.xgroup_create_mkstream(&key, "g", "0").await.unwrap();
    produce(&pool, 3, 1).await;
    let (shutdown, task) =
        drained_by_a_confirming_relay(&pool, &redis, &prefix, Duration::from_secs(60)).await;
    // After ours, more than a page of entries another service's outbox published to the same
    // stream (as every service's relay does to `ops`), claiming a position of its own, and a
    // replayed dead letter, which carries none.
    for n in 0..40 {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("event_id")
            .arg(Uuid::now_v7().to_string())
            .arg("type")
            .arg("ItemCreated")
            .arg("envelope")
            .arg("{}")
            .arg("outbox")
            .arg("someone_else")
            .arg("position")
            .arg(1 + n % 2)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: String = events::envelope::xadd(&key, None, "dead", "ItemCreated", "{}")
        .query_async(&mut redis)
        .await
        .unwrap();
    read_and_ack(&mut redis, &key, "g", 100, 100).await;
    eventually(
        "our three rows confirmed, by our own entries' positions",
        || async { confirmed(&pool).await == 3 },
    )
    .await;
    shutdown.trigger();
    task.await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_outbox_stamped_row_by_row_carries_its_progress_into_the_watermarks_and_back_then_drops_the_stamps(
    pool: PgPool,
) {
    // The outbox as it was before it became append-only, with rows in every state.
    sqlx::raw_sql("CREATE SCHEMA legacy")
        .execute(&pool)
        .await
        .unwrap();
    let legacy = common::schema_pool(&pool, "legacy").await;
    for before in [
        include_str!("../migrations/20261122000001_outbox.sql"),
        include_str!("../migrations/20261122000002_inbox.sql"),
        include_str!("../migrations/20261202000001_outbox_confirmation.sql"),
        include_str!("../migrations/20261202000002_outbox_write_lock.sql"),
    ] {
        sqlx::raw_sql(before).execute(&legacy).await.unwrap();
    }
    // Positions 1 to 6: confirmed, confirmed, confirmed, published, published, waiting.
    for (stream, published, confirmed) in [
        ("items", true, true),
        ("other", true, true),
        ("items", true, true),
        ("other", true, false),
        ("items", true, false),
        ("items", false, false),
    ] {
        sqlx::query(
            "INSERT INTO outbox (event_id, stream, event_type, envelope, published_at, confirmed_at)
             VALUES ($1, $2, 'ItemCreated', '{}',
                     CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END)",
        )
        .bind(Uuid::now_v7())
        .bind(stream)
        .bind(published)
        .bind(confirmed)
        .execute(&legacy)
        .await
        .unwrap();
    }

    sqlx::raw_sql(include_str!(
        "../migrations/20261203000001_outbox_append_only.sql"
    ))
    .execute(&legacy)
    .await
    .unwrap();

    let published: i64 = sqlx::query_scalar("SELECT published_position FROM outbox_relay")
        .fetch_one(&legacy)
        .await
        .unwrap();
    assert_eq!(published, 5, "the last row Redis was given");
    let streams: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream, published_position, confirmed_position FROM outbox_streams ORDER BY stream",
    )
    .fetch_all(&legacy)
    .await
    .unwrap();
    assert_eq!(
        streams,
        [("items".to_owned(), 5, 3), ("other".to_owned(), 4, 2)]
    );
    assert_eq!(unpublished(&legacy).await, 1, "the waiting row still waits");
    assert_eq!(confirmed(&legacy).await, 3);

    // The previous release still runs against this schema (expand, not contract): its relay
    // finds what it reads. And a rollback to it stamps what this release's relay did — here,
    // it published the waiting row and its group confirmed items up to it.
    let waiting: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM outbox WHERE published_at IS NULL AND confirmed_at IS NULL
          AND entry_ms IS NULL AND entry_seq IS NULL ORDER BY position",
    )
    .fetch_all(&legacy)
    .await
    .unwrap();
    assert_eq!(waiting, [6]);
    sqlx::raw_sql(
        "UPDATE outbox_relay SET published_position = 6;
         UPDATE outbox_streams SET published_position = 6, confirmed_position = 6
          WHERE stream = 'items'",
    )
    .execute(&legacy)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!(
        "../../../../tools/rollback/stamp-outbox-rows.sql"
    ))
    .execute(&legacy)
    .await
    .unwrap();
    let stamps: Vec<(i64, bool, bool)> = sqlx::query_as(
        "SELECT position, published_at IS NOT NULL, confirmed_at IS NOT NULL
           FROM outbox ORDER BY position",
    )
    .fetch_all(&legacy)
    .await
    .unwrap();
    assert_eq!(
        stamps,
        [
            (1, true, true),
            (2, true, true),
            (3, true, true),
            (4, true, false),
            (5, true, true),
            (6, true, true),
        ],
        "row 5 was confirmed under the watermarks, row 4 (other's) was not"
    );

    // One release later, the contract: the stamps and their indexes go, and what the
    // watermarks say is unchanged — the relay publishes from the view as before.
    let before = (unpublished(&legacy).await, confirmed(&legacy).await);
    assert_eq!(
        before,
        (0, 5),
        "everything published; all but other's row 4 confirmed"
    );
    sqlx::raw_sql(include_str!(
        "../migrations/20261205000001_outbox_stamps_dropped.sql"
    ))
    .execute(&legacy)
    .await
    .unwrap();
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'legacy' AND tablename = 'outbox'",
    )
    .fetch_all(&legacy)
    .await
    .unwrap();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "outbox_event_id_key",
            "outbox_pkey",
            "outbox_stream_position_idx"
        ],
        "one entry per row in each of three indexes, not six"
    );
    let stamps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
          WHERE table_schema = 'legacy' AND table_name = 'outbox'
            AND column_name IN ('published_at', 'entry_ms', 'entry_seq', 'confirmed_at')",
    )
    .fetch_one(&legacy)
    .await
    .unwrap();
    assert_eq!(stamps, 0);
    assert_eq!(
        (unpublished(&legacy).await, confirmed(&legacy).await),
        before
    );
}

/// A producer's pool on its own schema, with the outbox and a table of "state" to change.
///
/// The outbox is append-only (ADR 0024): here any update of one of its rows fails, so every
/// relay test in this file also proves the relay publishes and confirms without writing a row.
async fn producer(test_pool: &PgPool) -> PgPool {
    let pool = common::service_db(
        test_pool,
        SCHEMA,
        "CREATE TABLE items (id uuid PRIMARY KEY)",
    )
    .await;
    execute_all(
        &pool,
        &[
            "CREATE FUNCTION outbox_rows_are_never_updated() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'outbox row % updated', OLD.position; END $$",
            "CREATE TRIGGER outbox_rows_are_never_updated BEFORE UPDATE ON outbox
               FOR EACH ROW EXECUTE FUNCTION outbox_rows_are_never_updated()",
        ],
    )
    .await;
    pool
}

/// Runs each statement (DDL a test adds to the producer's schema) in turn.
async fn execute_all(pool: &PgPool, statements: &[&str]) {
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Records what a consumer is given: each event's id and origin, in order.
#[derive(Default)]
struct Origins(std::sync::Mutex<Vec<(Uuid, Option<events::Origin>)>>);

impl events::Handler for Origins {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        _: &'a mut sqlx::PgConnection,
        _: &'a Envelope,
        _: &'a mut (),
    ) -> futures_util::future::BoxFuture<'a, Result<(), events::HandlerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn committed(&self, event: &Envelope) {
        self.0
            .lock()
            .unwrap()
            .push((event.id, event.origin.clone()));
    }
}

/// A consumer learns where each event sits in its outbox, and a snapshot names the newest
/// event it includes — even once retention has trimmed every older row (ADR 0023).
#[sqlx::test(migrations = false)]
async fn consumers_learn_each_events_position_and_a_snapshot_names_the_newest_after_retention(
    pool: PgPool,
) {
    let pool = producer(&pool).await;
    let redis = redis().await;
    let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
    let written = produce(&pool, 6, 3).await;
    let positions: Vec<i64> = sqlx::query_scalar("SELECT position FROM outbox ORDER BY position")
        .fetch_all(&pool)
        .await
        .unwrap();

    let shutdown = Shutdown::new();
    let relay = relay_with(
        &pool,
        &redis,
        &prefix,
        RelaySettings {
            poll_interval: Duration::from_millis(50),
            confirm_interval: Duration::from_millis(50),
            retention: Duration::ZERO,
            cleanup_interval: Duration::from_millis(50),
            ..RelaySettings::default()
        },
    );
    let relay_task = start(relay, &shutdown);
    let origins = std::sync::Arc::new(Origins::default());
    let consumer = events::Consumer::new(
        pool.clone(),
        redis.clone(),
        prefix.clone(),
        "items",
        "reader",
        "reader-1",
        "test",
        events::ConsumerSettings {
            block: Duration::from_millis(50),
            ..events::ConsumerSettings::default()
        },
    );
    let consumer_task = tokio::spawn(consumer.run(origins.clone(), shutdown.clone()));

    eventually("every event consumed", || async {
        origins.0.lock().unwrap().len() == written.len()
    })
    .await;
    let expected: Vec<(Uuid, Option<events::Origin>)> = written
        .iter()
        .zip(&positions)
        .map(|(id, position)| {
            let origin = events::Origin {
                outbox: SCHEMA.to_owned(),
                position: *position,
            };
            (*id, Some(origin))
        })
        .collect();
    assert_eq!(*origins.0.lock().unwrap(), expected);

    // Everything is confirmed and past its retention: every row goes but the newest.
    eventually("retention to trim all but the newest row", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        outbox::snapshot_position(&mut tx).await.unwrap(),
        *positions.last().unwrap()
    );
    tx.rollback().await.unwrap();
    shutdown.trigger();
    relay_task.await.unwrap();
    consumer_task.await.unwrap();
}
