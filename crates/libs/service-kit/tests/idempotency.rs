//! Idempotency claims against a real PostgreSQL: a claim cut off without an answer is taken
//! over after its lease, and the work that lost it can store nothing (REL-07).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use service_kit::idempotency::{self, Answer, Begin, Claim};
use sqlx::PgPool;
use uuid::Uuid;

const SCHEMA: &str = "claims";

async fn claims_db(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", SCHEMA)]))
        .await
        .unwrap();
    idempotency::migrate(&pool, SCHEMA).await.unwrap();
    pool
}

fn claim_of(begun: Begin) -> Claim {
    match begun {
        Begin::Proceed(claim) => claim,
        _ => panic!("expected to proceed"),
    }
}

fn created() -> Answer {
    Answer {
        status: 201,
        body: r#"{"id":"order-1"}"#.to_owned(),
    }
}

#[sqlx::test(migrations = false)]
async fn a_claim_cut_off_mid_work_is_taken_over_after_its_lease_and_fenced(pool: PgPool) {
    let pool = claims_db(&pool).await;
    let (principal, key) = (Uuid::now_v7(), "retry-me");
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    // The first request claims the key and is cut off (its process dies): no answer, no release.
    let cut_off = claim_of(
        idempotency::begin(&pool, principal, key, &hash)
            .await
            .unwrap(),
    );
    // Within the lease a retry is told the first one is still in flight.
    assert!(matches!(
        idempotency::begin(&pool, principal, key, &hash)
            .await
            .unwrap(),
        Begin::InFlight
    ));
    // A different request with the same key is never a takeover.
    let other = idempotency::request_hash(&serde_json::json!({"side": "sell"}));
    assert!(matches!(
        idempotency::begin_with_lease(&pool, principal, key, &other, Duration::ZERO)
            .await
            .unwrap(),
        Begin::Mismatch
    ));

    // After the lease, the same request takes the claim over.
    let retry = claim_of(
        idempotency::begin_with_lease(&pool, principal, key, &hash, Duration::ZERO)
            .await
            .unwrap(),
    );
    assert_ne!(retry.token, cut_off.token);

    // The cut-off work, had it gone on, can neither answer nor release the key.
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        idempotency::complete(&mut conn, &cut_off, &created())
            .await
            .is_err(),
        "fenced: its transaction must roll back"
    );
    idempotency::abandon(&pool, &cut_off).await;
    assert!(matches!(
        idempotency::begin(&pool, principal, key, &hash)
            .await
            .unwrap(),
        Begin::InFlight
    ));

    // The retry answers, and from then on every retry is replayed that answer.
    idempotency::complete(&mut conn, &retry, &created())
        .await
        .unwrap();
    match idempotency::begin_with_lease(&pool, principal, key, &hash, Duration::ZERO)
        .await
        .unwrap()
    {
        Begin::Replay { status, body } => {
            assert_eq!(status, 201);
            assert_eq!(body, created().body);
        }
        _ => panic!("an answered key is replayed, never taken over"),
    }
}

#[sqlx::test(migrations = false)]
async fn a_withdrawn_claim_fences_its_work_and_an_answered_one_stands(pool: PgPool) {
    use idempotency::Withdrawal;
    let pool = claims_db(&pool).await;
    let principal = Uuid::now_v7();
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    // Unanswered: withdrawn, and the work can no longer store its answer.
    let lost = claim_of(
        idempotency::begin(&pool, principal, "lost", &hash)
            .await
            .unwrap(),
    );
    assert_eq!(
        idempotency::withdraw(&pool, &lost).await.unwrap(),
        Withdrawal::Withdrawn
    );
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        idempotency::complete(&mut conn, &lost, &created())
            .await
            .is_err()
    );

    // Being completed by a transaction that has not committed yet: the withdrawal waits for it
    // and then sees the answer — the work stands.
    let racing = claim_of(
        idempotency::begin(&pool, principal, "racing", &hash)
            .await
            .unwrap(),
    );
    let mut batch = pool.begin().await.unwrap();
    idempotency::complete(&mut batch, &racing, &created())
        .await
        .unwrap();
    let withdrawal = tokio::spawn({
        let (pool, racing) = (pool.clone(), racing.clone());
        async move { idempotency::withdraw(&pool, &racing).await.unwrap() }
    });
    // The withdrawal is blocked on the batch's row lock until the batch commits.
    service_kit::testing::until_waiting_for_a_lock(&pool, "DELETE FROM idempotency_keys").await;
    batch.commit().await.unwrap();
    assert_eq!(withdrawal.await.unwrap(), Withdrawal::Answered);
    assert!(matches!(
        idempotency::begin(&pool, principal, "racing", &hash)
            .await
            .unwrap(),
        Begin::Replay { status: 201, .. }
    ));
}

