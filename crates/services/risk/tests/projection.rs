//! Risk's consumers against a real PostgreSQL. The orders consumer works set-based: one batch
//! can carry orders reaching the book, their trades and their ends, and the tables and memory
//! end as they would after applying the events one by one. With settlement's consumer, the
//! tables keep what memory has committed out of balances, so a restart commits it again; and
//! `starts` tells a restart whether the process before it handed over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use contracts::events::{
    OrderAccepted, OrderCancelled, OrderCompleted, StreamMarked, TradeExecuted, TradeSettled,
};
use contracts::{Asset, Side};
use events::{Envelope, Handler, Origin};
use risk::book::Book;
use risk::ledger_feed::LedgerFeed;
use risk::project::Projector;
use sqlx::PgPool;
use uuid::Uuid;

async fn risk_db(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", risk::SCHEMA)]))
        .await
        .unwrap();
    risk::migrate(&pool).await.unwrap();
    pool
}

fn accepted(order: Uuid, account: Uuid, side: Side, quantity: i64) -> Envelope {
    Envelope::of(
        "orders",
        order.to_string(),
        1,
        &OrderAccepted {
            order_id: order,
            account_id: account,
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            side,
            price: Some(3_000_000),
            quantity,
            protection_price: None,
        },
    )
    .unwrap()
}

/// 0.01 BTC at 30,000.00 from the resting `maker` (a buy) to the `taker` (a sell).
fn trade(maker: (Uuid, Uuid), taker: (Uuid, Uuid)) -> Envelope {
    Envelope::of(
        "orders",
        "BTC-USD",
        2,
        &TradeExecuted {
            trade_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: 3_000_000,
            quantity: 1_000_000,
            maker_order_id: maker.0,
            maker_account_id: maker.1,
            taker_order_id: taker.0,
            taker_account_id: taker.1,
            taker_side: Side::Sell,
        },
    )
    .unwrap()
}

fn completed(order: Uuid, account: Uuid) -> Envelope {
    Envelope::of(
        "orders",
        order.to_string(),
        3,
        &OrderCompleted {
            order_id: order,
            account_id: account,
            symbol: "BTC-USD".to_owned(),
        },
    )
    .unwrap()
}

/// One consumer transaction: every event read, the batch written, committed, then memory.
async fn apply(pool: &PgPool, projector: &Projector, batch: &[Envelope]) {
    let mut tx = pool.begin().await.unwrap();
    let mut deferred = Default::default();
    for event in batch {
        projector
            .handle(&mut tx, event, &mut deferred)
            .await
            .unwrap();
    }
    projector.finish(&mut tx, deferred).await.unwrap();
    tx.commit().await.unwrap();
    for event in batch {
        projector.committed(event);
    }
}

#[sqlx::test(migrations = false)]
async fn one_batch_opens_fills_and_ends_orders_and_moves_positions(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let (bid, buyer) = (Uuid::now_v7(), Uuid::now_v7());
    let (ask, seller) = (Uuid::now_v7(), Uuid::now_v7());
    // A bid for 0.03 BTC rests; an ask for 0.01 sells into it and completes.
    let batch = [
        accepted(bid, buyer, Side::Buy, 3_000_000),
        accepted(ask, seller, Side::Sell, 1_000_000),
        trade((bid, buyer), (ask, seller)),
        completed(ask, seller),
    ];
    let book = Arc::new(Mutex::new(Book::default()));
    let projector = Projector::new(
        book.clone(),
        &Asset::defaults(),
        contracts::fees::Fees::DEFAULT,
    );

    apply(&pool, &projector, &batch).await;

    let open: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT order_id, remaining FROM open_orders ORDER BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(open, vec![(bid, 2_000_000)], "the bid rests with 0.02 left");
    let positions: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT account_id, net_quantity, average_price FROM positions ORDER BY net_quantity",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        positions,
        vec![
            (seller, -1_000_000, 3_000_000),
            (buyer, 1_000_000, 3_000_000)
        ]
    );
    let last: i64 = sqlx::query_scalar("SELECT price FROM last_prices WHERE symbol = 'BTC-USD'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last, 3_000_000);
    // Memory follows once committed.
    assert_eq!(
        book.lock().unwrap().position(buyer, "BTC-USD").net,
        1_000_000
    );
    assert_eq!(
        book.lock().unwrap().position(seller, "BTC-USD").net,
        -1_000_000
    );

    // A later batch: the stored bid fills again and is cancelled with the rest.
    let (second_ask, second_seller) = (Uuid::now_v7(), Uuid::now_v7());
    let cancelled = Envelope::of(
        "orders",
        bid.to_string(),
        5,
        &OrderCancelled {
            order_id: bid,
            account_id: buyer,
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            remaining: 1_000_000,
            reason: "user".to_owned(),
        },
    )
    .unwrap();
    apply(
        &pool,
        &projector,
        &[
            accepted(second_ask, second_seller, Side::Sell, 1_000_000),
            trade((bid, buyer), (second_ask, second_seller)),
            completed(second_ask, second_seller),
            cancelled,
        ],
    )
    .await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "nothing is open any more");
    assert_eq!(
        book.lock().unwrap().position(buyer, "BTC-USD").net,
        2_000_000
    );
}

