//! The settling consumer works set-based, against a real PostgreSQL: a batch's events are read
//! first and written together at its end, balances last — so holds for new orders of the same
//! accounts go ahead while a batch is open (the order path's main wait under load), and one
//! batch can carry an order's trades and its end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::Asset;
use contracts::events::{OrderAccepted, OrderCompleted, TradeExecuted};
use contracts::fees::Fees;
use events::{Envelope, Handler};
use settlement::ledger::{self, Side};
use settlement::settle::Settler;
use settlement::store::{self, NewHold};
use sqlx::PgPool;
use uuid::Uuid;

mod support;

use support::settlement_db;

async fn fund(pool: &PgPool, owner: Uuid, asset: &str, available: i64) {
    sqlx::query("INSERT INTO accounts (owner_id, asset, available) VALUES ($1, $2, $3)")
        .bind(owner)
        .bind(asset)
        .bind(available)
        .execute(pool)
        .await
        .unwrap();
}

/// 30,000.00 USD per BTC, 0.01 BTC.
const PRICE: i64 = 3_000_000;
const QUANTITY: i64 = 1_000_000;

fn hold(owner: Uuid, side: Side) -> NewHold {
    let amount = ledger::hold_amount(side, PRICE, QUANTITY, 8, Fees::DEFAULT).unwrap();
    NewHold {
        id: Uuid::now_v7(),
        owner,
        asset: match side {
            Side::Buy => "USD",
            Side::Sell => "BTC",
        }
        .to_owned(),
        side,
        symbol: "BTC-USD".to_owned(),
        price: PRICE,
        quantity: QUANTITY,
        amount,
    }
}

async fn balance(pool: &PgPool, owner: Uuid, asset: &str) -> (i64, i64) {
    sqlx::query_as("SELECT available, held FROM accounts WHERE owner_id = $1 AND asset = $2")
        .bind(owner)
        .bind(asset)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The trade's delivery: the buyer holds the BTC, the seller was paid `proceeds` USD and has
/// nothing left held.
async fn delivered(pool: &PgPool, buyer: Uuid, seller: Uuid, proceeds: i64) {
    assert_eq!(balance(pool, buyer, "BTC").await, (QUANTITY, 0));
    assert_eq!(balance(pool, seller, "USD").await, (proceeds, 0));
    assert_eq!(
        balance(pool, seller, "BTC").await,
        (10_000_000 - QUANTITY, 0)
    );
}

/// A buyer funded with USD and a seller with BTC, each with a hold for an order at PRICE and
/// QUANTITY placed: settlement's pool and the two holds.
async fn crossing_holds(test_pool: &PgPool) -> (PgPool, NewHold, NewHold) {
    let pool = settlement_db(test_pool).await;
    let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
    fund(&pool, buyer, "USD", 10_000_000).await;
    fund(&pool, seller, "BTC", 10_000_000).await;
    let (bid, ask) = (hold(buyer, Side::Buy), hold(seller, Side::Sell));
    store::place_holds(&pool, &[bid.clone(), ask.clone()])
        .await
        .unwrap();
    (pool, bid, ask)
}

#[sqlx::test(migrations = false)]
async fn a_hold_goes_ahead_while_a_batch_settling_the_same_accounts_is_open(pool: PgPool) {
    let (pool, bid, ask) = crossing_holds(&pool).await;
    let (buyer, seller) = (bid.owner, ask.owner);

    // The consumer's batch has written the trade between the two, not yet its balances.
    let trade = Envelope::new(
        "orders",
        "TradeExecuted",
        1,
        "BTC-USD",
        1,
        serde_json::json!({
            "trade_id": Uuid::now_v7(), "symbol": "BTC-USD", "base_asset": "BTC",
            "quote_asset": "USD", "price": PRICE, "quantity": QUANTITY,
            "maker_order_id": ask.id, "taker_order_id": bid.id,
            "maker_account_id": seller, "taker_account_id": buyer, "taker_side": "buy",
        }),
    );
    let settler = Settler::new(Fees::DEFAULT, &Asset::defaults());
    let mut batch = pool.begin().await.unwrap();
    let mut deltas = Default::default();
    settler
        .handle(&mut batch, &trade, &mut deltas)
        .await
        .unwrap();

    // Meanwhile: the accounts are free to lock for a balance update (NOWAIT fails at once if
    // not), and the hold writer places the buyer's next order's hold.
    let mut probe = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM accounts WHERE owner_id = ANY($1) ORDER BY owner_id, asset
            FOR NO KEY UPDATE NOWAIT",
    )
    .bind([buyer, seller])
    .execute(&mut *probe)
    .await
    .expect("the open batch holds no lock on the accounts it settles");
    probe.rollback().await.unwrap();
    let next = hold(buyer, Side::Buy);
    store::place_holds(&pool, std::slice::from_ref(&next))
        .await
        .unwrap();

    // The batch ends: its balances go in on top of the hold placed meanwhile.
    settler.finish(&mut batch, deltas).await.unwrap();
    batch.commit().await.unwrap();
    // 0.01 BTC at 30,000.00: 300.00 USD; the taker (buyer) pays 20 bps, the maker 10 bps.
    let (notional, buyer_fee, seller_fee) = (30_000, 60, 30);
    assert_eq!(
        balance(&pool, buyer, "USD").await,
        (
            10_000_000 - bid.amount - next.amount,
            bid.amount + next.amount - notional - buyer_fee
        ),
        "the buyer paid from the first hold; the second is still held"
    );
    delivered(&pool, buyer, seller, notional - seller_fee).await;
}