// Claims written with the answer (`look_up`, `record_all`, `fence`): what the orders service's
// matching batch uses.

/// The claim a first look at an unanswered key gives.
async fn looked_up(pool: &PgPool, principal: Uuid, key: &str, hash: &[u8]) -> Claim {
    claim_of(
        idempotency::look_up(pool, principal, key, hash)
            .await
            .unwrap(),
    )
}

async fn record(pool: &PgPool, claim: &Claim) -> idempotency::Recorded {
    let mut tx = pool.begin().await.unwrap();
    let recorded = idempotency::record_all(&mut tx, &[(claim.clone(), created())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    recorded
}

#[sqlx::test(migrations = false)]
async fn an_answer_recorded_with_its_claim_is_replayed_and_a_second_writer_finds_it_taken(
    pool: PgPool,
) {
    use idempotency::Recorded;
    let pool = claims_db(&pool).await;
    let principal = Uuid::now_v7();
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    // Two duplicates look before either has answered (two replicas): both may go ahead.
    let first = looked_up(&pool, principal, "twice", &hash).await;
    let second = looked_up(&pool, principal, "twice", &hash).await;
    assert_eq!(record(&pool, &first).await, Recorded::All);
    assert_eq!(
        record(&pool, &second).await,
        Recorded::KeyTaken,
        "the second writer's work must roll back"
    );

    // From then on: replayed; another body with the key is a mismatch.
    assert!(matches!(
        idempotency::look_up(&pool, principal, "twice", &hash).await.unwrap(),
        Begin::Replay { status: 201, ref body } if *body == created().body
    ));
    let other = idempotency::request_hash(&serde_json::json!({"side": "sell"}));
    assert!(matches!(
        idempotency::look_up(&pool, principal, "twice", &other)
            .await
            .unwrap(),
        Begin::Mismatch
    ));

    // One key twice in one batch: taken, and nothing of the batch stored (it is then replayed
    // job by job).
    let a = looked_up(&pool, principal, "same-batch", &hash).await;
    let b = looked_up(&pool, principal, "same-batch", &hash).await;
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        idempotency::record_all(&mut tx, &[(a, created()), (b, created())])
            .await
            .unwrap(),
        Recorded::KeyTaken
    );
    tx.rollback().await.unwrap();
    assert!(matches!(
        idempotency::look_up(&pool, principal, "same-batch", &hash)
            .await
            .unwrap(),
        Begin::Proceed(_)
    ));

    // A key claimed the other way (`begin`) within its lease is not overwritten.
    let claimed = claim_of(
        idempotency::begin(&pool, principal, "claimed", &hash)
            .await
            .unwrap(),
    );
    assert!(matches!(
        idempotency::look_up(&pool, principal, "claimed", &hash)
            .await
            .unwrap(),
        Begin::InFlight
    ));
    let intruder = Claim {
        token: Uuid::now_v7(),
        ..claimed
    };
    assert_eq!(record(&pool, &intruder).await, Recorded::KeyTaken);
}

#[sqlx::test(migrations = false)]
async fn a_fenced_claim_can_never_record_its_answer_but_a_retry_can(pool: PgPool) {
    use idempotency::{Recorded, Withdrawal};
    let pool = claims_db(&pool).await;
    let principal = Uuid::now_v7();
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    // Work whose outcome was lost is fenced: its batch, still queued somewhere, cannot commit.
    let lost = looked_up(&pool, principal, "k", &hash).await;
    assert!(
        lost.unwritten,
        "no row yet: its answer would be a plain insert"
    );
    assert_eq!(
        idempotency::fence(&pool, &lost).await.unwrap(),
        Withdrawal::Withdrawn
    );
    assert_eq!(record(&pool, &lost).await, Recorded::KeyTaken);

    // A retry is not told "in flight": it works under a new token, twice fenced too.
    let retry = looked_up(&pool, principal, "k", &hash).await;
    assert_ne!(retry.token, lost.token);
    assert_eq!(
        idempotency::fence(&pool, &retry).await.unwrap(),
        Withdrawal::Withdrawn
    );
    assert_eq!(record(&pool, &lost).await, Recorded::KeyTaken);
    assert_eq!(record(&pool, &retry).await, Recorded::KeyTaken);

    // The third answers; fencing it afterwards finds its answer, and the others stay fenced.
    let third = looked_up(&pool, principal, "k", &hash).await;
    assert!(!third.unwritten, "it takes over the fenced row");
    assert_eq!(record(&pool, &third).await, Recorded::All);
    assert_eq!(
        idempotency::fence(&pool, &third).await.unwrap(),
        Withdrawal::Answered
    );
    assert_eq!(
        idempotency::fence(&pool, &lost).await.unwrap(),
        Withdrawal::Withdrawn,
        "answered, but not by the lost work"
    );
    assert!(matches!(
        idempotency::look_up(&pool, principal, "k", &hash)
            .await
            .unwrap(),
        Begin::Replay { status: 201, .. }
    ));
}

#[sqlx::test(migrations = false)]
async fn a_fence_waits_for_a_batch_that_is_recording_the_key(pool: PgPool) {
    use idempotency::{Recorded, Withdrawal};
    let pool = claims_db(&pool).await;
    let principal = Uuid::now_v7();
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    for (key, commits, outcome) in [
        ("committed", true, Withdrawal::Answered),
        ("rolled-back", false, Withdrawal::Withdrawn),
    ] {
        let claim = looked_up(&pool, principal, key, &hash).await;
        let mut batch = pool.begin().await.unwrap();
        assert_eq!(
            idempotency::record_all(&mut batch, &[(claim.clone(), created())])
                .await
                .unwrap(),
            Recorded::All
        );
        let fence = tokio::spawn({
            let (pool, claim) = (pool.clone(), claim.clone());
            async move { idempotency::fence(&pool, &claim).await.unwrap() }
        });
        // The fence's insert, blocked on the batch's uncommitted row.
        service_kit::testing::until_waiting_for_a_lock(&pool, "request_hash, fenced)").await;
        if commits {
            batch.commit().await.unwrap();
        } else {
            batch.rollback().await.unwrap();
        }
        assert_eq!(fence.await.unwrap(), outcome, "{key}");
    }
}

#[test]
fn a_key_in_flight_in_this_process_is_turned_away_until_its_work_ends() {
    let keys = idempotency::InFlightKeys::default();
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let working = keys.enter(alice, "k").expect("first");
    assert!(
        keys.enter(alice, "k").is_none(),
        "a duplicate is turned away"
    );
    assert!(keys.enter(bob, "k").is_some(), "keys are per principal");
    drop(working);
    assert!(
        keys.enter(alice, "k").is_some(),
        "free again once the work ended"
    );
}

#[sqlx::test(migrations = false)]
async fn look_ups_arriving_during_a_read_are_read_together_and_each_answered_as_alone(
    pool: PgPool,
) {
    let pool = claims_db(&pool).await;
    let principal = Uuid::now_v7();
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));
    let other = idempotency::request_hash(&serde_json::json!({"side": "sell"}));
    // One key answered, one claimed the other way and in flight, one never seen.
    let answered = looked_up(&pool, principal, "answered", &hash).await;
    assert_eq!(record(&pool, &answered).await, idempotency::Recorded::All);
    idempotency::begin(&pool, principal, "claimed", &hash)
        .await
        .unwrap();
    let shutdown = service_kit::Shutdown::new();
    let look_ups = idempotency::LookUps::new(
        pool.clone(),
        service_kit::Supervisor::new("test", &shutdown),
    );
    let look_up = |key: &'static str, hash: Vec<u8>| {
        let look_ups = look_ups.clone();
        tokio::spawn(async move { look_ups.look_up(principal, key, &hash).await.unwrap() })
    };

    // The first read is held up by a lock on the table...
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = look_up("answered", hash.clone());
    service_kit::testing::until_waiting_for_a_lock(&pool, "idempotency_keys").await;
    // ...so the look-ups arriving meanwhile wait for the next read, not each for their own.
    let replayed = look_up("answered", hash.clone());
    let mismatched = look_up("answered", other.clone());
    let in_flight = look_up("claimed", hash.clone());
    let new = look_up("new", hash.clone());
    service_kit::testing::eventually("four look-ups waiting for the next read", || async {
        look_ups.waiting() == 4
    })
    .await;
    let reads_waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reads_waiting, 1, "one statement reads for everyone waiting");
    blocker.rollback().await.unwrap();

    // Each is told what a look-up of its own would have told it.
    for replay in [first.await.unwrap(), replayed.await.unwrap()] {
        assert!(
            matches!(replay, Begin::Replay { status: 201, ref body } if *body == created().body)
        );
    }
    assert!(matches!(mismatched.await.unwrap(), Begin::Mismatch));
    assert!(matches!(in_flight.await.unwrap(), Begin::InFlight));
    let new = claim_of(new.await.unwrap());
    assert_eq!((new.principal, new.key.as_str()), (principal, "new"));
    assert_eq!(look_ups.waiting(), 0);
    // Reads start again for whoever comes next.
    assert!(matches!(
        look_up("answered", other).await.unwrap(),
        Begin::Mismatch
    ));
}