/// `trade` settled, as settlement's stream delivers it: at `position` of its outbox.
fn settled(trade: &Envelope, position: i64) -> Envelope {
    let executed: TradeExecuted = trade.decode().unwrap();
    let (buyer, seller) = match executed.taker_side {
        Side::Buy => (executed.taker_account_id, executed.maker_account_id),
        Side::Sell => (executed.maker_account_id, executed.taker_account_id),
    };
    let mut envelope = Envelope::of(
        "settlement",
        executed.trade_id.to_string(),
        1,
        &TradeSettled {
            trade_id: executed.trade_id,
            symbol: executed.symbol,
            buyer_account_id: buyer,
            seller_account_id: seller,
            base_asset: executed.base_asset,
            quote_asset: executed.quote_asset,
            price: executed.price,
            quantity: executed.quantity,
            notional: 30_000,
            buyer_fee: 0,
            seller_fee: 0,
            fee_asset: "USD".to_owned(),
        },
    )
    .unwrap();
    envelope.origin = Some(Origin {
        outbox: "settlement".to_owned(),
        position,
    });
    envelope
}

/// One transaction of settlement's consumer, as [`apply`] is one of the orders consumer.
async fn settle(pool: &PgPool, feed: &LedgerFeed, batch: &[Envelope]) {
    let mut tx = pool.begin().await.unwrap();
    let mut deferred = Default::default();
    for event in batch {
        feed.handle(&mut tx, event, &mut deferred).await.unwrap();
    }
    feed.finish(&mut tx, deferred).await.unwrap();
    tx.commit().await.unwrap();
    for event in batch {
        feed.committed(event);
    }
}

/// What a risk started on these tables commits of `asset` for `account`.
async fn committed_after_restart(pool: &PgPool, account: Uuid, asset: &str) -> i64 {
    let book = risk::load_book(pool, Book::default()).await.unwrap();
    book.funds().committed(account, asset)
}

