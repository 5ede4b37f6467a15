//! The settling consumer works set-based, against a real PostgreSQL: a batch's events are read
//! first and written together at its end, balances last — so other writers of the same
//! accounts (deposits, withdrawals, other batches) go ahead while a batch is open. Trades post
//! from `available`: the ledger holds nothing for open orders (ADR 0023 slice 3b), and its
//! non-negative balances are the backstop behind risk's reservations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::Asset;
use contracts::events::{OrderAccepted, OrderCompleted, TradeExecuted};
use contracts::fees::Fees;
use events::{Envelope, Handler};
use settlement::ledger::Side;
use settlement::settle::Settler;
use sqlx::PgPool;
use uuid::Uuid;

mod support;

use support::{migrations_before, settlement_db, settlement_db_before};

async fn fund(pool: &PgPool, owner: Uuid, asset: &str, available: i64) {
    sqlx::query("INSERT INTO accounts (owner_id, asset, available) VALUES ($1, $2, $3)")
        .bind(owner)
        .bind(asset)
        .bind(available)
        .execute(pool)
        .await
        .unwrap();
}

/// 30,000.00 USD per BTC, 0.01 BTC: 300.00 USD; the taker (buyer) pays 20 bps, the maker 10.
const PRICE: i64 = 3_000_000;
const QUANTITY: i64 = 1_000_000;
const NOTIONAL: i64 = 30_000;
const BUYER_FEE: i64 = 60;
const SELLER_FEE: i64 = 30;

