//! Symbol ownership against a real PostgreSQL (TRD-08, ADR 0014): one owner per symbol at a
//! time, a takeover waits for the batch the old owner is committing and fences off every
//! later one, and a replica whose lease ran out (dead, or paused) loses its symbols.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use orders::ownership::{Owner, Ownership};
use orders::store;
use sqlx::PgPool;
use uuid::Uuid;

mod database;

use database::{SYMBOL, orders_db};

#[sqlx::test(migrations = false)]
async fn a_takeover_waits_for_the_old_owners_batch_then_fences_it_off(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(
        store::take_symbol(&pool, SYMBOL, 0, old).await.unwrap(),
        Some(1)
    );
    // Two first owners: one wins.
    assert_eq!(
        store::take_symbol(&pool, SYMBOL, 0, new).await.unwrap(),
        None
    );

    // The old owner is committing a batch when the new one takes the symbol over.
    let mut batch = pool.begin().await.unwrap();
    assert!(store::fence(&mut batch, SYMBOL, 1).await.unwrap());
    sqlx::query("UPDATE instruments SET updated_at = 'epoch' WHERE symbol = $1")
        .bind(SYMBOL)
        .execute(&mut *batch)
        .await
        .unwrap();
    let takeover = tokio::spawn({
        let pool = pool.clone();
        async move { store::take_symbol(&pool, SYMBOL, 1, new).await.unwrap() }
    });
    // The takeover waits for that batch rather than passing it...
    service_kit::testing::until_waiting_for_a_lock(&pool, "UPDATE symbol_owners").await;
    batch.commit().await.unwrap();
    assert_eq!(takeover.await.unwrap(), Some(2));
    // ...so the new owner, rebuilding its book now, sees what the batch wrote.
    let written: bool = sqlx::query_scalar(
        "SELECT updated_at = 'epoch'::timestamptz FROM instruments WHERE symbol = $1",
    )
    .bind(SYMBOL)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(written);

    // Every later batch of the old owner is refused inside its own transaction.
    let mut late = pool.begin().await.unwrap();
    assert!(!store::fence(&mut late, SYMBOL, 1).await.unwrap());
    // And its stale view cannot take the symbol back.
    assert_eq!(
        store::take_symbol(&pool, SYMBOL, 1, old).await.unwrap(),
        None
    );
}

#[sqlx::test(migrations = false)]
async fn a_replica_whose_lease_ran_out_loses_its_symbols_and_one_that_leaves_gives_them_up(
    pool: PgPool,
) {
    let pool = orders_db(&pool).await;
    let (first, second) = (Ownership::new(pool.clone()), Ownership::new(pool.clone()));
    first.advertise("http://127.0.0.1:1".to_owned());
    second.advertise("http://127.0.0.1:2".to_owned());
    first.renew().await.unwrap();
    second.renew().await.unwrap();

    // The first to ask owns it; the other is sent there.
    assert_eq!(
        first.resolve(SYMBOL).await.unwrap(),
        Some(Owner::Here { epoch: 1 })
    );
    assert_eq!(
        second.resolve(SYMBOL).await.unwrap(),
        Some(Owner::There {
            replica: first.replica(),
            address: "http://127.0.0.1:1".to_owned()
        })
    );
    assert_eq!(first.resolve("NO-SUCH").await.unwrap(), None);

    // The first stops renewing (killed, or paused): once its lease has run out, the next
    // replica to ask takes the symbol under a new epoch.
    sqlx::query("UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(first.replica())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        second.resolve(SYMBOL).await.unwrap(),
        Some(Owner::Here { epoch: 2 })
    );
    // Back from its pause it renews, and finds the symbol elsewhere.
    first.renew().await.unwrap();
    assert!(matches!(
        first.resolve(SYMBOL).await.unwrap(),
        Some(Owner::There { replica, .. }) if replica == second.replica()
    ));

    // A clean stop gives the symbol up at once, lease or not.
    second.leave().await.unwrap();
    assert_eq!(
        first.resolve(SYMBOL).await.unwrap(),
        Some(Owner::Here { epoch: 3 })
    );

    // A replica dead for an hour is forgotten; a live one is kept.
    sqlx::query(
        "INSERT INTO replicas (id, address, lease_until)
         VALUES ($1, 'http://127.0.0.1:3', now() - interval '2 hours')",
    )
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    first.purge_dead().await.unwrap();
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM replicas")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, vec![first.replica()]);
}
