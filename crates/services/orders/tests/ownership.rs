//! Symbol ownership against a real PostgreSQL (TRD-08, ADR 0014): one owner per symbol at a
//! time, a takeover waits for the batch the old owner is committing and fences off every
//! later one, and a replica whose lease ran out (dead, or paused) loses its symbols. The same
//! row carries risk's fence (ADR 0023): once a start of risk has raised it, no batch with a
//! check of an earlier start commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::checks::RiskStart;
use orders::engine;
use orders::error::Error;
use orders::order_entry::OrderStatus;
use orders::ownership::{Owner, Ownership};
use orders::store::{self, MatchedRows, OrderChange, OrderRow, TradeInsert};
use sqlx::PgPool;
use uuid::Uuid;

mod database;
mod replica;

use database::{SYMBOL, insert_instrument, orders_db};
use replica::Replica;

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
    let placed = resting_order(Some("first"));
    let mut batch = pool.begin().await.unwrap();
    store::write_matched(&mut batch, &matched(1, std::slice::from_ref(&placed)))
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
    assert_eq!(orders_of(&pool).await, vec![placed.id]);

    // Every later batch of the old owner is refused inside its own transaction, and writes
    // nothing: not its new order, not its fill of the order it matched against, not the trade.
    let late_order = resting_order(Some("late"));
    let fill = filled(&placed);
    let mut late = pool.begin().await.unwrap();
    let refused = store::write_matched(
        &mut late,
        &MatchedRows {
            changed: std::slice::from_ref(&fill),
            trades: &[trade(placed.id, late_order.id, 7)],
            ..matched(1, std::slice::from_ref(&late_order))
        },
    )
    .await;
    assert!(matches!(refused, Err(Error::NotOwner)), "{refused:?}");
    late.commit().await.unwrap();
    assert_eq!(orders_of(&pool).await, vec![placed.id]);
    assert_eq!(filled_quantity(&pool, placed.id).await, 0);
    assert_eq!(trades_count(&pool).await, 0);
    // And its stale view cannot take the symbol back.
    assert_eq!(
        store::take_symbol(&pool, SYMBOL, 1, old).await.unwrap(),
        None
    );
}

/// A book numbers every event it emits, and only a trade or a resting order keeps its number in
/// a row: the owner row keeps the last number of every committed batch, so a rebuilt book never
/// hands out one again — and a batch the fence refused leaves it as it was.
#[sqlx::test(migrations = false)]
async fn a_rebuilt_book_goes_on_after_the_last_sequence_a_committed_batch_gave_out(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    store::take_symbol(&pool, SYMBOL, 0, old).await.unwrap();
    // A batch that rested an order (sequence 1) and then cancelled another (2, in no row).
    let placed = resting_order(None);
    let mut batch = pool.begin().await.unwrap();
    store::write_matched(
        &mut batch,
        &MatchedRows {
            sequence: 2,
            ..matched(1, std::slice::from_ref(&placed))
        },
    )
    .await
    .unwrap();
    batch.commit().await.unwrap();
    assert_eq!(rebuilt_sequence(&pool).await, 2);

    // After a takeover, the old owner's late batch stores neither its rows nor its sequence.
    store::take_symbol(&pool, SYMBOL, 1, new).await.unwrap();
    let mut late = pool.begin().await.unwrap();
    let refused = store::write_matched(
        &mut late,
        &MatchedRows {
            sequence: 9,
            ..matched(1, &[])
        },
    )
    .await;
    assert!(matches!(refused, Err(Error::NotOwner)), "{refused:?}");
    late.commit().await.unwrap();
    assert_eq!(rebuilt_sequence(&pool).await, 2);

    // The new owner's batches go on from there.
    let mut next = pool.begin().await.unwrap();
    store::write_matched(
        &mut next,
        &MatchedRows {
            sequence: 5,
            ..matched(2, &[])
        },
    )
    .await
    .unwrap();
    next.commit().await.unwrap();
    assert_eq!(rebuilt_sequence(&pool).await, 5);
}