async fn balance(pool: &PgPool, owner: Uuid, asset: &str) -> i64 {
    sqlx::query_scalar("SELECT available FROM accounts WHERE owner_id = $1 AND asset = $2")
        .bind(owner)
        .bind(asset)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `available` and `held`, in a schema older than the migration that dropped `held`.
async fn available_and_held(pool: &PgPool, owner: Uuid, asset: &str) -> (i64, i64) {
    sqlx::query_as("SELECT available, held FROM accounts WHERE owner_id = $1 AND asset = $2")
        .bind(owner)
        .bind(asset)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The constraint that refuses `statement`; the test fails if the statement goes through.
async fn refused_by(pool: &PgPool, statement: &str) -> String {
    let refused = sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(pool)
        .await
        .expect_err("the table refuses it");
    refused
        .as_database_error()
        .and_then(|e| e.constraint())
        .unwrap_or_default()
        .to_owned()
}

/// Two orders that cross: a bid of `buyer` (the taker) and an ask of `seller`.
struct Crossing {
    buyer: Uuid,
    seller: Uuid,
    bid: Uuid,
    ask: Uuid,
}

impl Crossing {
    /// A buyer funded with `usd` and a seller with 0.1 BTC.
    async fn funded(pool: &PgPool, usd: i64) -> Self {
        let crossing = Self {
            buyer: Uuid::now_v7(),
            seller: Uuid::now_v7(),
            bid: Uuid::now_v7(),
            ask: Uuid::now_v7(),
        };
        fund(pool, crossing.buyer, "USD", usd).await;
        fund(pool, crossing.seller, "BTC", 10_000_000).await;
        crossing
    }

    fn executed(&self) -> Envelope {
        let trade = TradeExecuted {
            trade_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: PRICE,
            quantity: QUANTITY,
            maker_order_id: self.ask,
            taker_order_id: self.bid,
            maker_account_id: self.seller,
            taker_account_id: self.buyer,
            taker_side: Side::Buy,
        };
        Envelope::of("orders", "BTC-USD", 1, &trade).unwrap()
    }

    fn accepted(&self, order: Uuid, account: Uuid, side: Side) -> Envelope {
        let accepted = OrderAccepted {
            order_id: order,
            account_id: account,
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            side,
            price: Some(PRICE),
            quantity: QUANTITY,
            protection_price: None,
        };
        Envelope::of("orders", order.to_string(), 1, &accepted).unwrap()
    }

    fn completed(&self, order: Uuid, account: Uuid) -> Envelope {
        let completed = OrderCompleted {
            order_id: order,
            account_id: account,
            symbol: "BTC-USD".to_owned(),
        };
        Envelope::of("orders", order.to_string(), 1, &completed).unwrap()
    }

    /// The trade's delivery, from `available`: the buyer paid the trade and its fee and owns
    /// the BTC, the seller was paid less its fee.
    async fn delivered(&self, pool: &PgPool, usd: i64) {
        assert_eq!(
            balance(pool, self.buyer, "USD").await,
            usd - NOTIONAL - BUYER_FEE
        );
        assert_eq!(balance(pool, self.buyer, "BTC").await, QUANTITY);
        assert_eq!(
            balance(pool, self.seller, "USD").await,
            NOTIONAL - SELLER_FEE
        );
        assert_eq!(
            balance(pool, self.seller, "BTC").await,
            10_000_000 - QUANTITY
        );
    }
}

/// Runs `events` through the settler as one batch, in one transaction; the transaction is
/// left to the caller.
async fn settle_batch(
    settler: &Settler,
    tx: &mut sqlx::PgConnection,
    events: &[Envelope],
) -> Result<(), events::HandlerError> {
    let mut deferred = Default::default();
    for event in events.iter().filter(|e| settler.wants(&e.event_type)) {
        settler.handle(&mut *tx, event, &mut deferred).await?;
    }
    settler.finish(&mut *tx, deferred).await
}

#[sqlx::test(migrations = false)]
async fn an_open_batch_leaves_the_accounts_it_settles_free_until_its_end(pool: PgPool) {
    let pool = settlement_db(&pool).await;
    let crossing = Crossing::funded(&pool, 10_000_000).await;
    let settler = Settler::new(Fees::DEFAULT, &Asset::defaults());

    // The consumer's batch has read the trade between the two, not yet written its balances.
    let mut batch = pool.begin().await.unwrap();
    let mut deferred = Default::default();
    settler
        .handle(&mut batch, &crossing.executed(), &mut deferred)
        .await
        .unwrap();

    // Meanwhile the accounts are free to lock for a balance update (NOWAIT fails at once if
    // not), and a deposit to the buyer commits.
    let mut probe = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM accounts WHERE owner_id = ANY($1) ORDER BY owner_id, asset
            FOR NO KEY UPDATE NOWAIT",
    )
    .bind([crossing.buyer, crossing.seller])
    .execute(&mut *probe)
    .await
    .expect("the open batch holds no lock on the accounts it settles");
    sqlx::query(
        "UPDATE accounts SET available = available + 5000 WHERE owner_id = $1 AND asset = 'USD'",
    )
    .bind(crossing.buyer)
    .execute(&mut *probe)
    .await
    .unwrap();
    probe.commit().await.unwrap();

    // The batch ends: its balances go in on top of what committed meanwhile.
    settler.finish(&mut batch, deferred).await.unwrap();
    batch.commit().await.unwrap();
    crossing.delivered(&pool, 10_005_000).await;
}

#[sqlx::test(migrations = false)]
async fn one_batch_settles_a_trade_published_twice_once_and_moves_nothing_for_orders_ending(
    pool: PgPool,
) {
    let pool = settlement_db(&pool).await;
    let crossing = Crossing::funded(&pool, 10_000_000).await;
    let (buyer, seller) = (crossing.buyer, crossing.seller);

    // Both orders reach the book, trade (the trade published twice by the relay, as two
    // entries) and complete — all in one batch.
    let trade = crossing.executed();
    let mut republished = trade.clone();
    republished.id = Uuid::now_v7();
    let mut replayed_later = trade.clone();
    replayed_later.id = Uuid::now_v7();
    let batch = [
        crossing.accepted(crossing.bid, buyer, Side::Buy),
        crossing.accepted(crossing.ask, seller, Side::Sell),
        trade,
        republished,
        crossing.completed(crossing.ask, seller),
        crossing.completed(crossing.bid, buyer),
    ];
    let settler = Settler::new(Fees::DEFAULT, &Asset::defaults());
    assert!(
        !settler.wants("OrderAccepted") && !settler.wants("OrderCompleted"),
        "order events are acknowledged unread"
    );
    let mut tx = pool.begin().await.unwrap();
    settle_batch(&settler, &mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();

    let settled: i64 = sqlx::query_scalar("SELECT count(*) FROM settled_trades")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(settled, 1, "a trade published twice settles once");
    crossing.delivered(&pool, 10_000_000).await;
    let notices: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'TradeSettled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(notices, 1, "one TradeSettled for the one trade");

    // Another copy in a later batch (a dead letter replayed once the inbox forgot the event):
    // the trade is settled already, and nothing moves again.
    let mut tx = pool.begin().await.unwrap();
    settle_batch(&settler, &mut tx, &[replayed_later])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    crossing.delivered(&pool, 10_000_000).await;
    let settled: i64 = sqlx::query_scalar("SELECT count(*) FROM settled_trades")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(settled, 1, "a trade settled before is not settled again");
}

#[sqlx::test(migrations = false)]
async fn a_trade_the_ledger_cannot_fund_fails_its_whole_batch(pool: PgPool) {
    let pool = settlement_db(&pool).await;
    // The buyer owns the notional but not the fee on top: risk would have refused the order;
    // if a trade gets here all the same, the ledger refuses to post it.
    let crossing = Crossing::funded(&pool, NOTIONAL).await;
    let settler = Settler::new(Fees::DEFAULT, &Asset::defaults());

    let mut tx = pool.begin().await.unwrap();
    let failed = settle_batch(&settler, &mut tx, &[crossing.executed()]).await;
    assert!(failed.is_err(), "the batch fails");
    tx.rollback().await.unwrap();

    // Nothing of it stands: no trade, no transfer, no notice, the balances as they were.
    for table in [
        "settled_trades",
        "transfers WHERE trade_id IS NOT NULL",
        "outbox",
    ] {
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(rows, 0, "{table}");
    }
    assert_eq!(balance(&pool, crossing.buyer, "USD").await, NOTIONAL);
    assert_eq!(balance(&pool, crossing.seller, "BTC").await, 10_000_000);
}

/// The migrations of ADR 0023's slice 3b, of its contract a release later, and of the column
/// `held` a release after that.
const UPGRADE: i64 = 20261204000001;
const CONTRACT: i64 = 20261205000001;
const HELD_DROPPED: i64 = 20261205000002;

/// The upgrade to a ledger without holds: what pending holds still reserved goes back to
/// `available` once, and each hold resolves as its release would have. A release later, the
/// contract drops the holds and the table refuses anything held; a release after that, `held`
/// goes and customer balances still cannot go negative.
#[sqlx::test(migrations = false)]
async fn the_upgrade_gives_back_what_pending_holds_reserved_and_the_contract_drops_the_holds(
    pool: PgPool,
) {
    let pool = settlement_db_before(&pool, UPGRADE).await;
    let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
    // As an older settlement left them: the buyer has 1,000.00 USD of which 601.20 held, the
    // rest of two pending holds (one with 100.00 posted out of it by a trade); the seller's
    // 0.1 BTC is all held.
    sqlx::query(
        "INSERT INTO accounts (owner_id, asset, available, held)
         VALUES ($1, 'USD', 39880, 60120), ($2, 'BTC', 0, 10000000)",
    )
    .bind(buyer)
    .bind(seller)
    .execute(&pool)
    .await
    .unwrap();
    let hold = |owner: Uuid, asset: &str, amount: i64, posted: i64| {
        sqlx::query(
            "INSERT INTO holds (id, owner_id, asset, side, symbol, price, quantity, amount, posted)
             VALUES ($1, $2, $3, 'buy', 'BTC-USD', 3000000, 1000000, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(owner)
        .bind(asset.to_owned())
        .bind(amount)
        .bind(posted)
    };
    hold(buyer, "USD", 30_060, 0).execute(&pool).await.unwrap();
    hold(buyer, "USD", 40_060, 10_000)
        .execute(&pool)
        .await
        .unwrap();
    hold(seller, "BTC", 10_000_000, 0)
        .execute(&pool)
        .await
        .unwrap();

    service_kit::db::migrate(&pool, settlement::SCHEMA, migrations_before(CONTRACT))
        .await
        .unwrap();

    assert_eq!(available_and_held(&pool, buyer, "USD").await, (100_000, 0));
    assert_eq!(
        available_and_held(&pool, seller, "BTC").await,
        (10_000_000, 0)
    );
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, released FROM holds ORDER BY amount")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("voided".to_owned(), 30_060),
            ("posted".to_owned(), 30_060),
            ("voided".to_owned(), 10_000_000)
        ]
    );

    // The contract: nothing is held, so the holds go and the balances stay.
    service_kit::db::migrate(&pool, settlement::SCHEMA, migrations_before(HELD_DROPPED))
        .await
        .unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'settlement' AND table_name IN ('holds', 'released_orders')
         UNION ALL
         SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'settlement' AND table_name = 'transfers' AND column_name = 'hold_id'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(available_and_held(&pool, buyer, "USD").await, (100_000, 0));
    assert_eq!(
        available_and_held(&pool, seller, "BTC").await,
        (10_000_000, 0)
    );
    assert_eq!(
        refused_by(
            &pool,
            "UPDATE accounts SET available = available - 1, held = held + 1"
        )
        .await,
        "accounts_nothing_held"
    );

    // A release later `held` goes, and the balances stay. Its CHECK went with it; the one on
    // `available` alone is back: a customer cannot go below zero, the external account can.
    settlement::migrate(&pool).await.unwrap();
    let held_column: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
          WHERE table_schema = 'settlement' AND table_name = 'accounts' AND column_name = 'held'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held_column, 0);
    assert_eq!(balance(&pool, buyer, "USD").await, 100_000);
    assert_eq!(balance(&pool, seller, "BTC").await, 10_000_000);
    let overdrawn = format!("UPDATE accounts SET available = -1 WHERE owner_id = '{buyer}'");
    assert_eq!(refused_by(&pool, &overdrawn).await, "accounts_non_negative");
    sqlx::query(
        "INSERT INTO accounts (owner_id, asset, available)
         VALUES ('00000000-0000-0000-0000-000000000000', 'USD', -100000)
         ON CONFLICT ON CONSTRAINT accounts_pkey DO UPDATE SET available = -100000",
    )
    .execute(&pool)
    .await
    .expect("the external account is where deposits come from");
}

/// The contract never drops what still holds money: with an account holding something (an
/// older settlement still writing, a hand edit), it stops and changes nothing.
#[sqlx::test(migrations = false)]
async fn the_contract_changes_nothing_while_anything_is_held(pool: PgPool) {
    let pool = settlement_db_before(&pool, CONTRACT).await;
    let owner = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO accounts (owner_id, asset, available, held) VALUES ($1, 'USD', 10, 90)",
    )
    .bind(owner)
    .execute(&pool)
    .await
    .unwrap();

    let refused = settlement::migrate(&pool)
        .await
        .expect_err("something is held");
    assert!(
        refused
            .to_string()
            .contains("the ledger still holds funds: 1 accounts"),
        "{refused}"
    );
    assert_eq!(available_and_held(&pool, owner, "USD").await, (10, 90));
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(holds, 0, "the table is still there");
}