/// ADR 0023 slice 2c: what risk has committed out of balances is in its tables, so a restart
/// commits what memory had — the rest of each open order's reservation and the debits of
/// trades executed and not yet settled — whichever of the two streams is ahead.
#[sqlx::test(migrations = false)]
async fn a_restart_commits_what_open_orders_reserved_and_unsettled_trades_owe(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let book = Arc::new(Mutex::new(Book::default()));
    let fees = contracts::fees::Fees::DEFAULT;
    let projector = Projector::new(book.clone(), &Asset::defaults(), fees);
    let feed = LedgerFeed::new(book.clone());
    let (bid, buyer) = (Uuid::now_v7(), Uuid::now_v7());
    let (ask, seller) = (Uuid::now_v7(), Uuid::now_v7());
    // 0.03 BTC at 30,000.00 (900.00) and the highest fee, rounded up: what its check reserved.
    let bid_holds = contracts::fees::hold_amount(Side::Buy, 3_000_000, 3_000_000, 8, fees).unwrap();
    let first = trade((bid, buyer), (ask, seller));
    apply(
        &pool,
        &projector,
        &[
            accepted(bid, buyer, Side::Buy, 3_000_000),
            accepted(ask, seller, Side::Sell, 1_000_000),
            first.clone(),
            completed(ask, seller),
        ],
    )
    .await;
    let in_memory = |account, asset| book.lock().unwrap().funds().committed(account, asset);
    assert_eq!(
        in_memory(buyer, "USD"),
        bid_holds,
        "the bid's rest and its fill's debit"
    );
    assert_eq!(
        in_memory(seller, "BTC"),
        1_000_000,
        "the ask's fill's debit"
    );
    assert_eq!(
        committed_after_restart(&pool, buyer, "USD").await,
        bid_holds
    );
    assert_eq!(
        committed_after_restart(&pool, seller, "BTC").await,
        1_000_000
    );

    // The trade settles: its debits are paid, the bid's rest stays committed.
    settle(&pool, &feed, &[settled(&first, 1)]).await;
    let bid_rest = book.lock().unwrap().funds().reserved(bid);
    assert_eq!(in_memory(buyer, "USD"), bid_rest);
    assert_eq!(committed_after_restart(&pool, buyer, "USD").await, bid_rest);
    assert_eq!(committed_after_restart(&pool, seller, "BTC").await, 0);

    // A second trade is seen to settle before it is seen to execute.
    let (second_ask, second_seller) = (Uuid::now_v7(), Uuid::now_v7());
    let second = trade((bid, buyer), (second_ask, second_seller));
    settle(&pool, &feed, &[settled(&second, 2)]).await;
    assert_eq!(
        committed_after_restart(&pool, buyer, "USD").await,
        bid_rest,
        "settled first: nothing more is committed"
    );
    apply(
        &pool,
        &projector,
        &[
            accepted(second_ask, second_seller, Side::Sell, 1_000_000),
            second,
            completed(second_ask, second_seller),
        ],
    )
    .await;
    let bid_rest = book.lock().unwrap().funds().reserved(bid);
    assert!(bid_rest < bid_holds / 2, "two fills came out of it");
    assert_eq!(in_memory(buyer, "USD"), bid_rest);
    assert_eq!(committed_after_restart(&pool, buyer, "USD").await, bid_rest);
    assert_eq!(
        committed_after_restart(&pool, second_seller, "BTC").await,
        0
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM unsettled_trades")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "both trades were seen on both streams");
}

/// ADR 0023 slice 4: what a withdrawal reserved is kept until settlement's `FundsWithdrawn`
/// for it is consumed, so a restart in between still commits it; the event ends it.
#[sqlx::test(migrations = false)]
async fn a_withdrawal_reserves_across_a_restart_until_its_booking_is_consumed(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let (account, withdrawal) = (Uuid::now_v7(), Uuid::now_v7());
    let reservation = contracts::funds::WithdrawalReservation {
        withdrawal_id: withdrawal,
        account_id: account,
        asset: "USD".to_owned(),
        amount: 2_500,
    };
    risk::store::reserve_withdrawal(&pool, &reservation)
        .await
        .unwrap();
    assert_eq!(committed_after_restart(&pool, account, "USD").await, 2_500);

    let book = Arc::new(Mutex::new(
        risk::load_book(&pool, Book::default()).await.unwrap(),
    ));
    let feed = LedgerFeed::new(book.clone());
    let mut booked = Envelope::of(
        "settlement",
        account.to_string(),
        1,
        &contracts::events::FundsWithdrawn {
            transfer_id: withdrawal,
            account_id: account,
            asset: "USD".to_owned(),
            amount: 2_500,
        },
    )
    .unwrap();
    booked.origin = Some(Origin {
        outbox: "settlement".to_owned(),
        position: 7,
    });
    settle(&pool, &feed, &[booked]).await;
    assert_eq!(book.lock().unwrap().funds().committed(account, "USD"), 0);
    assert_eq!(committed_after_restart(&pool, account, "USD").await, 0);

    // One settlement neither booked nor gave up lapses; a younger one does not.
    let (lapsing, young) = (Uuid::now_v7(), Uuid::now_v7());
    for withdrawal in [lapsing, young] {
        risk::store::reserve_withdrawal(
            &pool,
            &contracts::funds::WithdrawalReservation {
                withdrawal_id: withdrawal,
                ..reservation.clone()
            },
        )
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE withdrawal_reservations SET reserved_at = now() - interval '11 minutes'
          WHERE withdrawal_id = $1",
    )
    .bind(lapsing)
    .execute(&pool)
    .await
    .unwrap();
    let lapsed = risk::store::lapse_withdrawals(&pool, risk::WITHDRAWAL_RESERVATION_TTL)
        .await
        .unwrap();
    assert_eq!(lapsed, vec![lapsing]);
    assert_eq!(committed_after_restart(&pool, account, "USD").await, 2_500);
}

fn mark(mark_id: Uuid) -> Envelope {
    Envelope::of(
        "orders",
        mark_id.to_string(),
        0,
        &StreamMarked {
            mark_id,
            requested_by: "risk".to_owned(),
        },
    )
    .unwrap()
}

/// ADR 0023, "Catching up before deciding": after a start, an order orders committed before it
/// may still be unread, and its reservation unknown. Funds decide only once the orders
/// consumer has read the mark this start asked for, which orders wrote after everything it had
/// committed — so by then that order's reservation is in.
#[sqlx::test(migrations = false)]
async fn funds_decide_once_the_mark_is_read_behind_what_orders_committed_before_it(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let book = Arc::new(Mutex::new(Book::default()));
    let fees = contracts::fees::Fees::DEFAULT;
    let projector = Projector::new(book.clone(), &Asset::defaults(), fees);
    let (bid, buyer) = (Uuid::now_v7(), Uuid::now_v7());
    book.lock()
        .unwrap()
        .funds_mut()
        .load(contracts::funds::BalanceSnapshot {
            position: 0,
            balances: vec![contracts::funds::AccountBalance {
                account_id: buyer,
                asset: "USD".to_owned(),
                balance: 100_000,
            }],
        });
    let this_start = Uuid::now_v7();
    book.lock().unwrap().funds_mut().await_mark(this_start);
    let deciding = || book.lock().unwrap().funds().deciding();
    assert!(!deciding(), "balances in, the orders stream not read yet");

    // Committed by orders before the mark: a bid reserving 300.60 of the buyer's 1,000.00.
    apply(
        &pool,
        &projector,
        &[accepted(bid, buyer, Side::Buy, 1_000_000)],
    )
    .await;
    assert!(!deciding());
    apply(&pool, &projector, &[mark(Uuid::now_v7())]).await;
    assert!(!deciding(), "an earlier start's mark");

    apply(&pool, &projector, &[mark(this_start)]).await;
    assert!(deciding());
    let bid_holds = contracts::fees::hold_amount(Side::Buy, 3_000_000, 1_000_000, 8, fees).unwrap();
    let funds = |f: fn(&risk::funds::Funds, Uuid, &str) -> i64| {
        f(book.lock().unwrap().funds(), buyer, "USD")
    };
    assert_eq!(funds(risk::funds::Funds::committed), bid_holds);
    assert_eq!(funds(risk::funds::Funds::free), 100_000 - bid_holds);
}

/// Events of one order delivered out of order — its end, then its acceptance (a delivery
/// whose answer was lost while Redis stalled, claimed again seconds later): the order stays
/// ended, and nothing stays committed for it.
#[sqlx::test(migrations = false)]
async fn an_acceptance_delivered_after_its_orders_end_opens_nothing(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let (order, account) = (Uuid::now_v7(), Uuid::now_v7());
    let book = Arc::new(Mutex::new(Book::default()));
    let projector = Projector::new(
        book.clone(),
        &Asset::defaults(),
        contracts::fees::Fees::DEFAULT,
    );

    apply(&pool, &projector, &[completed(order, account)]).await;
    apply(
        &pool,
        &projector,
        &[accepted(order, account, Side::Buy, 1_000_000)],
    )
    .await;
    // And within one batch, as a claimed entry and a new one can be read together.
    let (other, other_account) = (Uuid::now_v7(), Uuid::now_v7());
    apply(
        &pool,
        &projector,
        &[
            completed(other, other_account),
            accepted(other, other_account, Side::Sell, 1_000_000),
        ],
    )
    .await;

    // An end delivered again (a dead letter replayed, a copy under a new event id): in a later
    // batch, and twice within one. Each order is remembered once and no batch fails.
    apply(&pool, &projector, &[completed(order, account)]).await;
    let (third, third_account) = (Uuid::now_v7(), Uuid::now_v7());
    apply(
        &pool,
        &projector,
        &[
            completed(third, third_account),
            completed(third, third_account),
        ],
    )
    .await;
    let ended: i64 = sqlx::query_scalar("SELECT count(*) FROM ended_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ended, 3);

    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "both orders ended before their acceptance arrived");
    for (account, asset) in [(account, "USD"), (other_account, "BTC")] {
        assert_eq!(
            book.lock().unwrap().funds().committed(account, asset),
            0,
            "nothing committed in memory for {account}"
        );
        assert_eq!(committed_after_restart(&pool, account, asset).await, 0);
    }
}

/// Ended orders are remembered as long as the inbox: a purge forgets those made and ended
/// before the retention, and keeps one made long ago that ended recently (it rested).
#[sqlx::test(migrations = false)]
async fn ended_orders_are_forgotten_after_the_retention_only(pool: PgPool) {
    let pool = risk_db(&pool).await;
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let eight_days_ago = std::time::SystemTime::now() - week - week / 7;
    let since_epoch = eight_days_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let old_id = || {
        Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        ))
    };
    let (forgotten, rested, recent) = (old_id(), old_id(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO ended_orders (order_id, ended_at) VALUES
             ($1, now() - interval '8 days'), ($2, now()), ($3, now())",
    )
    .bind(forgotten)
    .bind(rested)
    .bind(recent)
    .execute(&pool)
    .await
    .unwrap();

    let deleted = risk::store::purge_ended(&pool, week, 100).await.unwrap();

    assert_eq!(deleted, 1);
    let mut kept: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM ended_orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    kept.sort();
    let mut expected = vec![rested, recent];
    expected.sort();
    assert_eq!(kept, expected);
}

