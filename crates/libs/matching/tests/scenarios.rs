//! The book's behaviour, one story at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use matching::*;

const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);
const CAROL: AccountId = AccountId(3);
const DAVE: AccountId = AccountId(4);

fn limit(id: u128, account: AccountId, side: Side, price: i64, quantity: u64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        account,
        side,
        kind: OrderKind::Limit { price },
        quantity,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        self_trade: SelfTradePrevention::CancelTaker,
    }
}

fn run(book: &mut Book, command: Command) -> Vec<Event> {
    let mut out = Vec::new();
    book.execute(command, &mut out);
    out.into_iter().map(|e| e.event).collect()
}

fn place(book: &mut Book, order: NewOrder) -> Vec<Event> {
    run(book, Command::Place(order))
}

fn trades(events: &[Event]) -> Vec<(u128, i64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade {
                maker,
                price,
                quantity,
                ..
            } => Some((maker.0, *price, *quantity)),
            _ => None,
        })
        .collect()
}

#[test]
fn trades_execute_at_the_makers_price_in_time_priority() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Sell, 101, 5));
    place(&mut book, limit(2, BOB, Side::Sell, 100, 3));
    place(&mut book, limit(3, CAROL, Side::Sell, 100, 4));

    // A buy at 105 sweeps the best price first, oldest order first, at the makers' prices.
    let events = place(&mut book, limit(4, DAVE, Side::Buy, 105, 9));
    assert_eq!(trades(&events), [(2, 100, 3), (3, 100, 4), (1, 101, 2)]);
    assert_eq!(book.order(OrderId(1)).unwrap().remaining, 3);
    assert_eq!(book.best_ask(), Some(101));
    assert_eq!(book.best_bid(), None, "fully filled, nothing rests");
}

#[test]
fn a_partially_filled_gtc_order_rests_with_its_remainder() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Sell, 100, 2));
    let events = place(&mut book, limit(2, BOB, Side::Buy, 100, 5));
    assert!(matches!(
        events.last(),
        Some(Event::Rested {
            remaining: 3,
            price: 100,
            ..
        })
    ));
    let (bids, asks) = book.depth(10);
    assert_eq!(
        bids,
        [Level {
            price: 100,
            quantity: 3,
            orders: 1
        }]
    );
    assert!(asks.is_empty());
}

#[test]
fn ioc_fills_what_it_can_and_cancels_the_rest() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Sell, 100, 2));
    let mut ioc = limit(2, BOB, Side::Buy, 100, 5);
    ioc.time_in_force = TimeInForce::Ioc;
    let events = place(&mut book, ioc);
    assert_eq!(trades(&events), [(1, 100, 2)]);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled {
            remaining: 3,
            reason: CancelReason::Unfilled,
            ..
        })
    ));
    assert!(book.is_empty());
}

#[test]
fn fok_fills_completely_or_touches_nothing() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Sell, 100, 2));
    place(&mut book, limit(2, CAROL, Side::Sell, 101, 2));

    let mut fok = limit(3, BOB, Side::Buy, 101, 5);
    fok.time_in_force = TimeInForce::Fok;
    let events = place(&mut book, fok);
    assert_eq!(trades(&events), []);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled {
            remaining: 5,
            reason: CancelReason::FillOrKill,
            ..
        })
    ));
    assert_eq!(book.len(), 2, "the book is untouched");

    let mut fok = limit(4, BOB, Side::Buy, 101, 4);
    fok.time_in_force = TimeInForce::Fok;
    assert_eq!(trades(&place(&mut book, fok)), [(1, 100, 2), (2, 101, 2)]);
}

#[test]
fn post_only_never_takes() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Sell, 100, 2));
    let mut crossing = limit(2, BOB, Side::Buy, 100, 1);
    crossing.post_only = true;
    assert_eq!(
        place(&mut book, crossing),
        [Event::Rejected {
            id: OrderId(2),
            reason: RejectReason::PostOnlyWouldTake
        }]
    );
    let mut passive = limit(3, BOB, Side::Buy, 99, 1);
    passive.post_only = true;
    assert!(matches!(
        place(&mut book, passive).last(),
        Some(Event::Rested { .. })
    ));
}

#[test]
fn self_trade_prevention_modes() {
    let setup = || {
        let mut book = Book::new();
        place(&mut book, limit(1, ALICE, Side::Sell, 100, 2));
        place(&mut book, limit(2, BOB, Side::Sell, 101, 2));
        book
    };
    let buy = |mode| NewOrder {
        self_trade: mode,
        ..limit(3, ALICE, Side::Buy, 101, 3)
    };

    // Cancel taker (default): the incoming order stops at its own resting order.
    let mut book = setup();
    let events = place(&mut book, buy(SelfTradePrevention::CancelTaker));
    assert_eq!(trades(&events), []);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled {
            id: OrderId(3),
            reason: CancelReason::SelfTrade,
            ..
        })
    ));
    assert!(book.order(OrderId(1)).is_some());

    // Cancel maker: the own resting order goes, matching continues with others.
    let mut book = setup();
    let events = place(&mut book, buy(SelfTradePrevention::CancelMaker));
    assert!(events.contains(&Event::Cancelled {
        id: OrderId(1),
        account: ALICE,
        remaining: 2,
        reason: CancelReason::SelfTrade
    }));
    assert_eq!(trades(&events), [(2, 101, 2)]);
    assert!(matches!(
        events.last(),
        Some(Event::Rested { remaining: 1, .. })
    ));

    // Cancel both.
    let mut book = setup();
    let events = place(&mut book, buy(SelfTradePrevention::CancelBoth));
    assert_eq!(trades(&events), []);
    assert!(book.order(OrderId(1)).is_none() && book.order(OrderId(3)).is_none());
    assert!(book.order(OrderId(2)).is_some());
}

