//! The ticker's volume by the minute (migration `20261205000001_volume_by_minute.sql`): an
//! upgrade counts the last day's trades from before it once, and every trade after it through
//! the trigger, whoever inserts it — a replica of the previous release during a rolling upgrade
//! writes trades without knowing the table exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::PgPool;
use uuid::Uuid;

mod database;

use database::SYMBOL;

/// The migration that brings `volume_by_minute`.
const VOLUME_BY_MINUTE: i64 = 20261205000001;

#[sqlx::test(migrations = false)]
async fn an_upgrade_counts_the_last_days_trades_once_and_the_trigger_every_one_after(pool: PgPool) {
    let pool = database::orders_db_before(&pool, VOLUME_BY_MINUTE).await;
    // Trades from before the upgrade: two within the day, in one minute, and one older.
    let (maker, taker) = (
        database::insert_order(&pool, SYMBOL, None).await,
        database::insert_order(&pool, SYMBOL, None).await,
    );
    trade(&pool, maker, taker, 1, 30, "now() - interval '2 hours'").await;
    trade(&pool, maker, taker, 2, 20, "now() - interval '2 hours'").await;
    trade(&pool, maker, taker, 3, 1_000, "now() - interval '3 days'").await;

    orders::migrate(&pool).await.unwrap();
    assert_eq!(
        volume_24h(&pool).await,
        50,
        "the day's two, once; not the old one"
    );

    // After it, a trade counts as it is inserted — here the way an older release inserts one.
    trade(&pool, maker, taker, 4, 7, "now()").await;
    assert_eq!(volume_24h(&pool).await, 57);
    // One insert of several trades (a matching batch's) counts each of them.
    sqlx::query(
        "INSERT INTO trades (id, symbol, price, quantity, maker_order_id, taker_order_id,
                             maker_account, taker_account, taker_side, sequence)
         SELECT gen_random_uuid(), $1, 3000000, q, $2, $3, $4, $4, 'buy', s
           FROM UNNEST(ARRAY[5, 6]::int8[], ARRAY[100, 200]::int8[]) AS t(s, q)",
    )
    .bind(SYMBOL)
    .bind(maker)
    .bind(taker)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(volume_24h(&pool).await, 357);
    let (_, ticker_volume) = orders::store::ticker(&pool, SYMBOL).await.unwrap();
    assert_eq!(ticker_volume, 357, "the ticker reads the same sums");
}

async fn trade(pool: &PgPool, maker: Uuid, taker: Uuid, sequence: i64, quantity: i64, at: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO trades (id, symbol, price, quantity, maker_order_id, taker_order_id,
                             maker_account, taker_account, taker_side, sequence, executed_at)
         VALUES ($1, $2, 3000000, $3, $4, $5, $6, $6, 'buy', $7, {at})"
    )))
    .bind(Uuid::now_v7())
    .bind(SYMBOL)
    .bind(quantity)
    .bind(maker)
    .bind(taker)
    .bind(Uuid::now_v7())
    .bind(sequence)
    .execute(pool)
    .await
    .unwrap();
}

async fn volume_24h(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(quantity), 0)::int8 FROM volume_by_minute
          WHERE symbol = $1 AND minute > now() - interval '24 hours'",
    )
    .bind(SYMBOL)
    .fetch_one(pool)
    .await
    .unwrap()
}