/// ADR 0023, "A handover": a start waits out the bound on checks unless the process before it
/// recorded a handover after its own start; the first start on a database waits for nothing.
/// Every start takes the number after the last one's, which its verdicts carry to orders'
/// fence ("A fence instead of the wait").
#[sqlx::test(migrations = false)]
async fn a_start_waits_unless_the_start_before_it_handed_over(test_pool: PgPool) {
    let pool = risk_db(&test_pool).await;
    let first = risk::store::record_start(&pool).await.unwrap();
    assert!(!first.follows_unfinished, "nothing ran before the first");
    assert!(!first.follows_unnumbered);

    // The first process stopped without handing over (a crash, a drain cut short).
    let second = risk::store::record_start(&pool).await.unwrap();
    assert!(second.follows_unfinished);
    assert!(
        !risk::store::record_handover(&pool, &first).await.unwrap(),
        "a start that is no longer the latest cannot hand over"
    );

    assert!(risk::store::record_handover(&pool, &second).await.unwrap());
    let third = risk::store::record_start(&pool).await.unwrap();
    assert!(!third.follows_unfinished, "the second handed over");

    // A release older than the handover starts: it moves the start and leaves the handover
    // behind it, which then belongs to no start.
    risk::store::record_handover(&pool, &third).await.unwrap();
    sqlx::query("UPDATE starts SET started_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    let fourth = risk::store::record_start(&pool).await.unwrap();
    assert!(
        fourth.follows_unfinished,
        "the older release's start left checks behind"
    );
    assert!(
        fourth.follows_unnumbered,
        "and they carried no number, which no fence shuts out"
    );
    assert!(!third.follows_unnumbered && !second.follows_unnumbered);
    let fifth = risk::store::record_start(&pool).await.unwrap();
    assert!(!fifth.follows_unnumbered);
    let numbers = [first, second, third, fourth, fifth].map(|start| start.number.0);
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
}