#[sqlx::test(migrations = false)]
async fn the_look_ups_read_keeps_one_plan_instead_of_planning_every_read(pool: PgPool) {
    let pool = claims_db(&pool).await;
    // A table of a running service's size, with its statistics: the plans weighed below are
    // then index look-ups, whose cost grows with the number of keys read.
    sqlx::query(
        "INSERT INTO idempotency_keys (principal_id, key, request_hash)
         SELECT gen_random_uuid(), 'key-' || n, '\\x00' FROM generate_series(1, 50000) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE idempotency_keys")
        .execute(&pool)
        .await
        .unwrap();
    // One connection, so every read runs on it and its prepared statement can be inspected.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let shutdown = service_kit::Shutdown::new();
    let look_ups =
        idempotency::LookUps::new(one.clone(), service_kit::Supervisor::new("test", &shutdown));
    let hash = idempotency::request_hash(&serde_json::json!({"side": "buy"}));

    // Reads of different sizes: a plan made for the keys' count would be made every time.
    for size in 1..=12 {
        let principal = Uuid::now_v7();
        let reads: Vec<_> = (0..size)
            .map(|n| {
                let look_ups = look_ups.clone();
                let hash = hash.clone();
                tokio::spawn(async move {
                    look_ups
                        .look_up(principal, &format!("key-{n}"), &hash)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for read in reads {
            assert!(matches!(read.await.unwrap(), Begin::Proceed(_)));
        }
    }

    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements
          WHERE statement LIKE '%JOIN idempotency_keys k ON k.principal_id = q.principal_id%'",
    )
    .fetch_one(&one)
    .await
    .unwrap();
    // PostgreSQL tries five custom plans before it weighs the generic one.
    assert!(custom <= 5, "planned {custom} times");
    assert!(generic >= 7, "the generic plan served {generic} reads");
}