fn executed(bid: &NewHold, ask: &NewHold, trade_id: Uuid) -> Envelope {
    let trade = TradeExecuted {
        trade_id,
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        price: PRICE,
        quantity: QUANTITY,
        maker_order_id: ask.id,
        taker_order_id: bid.id,
        maker_account_id: ask.owner,
        taker_account_id: bid.owner,
        taker_side: Side::Buy,
    };
    Envelope::of("orders", "BTC-USD", 1, &trade).unwrap()
}

fn accepted(hold: &NewHold) -> Envelope {
    let accepted = OrderAccepted {
        order_id: hold.id,
        account_id: hold.owner,
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        side: hold.side,
        price: Some(PRICE),
        quantity: QUANTITY,
        protection_price: None,
    };
    Envelope::of("orders", hold.id.to_string(), 1, &accepted).unwrap()
}

fn completed(hold: &NewHold) -> Envelope {
    let completed = OrderCompleted {
        order_id: hold.id,
        account_id: hold.owner,
        symbol: "BTC-USD".to_owned(),
    };
    Envelope::of("orders", hold.id.to_string(), 1, &completed).unwrap()
}

#[sqlx::test(migrations = false)]
async fn one_batch_settles_trades_and_releases_the_holds_of_the_orders_they_completed(
    pool: PgPool,
) {
    let (pool, bid, ask) = crossing_holds(&pool).await;
    let (buyer, seller) = (bid.owner, ask.owner);

    // Both orders reach the book, trade (the trade published twice by the relay, as two
    // entries) and complete — all in one batch.
    let trade = executed(&bid, &ask, Uuid::now_v7());
    let mut republished = trade.clone();
    republished.id = Uuid::now_v7();
    let batch = [
        accepted(&bid),
        accepted(&ask),
        trade,
        republished,
        completed(&ask),
        completed(&bid),
    ];
    let settler = Settler::new(Fees::DEFAULT, &Asset::defaults());
    let mut tx = pool.begin().await.unwrap();
    let mut deferred = Default::default();
    for event in &batch {
        settler.handle(&mut tx, event, &mut deferred).await.unwrap();
    }
    settler.finish(&mut tx, deferred).await.unwrap();
    // Each hold was written once for all the batch did to it — accepted, posted out of,
    // released — not once per step: every write is a new row version in every index.
    let hold_writes: i64 = sqlx::query_scalar(
        "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'holds'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(hold_writes, 2, "two holds, one update each");
    tx.commit().await.unwrap();

    // Settled once; nothing left held: each side paid the trade and its fee, and what its hold
    // kept beyond that went back.
    let settled: i64 = sqlx::query_scalar("SELECT count(*) FROM settled_trades")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(settled, 1, "a trade published twice settles once");
    let (notional, buyer_fee, seller_fee) = (30_000, 60, 30);
    assert_eq!(
        balance(&pool, buyer, "USD").await,
        (10_000_000 - notional - buyer_fee, 0)
    );
    delivered(&pool, buyer, seller, notional - seller_fee).await;
    let holds: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, accepted_at IS NOT NULL FROM holds ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        holds,
        vec![("posted".to_owned(), true), ("posted".to_owned(), true)]
    );
    let notices: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'TradeSettled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(notices, 1, "one TradeSettled for the one trade");
}
