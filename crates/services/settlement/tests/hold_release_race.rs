//! A hold and its order's release racing each other against a real PostgreSQL: whichever
//! starts first, the other sees it — never a hold left pending for an order already given up
//! (found by the load generator under overload; TRD-06).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::{Asset, Side};
use events::{Envelope, Handler};
use settlement::settle::Settler;
use settlement::store::{self, NewHold};
use sqlx::PgPool;
use uuid::Uuid;

mod support;

use support::settlement_db;

#[sqlx::test(migrations = false)]
async fn a_release_racing_a_hold_being_placed_waits_for_it_and_releases_it(pool: PgPool) {
    let pool = settlement_db(&pool).await;
    let (owner, order) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO accounts (owner_id, asset, available) VALUES ($1, 'USD', 1000000)")
        .bind(owner)
        .execute(&pool)
        .await
        .unwrap();

    // The hold writer is inserting the order's hold; its transaction has not committed.
    let mut placing = pool.begin().await.unwrap();
    let hold = NewHold {
        id: order,
        owner,
        asset: "USD".to_owned(),
        side: Side::Buy,
        symbol: "BTC-USD".to_owned(),
        price: 3_000_000,
        quantity: 1_000_000,
        amount: 30_100,
    };
    let (_, placed) = store::place_hold(&mut placing, &hold).await.unwrap();
    assert!(placed);

    // Meanwhile orders gives the order up (its hold call timed out): settlement reads the
    // release. It must not conclude "no hold yet" from a snapshot without the hold.
    let release = tokio::spawn({
        let pool = pool.clone();
        async move {
            let event = Envelope::of(
                "orders",
                owner.to_string(),
                0,
                &contracts::events::OrderRejected {
                    order_id: Some(order),
                    account_id: owner,
                    symbol: "BTC-USD".to_owned(),
                    reason: "not_placed".to_owned(),
                },
            )
            .unwrap();
            let settler = Settler::new(contracts::fees::Fees::DEFAULT, &Asset::defaults());
            let mut tx = pool.begin().await.unwrap();
            let mut deltas = Default::default();
            settler.handle(&mut tx, &event, &mut deltas).await.unwrap();
            settler.finish(&mut tx, deltas).await.unwrap();
            tx.commit().await.unwrap();
        }
    });
    service_kit::testing::until_waiting_for_a_lock(&pool, "pg_advisory_xact_lock").await;
    placing.commit().await.unwrap();
    release.await.unwrap();

    // The release saw the hold and gave its funds back.
    let (status,): (String,) = sqlx::query_as("SELECT status FROM holds WHERE id = $1")
        .bind(order)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(status, "pending");
    let (available, held): (i64, i64) = sqlx::query_as(
        "SELECT available, held FROM accounts WHERE owner_id = $1 AND asset = 'USD'",
    )
    .bind(owner)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((available, held), (1_000_000, 0));
}