#[test]
fn market_orders_sweep_and_never_rest() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Buy, 99, 2));
    place(&mut book, limit(2, BOB, Side::Buy, 98, 2));
    let market = NewOrder {
        kind: OrderKind::Market,
        ..limit(3, CAROL, Side::Sell, 0, 5)
    };
    let events = place(&mut book, market);
    assert_eq!(trades(&events), [(1, 99, 2), (2, 98, 2)]);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled {
            remaining: 1,
            reason: CancelReason::Unfilled,
            ..
        })
    ));
    let post_only_market = NewOrder {
        post_only: true,
        ..market
    };
    assert_eq!(
        place(
            &mut book,
            NewOrder {
                id: OrderId(4),
                ..post_only_market
            }
        ),
        [Event::Rejected {
            id: OrderId(4),
            reason: RejectReason::PostOnlyMarket
        }]
    );
}

#[test]
fn cancels_are_only_for_the_owner() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Buy, 99, 2));
    assert_eq!(
        run(
            &mut book,
            Command::Cancel {
                id: OrderId(1),
                account: BOB
            }
        ),
        [Event::Rejected {
            id: OrderId(1),
            reason: RejectReason::UnknownOrder
        }]
    );
    assert_eq!(
        run(
            &mut book,
            Command::Cancel {
                id: OrderId(1),
                account: ALICE
            }
        ),
        [Event::Cancelled {
            id: OrderId(1),
            account: ALICE,
            remaining: 2,
            reason: CancelReason::Requested
        }]
    );
    assert!(book.is_empty());
}

#[test]
fn mass_cancel_takes_one_account_in_time_priority() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Buy, 99, 1));
    place(&mut book, limit(2, BOB, Side::Buy, 99, 1));
    place(&mut book, limit(3, ALICE, Side::Sell, 105, 1));
    place(&mut book, limit(4, ALICE, Side::Buy, 98, 1));
    let cancelled: Vec<u128> = run(&mut book, Command::CancelAccount { account: ALICE })
        .iter()
        .map(|e| match e {
            Event::Cancelled {
                id,
                reason: CancelReason::MassCancel,
                ..
            } => id.0,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(cancelled, [1, 3, 4]);
    assert_eq!(
        book.resting_orders()
            .iter()
            .map(|o| o.id.0)
            .collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(run(&mut book, Command::CancelAll).len(), 1);
    assert!(book.is_empty());
}

#[test]
fn bad_orders_are_rejected_without_effect() {
    let mut book = Book::new();
    place(&mut book, limit(1, ALICE, Side::Buy, 99, 1));
    for (order, reason) in [
        (
            limit(1, BOB, Side::Sell, 120, 1),
            RejectReason::DuplicateOrderId,
        ),
        (
            limit(2, BOB, Side::Sell, 120, 0),
            RejectReason::ZeroQuantity,
        ),
        (limit(3, BOB, Side::Sell, 0, 1), RejectReason::InvalidPrice),
        (limit(4, BOB, Side::Sell, -5, 1), RejectReason::InvalidPrice),
    ] {
        assert_eq!(
            place(&mut book, order),
            [Event::Rejected {
                id: order.id,
                reason
            }]
        );
    }
    assert_eq!(book.len(), 1);
}

#[test]
fn a_restored_book_is_identical_including_time_priority() {
    let mut original = Book::new();
    for (id, account, price) in [
        (1, ALICE, 100),
        (2, BOB, 100),
        (3, CAROL, 101),
        (4, BOB, 99),
    ] {
        place(&mut original, limit(id, account, Side::Sell, price, 2));
    }
    // A partial fill of order 4 (the best ask), so a reduced quantity must survive too.
    place(&mut original, limit(5, ALICE, Side::Buy, 99, 1));
    let snapshot = original.resting_orders();

    let mut restored = Book::new();
    for order in &snapshot {
        restored.restore(*order).unwrap();
    }
    restored.resume_sequence(original.sequence());
    assert_eq!(restored.resting_orders(), snapshot);
    assert_eq!(restored.depth(10), original.depth(10));

    // The next command produces exactly the same events on both.
    let next = Command::Place(limit(6, CAROL, Side::Buy, 101, 7));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    original.execute(next, &mut a);
    restored.execute(next, &mut b);
    assert_eq!(a, b);
}