/// The upgrade that brings `symbol_owners.last_sequence` starts each owned symbol from what its
/// rows held.
#[sqlx::test(migrations = false)]
async fn an_upgrade_starts_the_stored_sequence_from_the_rows(pool: PgPool) {
    let pool = database::orders_db_before(&pool, LAST_SEQUENCE).await;
    sqlx::query("INSERT INTO symbol_owners (symbol, epoch, replica) VALUES ($1, 1, $2)")
        .bind(SYMBOL)
        .bind(Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();
    database::insert_order(&pool, SYMBOL, Some(4)).await;

    orders::migrate(&pool).await.unwrap();
    assert_eq!(stored_sequences(&pool).await, vec![(SYMBOL.to_owned(), 4)]);
    assert_eq!(rebuilt_sequence(&pool).await, 4);
}

/// The contract release reads a book's sequence from its owner row alone and drops the index
/// the orders' maximum was read by. What a replica older than the column wrote while the
/// release before was rolled out is taken in first — for an owned symbol, and for one whose
/// rows are older than ownership itself (it gets a released owner row).
#[sqlx::test(migrations = false)]
async fn the_contract_takes_in_what_older_replicas_wrote_then_drops_the_index(pool: PgPool) {
    let pool = database::orders_db_before(&pool, SEQUENCE_INDEX_DROPPED).await;
    sqlx::query(
        "INSERT INTO symbol_owners (symbol, epoch, replica, last_sequence) VALUES ($1, 2, $2, 3)",
    )
    .bind(SYMBOL)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    // A replica of the release before the column rested an order at 6 without storing it.
    database::insert_order(&pool, SYMBOL, Some(6)).await;
    // A symbol never owned since ownership came, with an order resting at 9.
    database::insert_instrument(&pool, UNOWNED).await;
    database::insert_order(&pool, UNOWNED, Some(9)).await;
    // And one with no sequenced rows at all gets no owner row.
    database::insert_instrument(&pool, "SOL-USD").await;

    orders::migrate(&pool).await.unwrap();
    assert_eq!(
        stored_sequences(&pool).await,
        vec![(SYMBOL.to_owned(), 6), (UNOWNED.to_owned(), 9)]
    );
    // The owner kept its symbol; the other waits, released, for the first replica to ask.
    let owners: Vec<(String, i64, Option<Uuid>)> =
        sqlx::query_as("SELECT symbol, epoch, replica FROM symbol_owners ORDER BY symbol")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(owners[0].1, 2);
    assert!(owners[0].2.is_some());
    assert_eq!((owners[1].1, owners[1].2), (1, None));
    assert_eq!(rebuilt_sequence(&pool).await, 6);
    let index: Option<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE indexname = 'orders_symbol_sequence_idx'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(index, None);
}

/// Each owner row's symbol and stored sequence, by symbol.
async fn stored_sequences(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT symbol, last_sequence FROM symbol_owners ORDER BY symbol")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The migration that brings `symbol_owners.last_sequence`.
const LAST_SEQUENCE: i64 = 20261206000001;
/// Its contract: the sequence read from the owner row alone, `orders_symbol_sequence_idx` gone.
const SEQUENCE_INDEX_DROPPED: i64 = 20261206000002;
/// A symbol that sorts after [`SYMBOL`].
const UNOWNED: &str = "ETH-USD";

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

#[sqlx::test(migrations = false)]
async fn a_batch_with_a_reused_client_order_id_writes_nothing_even_when_that_order_traded(
    pool: PgPool,
) {
    let pool = orders_db(&pool).await;
    let owner = Uuid::now_v7();
    store::take_symbol(&pool, SYMBOL, 0, owner).await.unwrap();
    let maker = resting_order(Some("my-ref"));
    let mut first = pool.begin().await.unwrap();
    store::write_matched(&mut first, &matched(1, std::slice::from_ref(&maker)))
        .await
        .unwrap();
    first.commit().await.unwrap();

    // The same account's next order reuses the client order id and traded in its batch: the
    // constraint skips its row, so the trade's foreign key finds no taker.
    let reused = OrderRow {
        account_id: maker.account_id,
        side: contracts::Side::Buy,
        ..resting_order(Some("my-ref"))
    };
    let fill = filled(&maker);
    let mut batch = pool.begin().await.unwrap();
    let refused = store::write_matched(
        &mut batch,
        &MatchedRows {
            changed: std::slice::from_ref(&fill),
            trades: &[trade(maker.id, reused.id, 1)],
            ..matched(1, std::slice::from_ref(&reused))
        },
    )
    .await;
    assert!(
        matches!(refused, Err(Error::ClientOrderIdTaken)),
        "{refused:?}"
    );
    drop(batch);

    // Without a trade the shortfall in inserted rows says the same.
    let mut batch = pool.begin().await.unwrap();
    let refused = store::write_matched(&mut batch, &matched(1, &[reused])).await;
    assert!(
        matches!(refused, Err(Error::ClientOrderIdTaken)),
        "{refused:?}"
    );
    drop(batch);

    // Both batches rolled back: the first order as it was, no trade.
    assert_eq!(orders_of(&pool).await, vec![maker.id]);
    assert_eq!(filled_quantity(&pool, maker.id).await, 0);
    assert_eq!(trades_count(&pool).await, 0);
}

/// ADR 0023, "A fence instead of the wait": a start of risk raises its fence in the
/// transaction that writes its mark. The fence waits for the batch in flight, which commits
/// first (so its orders precede the mark on the stream), and every later batch with a check of
/// an earlier start commits nothing; checks of the new start go on.
#[sqlx::test(migrations = false)]
async fn a_risk_fence_waits_for_the_batch_in_flight_then_shuts_out_earlier_starts_checks(
    pool: PgPool,
) {
    let pool = owned_by_a_replica_that_checks_the_fence(&pool).await;

    // A batch with a check of start 1 is committing when start 2 raises its fence.
    let placed = resting_order(Some("first"));
    let mut batch = pool.begin().await.unwrap();
    store::write_matched(&mut batch, &matched(1, std::slice::from_ref(&placed)))
        .await
        .unwrap();
    let fence = tokio::spawn(raise_fence(pool.clone(), 2));
    service_kit::testing::until_waiting_for_a_lock(&pool, "INSERT INTO symbol_owners").await;
    batch.commit().await.unwrap();
    assert_eq!(fence.await.unwrap(), store::RiskFence::Raised);
    assert_eq!(orders_of(&pool).await, vec![placed.id]);

    // A later batch with a check of start 1 writes nothing, and says which start fenced it.
    let late = resting_order(Some("late"));
    let mut tx = pool.begin().await.unwrap();
    let refused = store::write_matched(&mut tx, &matched(1, std::slice::from_ref(&late))).await;
    assert!(
        matches!(
            refused,
            Err(Error::RiskFenced {
                newest: RiskStart(2)
            })
        ),
        "{refused:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(orders_of(&pool).await, vec![placed.id]);

    // Start 2's checks are booked, and so is a batch that places nothing (a cancel).
    let current = resting_order(Some("current"));
    let mut tx = pool.begin().await.unwrap();
    store::write_matched(
        &mut tx,
        &MatchedRows {
            risk_start: Some(RiskStart(2)),
            ..matched(1, std::slice::from_ref(&current))
        },
    )
    .await
    .unwrap();
    store::write_matched(
        &mut tx,
        &MatchedRows {
            risk_start: None,
            ..matched(1, &[])
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut expected = vec![placed.id, current.id];
    expected.sort();
    assert_eq!(orders_of(&pool).await, expected);
}

/// The other order of the race: a batch gathered with a check of start 1 reaches its symbol's
/// row while start 2's fence holds it. It waits, then finds the fence up and commits nothing.
#[sqlx::test(migrations = false)]
async fn a_batch_that_waited_for_a_rising_fence_commits_nothing(pool: PgPool) {
    let pool = owned_by_a_replica_that_checks_the_fence(&pool).await;

    let mut fence = pool.begin().await.unwrap();
    assert_eq!(
        store::raise_risk_fence(&mut fence, RiskStart(2))
            .await
            .unwrap(),
        store::RiskFence::Raised
    );
    let batch = tokio::spawn({
        let pool = pool.clone();
        async move {
            let placed = resting_order(None);
            let mut tx = pool.begin().await.unwrap();
            let written =
                store::write_matched(&mut tx, &matched(1, std::slice::from_ref(&placed))).await;
            tx.commit().await.unwrap();
            written
        }
    });
    service_kit::testing::until_waiting_for_a_lock(&pool, "UPDATE symbol_owners").await;
    fence.commit().await.unwrap();
    let written = batch.await.unwrap();
    assert!(
        matches!(
            written,
            Err(Error::RiskFenced {
                newest: RiskStart(2)
            })
        ),
        "{written:?}"
    );
    assert_eq!(orders_of(&pool).await, Vec::<Uuid>::new());
}

/// A replica of an earlier release books whatever it is handed: while one is live, or still
/// owns a symbol, no fence goes up and risk waits out the bound instead. Once every symbol is
/// with replicas that check the fence, it goes up on every instrument, a symbol never owned
/// included, whose first owner inherits it.
#[sqlx::test(migrations = false)]
async fn a_fence_goes_up_only_where_every_replica_that_may_book_checks_it(pool: PgPool) {
    let pool = orders_db(&pool).await;
    insert_instrument(&pool, "ETH-USD").await;
    // An earlier release's replica: it registers without the column.
    let older = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO replicas (id, address, lease_until)
         VALUES ($1, 'http://127.0.0.1:9', now() + interval '1 hour')",
    )
    .bind(older)
    .execute(&pool)
    .await
    .unwrap();
    store::take_symbol(&pool, SYMBOL, 0, older).await.unwrap();
    assert_eq!(
        raise_fence(pool.clone(), 2).await,
        store::RiskFence::Unsupported
    );

    // Its lease ran out, but it still owns the symbol: paused, it could wake up and book.
    sqlx::query("UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(older)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        raise_fence(pool.clone(), 2).await,
        store::RiskFence::Unsupported
    );
    assert_eq!(risk_starts(&pool).await, vec![(SYMBOL.to_owned(), 0)]);

    // A replica of this release takes the symbol over: the fence goes up everywhere.
    let current = Uuid::now_v7();
    store::renew_replica(&pool, current, "http://127.0.0.1:9", LONG_LEASE)
        .await
        .unwrap();
    store::take_symbol(&pool, SYMBOL, 1, current).await.unwrap();
    assert_eq!(raise_fence(pool.clone(), 2).await, store::RiskFence::Raised);
    // A repeated or older fence lowers nothing.
    assert_eq!(raise_fence(pool.clone(), 1).await, store::RiskFence::Raised);
    assert_eq!(
        risk_starts(&pool).await,
        vec![("BTC-USD".to_owned(), 2), ("ETH-USD".to_owned(), 2)]
    );
    // ETH-USD was never owned: it has a released row, which its first owner takes with the
    // fence on it.
    let owner = store::owner(&pool, "ETH-USD").await.unwrap().unwrap();
    assert_eq!((owner.epoch, owner.replica), (1, None));
    assert_eq!(
        store::take_symbol(&pool, "ETH-USD", 1, current)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        risk_starts(&pool).await,
        vec![("BTC-USD".to_owned(), 2), ("ETH-USD".to_owned(), 2)]
    );
}

/// Through a matching task, as orders' handler places: an order checked by an earlier start
/// of risk than the fence is answered `check_expired` and never booked — whether the fence
/// rose after the task last saw a check or the task learns of it from a newer check — while
/// the current start's orders are booked, and so are those a risk without numbers checked.
#[sqlx::test(migrations = false)]
async fn a_matching_task_refuses_the_orders_an_earlier_start_of_risk_checked(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let instrument = store::instrument(&pool, SYMBOL).await.unwrap().unwrap();
    let replica = Replica::start(&pool, "http://127.0.0.1:9").await;
    store::renew_replica(&pool, replica.id, "http://127.0.0.1:9", LONG_LEASE)
        .await
        .unwrap();
    let place =
        |start| replica.place_checked_by(&instrument, matching::Side::Sell, RiskStart(start));
    let before_the_fence = place(1).await;
    assert!(before_the_fence.is_ok(), "{before_the_fence:?}");

    assert_eq!(raise_fence(pool.clone(), 2).await, store::RiskFence::Raised);
    // The task has seen no check of start 2: the fence in the database refuses the batch.
    let fenced = place(1).await;
    assert!(matches!(fenced, Err(Error::CheckExpired)), "{fenced:?}");
    let current = place(2).await;
    assert!(current.is_ok(), "{current:?}");
    // Now it has: refused from its memory, without a batch. It is answered while the test holds
    // the orders table, which any batch's statement would wait for (a row lock would not do:
    // the fence's update skips a row that fails its predicate without waiting for it).
    let mut held = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    tokio::select! {
        fenced = place(1) => assert!(matches!(fenced, Err(Error::CheckExpired)), "{fenced:?}"),
        () = service_kit::testing::until_waiting_for_a_lock(&pool, "UPDATE symbol_owners") => {
            panic!("a check the task knew to be fenced off went to the database")
        }
    }
    held.rollback().await.unwrap();
    // A check without a number, from a risk rolled back to a release before them, is booked.
    let unnumbered = place(0).await;
    assert!(unnumbered.is_ok(), "{unnumbered:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 3,
        "the order before the fence, start 2's and the unnumbered one"
    );
    replica.shutdown.trigger();
}

/// The orders schema with [`SYMBOL`] owned by a live replica of this release.
async fn owned_by_a_replica_that_checks_the_fence(test_pool: &PgPool) -> PgPool {
    let pool = orders_db(test_pool).await;
    let replica = Uuid::now_v7();
    store::renew_replica(&pool, replica, "http://127.0.0.1:9", LONG_LEASE)
        .await
        .unwrap();
    store::take_symbol(&pool, SYMBOL, 0, replica).await.unwrap();
    pool
}

/// A lease no test outlives.
const LONG_LEASE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Raises risk's fence to `start` and commits, as orders' fence request does.
async fn raise_fence(pool: PgPool, start: i64) -> store::RiskFence {
    let mut tx = pool.begin().await.unwrap();
    let raised = store::raise_risk_fence(&mut tx, RiskStart(start))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    raised
}

async fn risk_starts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT symbol, risk_start FROM symbol_owners ORDER BY symbol")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A batch of [`SYMBOL`] under `epoch` that created `created` (no fills of its own).
fn matched(epoch: i64, created: &[OrderRow]) -> MatchedRows<'_> {
    MatchedRows {
        symbol: SYMBOL,
        epoch,
        created,
        notionals: &NO_FILLS[..created.len()],
        changed: &[],
        trades: &[],
        now: time::OffsetDateTime::now_utc(),
        sequence: created
            .iter()
            .filter_map(|order| order.book_sequence)
            .max()
            .unwrap_or(0),
        risk_start: Some(RiskStart(1)),
    }
}

/// The book's sequence as the symbol's owner would rebuild it now.
async fn rebuilt_sequence(pool: &PgPool) -> u64 {
    let instrument = store::instrument(pool, SYMBOL).await.unwrap().unwrap();
    engine::recover(pool, &instrument).await.unwrap().sequence()
}

/// The notionals of orders that have not traded (as many as a test creates in a batch).
const NO_FILLS: [i128; 4] = [0; 4];

/// A sell limit order of one lot at 30,000.00 resting on the book, for a new account.
fn resting_order(client_order_id: Option<&str>) -> OrderRow {
    let now = time::OffsetDateTime::now_utc();
    OrderRow {
        id: Uuid::now_v7(),
        account_id: Uuid::now_v7(),
        client_order_id: client_order_id.map(str::to_owned),
        symbol: SYMBOL.to_owned(),
        side: contracts::Side::Sell,
        order_type: "limit".to_owned(),
        price: Some(3_000_000),
        quantity: 10_000,
        filled_quantity: 0,
        average_price: None,
        status: OrderStatus::Open,
        time_in_force: "gtc".to_owned(),
        post_only: false,
        book_sequence: Some(1),
        created_at: now,
        updated_at: now,
    }
}

/// The change a batch makes to `order` when it fills it whole at 30,000.00.
fn filled(order: &OrderRow) -> OrderChange {
    OrderChange {
        id: order.id,
        filled_quantity: order.quantity,
        filled_notional: i128::from(order.quantity) * 3_000_000,
        status: Some(OrderStatus::Filled),
    }
}

fn trade(maker: Uuid, taker: Uuid, sequence: i64) -> TradeInsert {
    TradeInsert {
        id: Uuid::now_v7(),
        price: 3_000_000,
        quantity: 10_000,
        maker_order_id: maker,
        taker_order_id: taker,
        maker_account: Uuid::now_v7(),
        taker_account: Uuid::now_v7(),
        taker_side: contracts::Side::Buy,
        sequence,
    }
}

async fn orders_of(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn filled_quantity(pool: &PgPool, order: Uuid) -> i64 {
    sqlx::query_scalar("SELECT filled_quantity FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn trades_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM trades")
        .fetch_one(pool)
        .await
        .unwrap()
}
