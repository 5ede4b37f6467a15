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
