//! Property tests over random command streams (TRD-03): the book is never crossed, quantity is
//! conserved, price-time priority holds (by comparison with a deliberately naive reference
//! model), FOK never partially fills, and replaying the same commands gives the same events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use matching::*;
use proptest::prelude::*;

/// The simplest book that could work: a flat list, searched in full for every match.
#[derive(Default)]
struct Model {
    resting: Vec<RestingOrder>,
    sequence: u64,
}

impl Model {
    fn emit(&mut self, out: &mut Vec<Emitted>, event: Event) {
        self.sequence += 1;
        out.push(Emitted {
            sequence: self.sequence,
            event,
        });
    }

    /// Index of the best resting order on `side`: best price, then earliest arrival.
    fn best(&self, side: Side) -> Option<usize> {
        self.resting
            .iter()
            .enumerate()
            .filter(|(_, o)| o.side == side)
            .min_by_key(|(_, o)| {
                (
                    if side == Side::Buy { -o.price } else { o.price },
                    o.arrival,
                )
            })
            .map(|(i, _)| i)
    }

    fn acceptable(order: &NewOrder, price: i64) -> bool {
        match (order.kind, order.side) {
            (OrderKind::Market, _) => true,
            (OrderKind::Limit { price: limit }, Side::Buy) => price <= limit,
            (OrderKind::Limit { price: limit }, Side::Sell) => price >= limit,
        }
    }

    fn execute(&mut self, command: Command, out: &mut Vec<Emitted>) {
        match command {
            Command::Place(order) => self.place(order, out),
            Command::Cancel { id, account } => {
                match self
                    .resting
                    .iter()
                    .position(|o| o.id == id && o.account == account)
                {
                    Some(i) => {
                        let o = self.resting.remove(i);
                        self.emit(
                            out,
                            Event::Cancelled {
                                id,
                                account,
                                remaining: o.remaining,
                                reason: CancelReason::Requested,
                            },
                        );
                    }
                    None => self.emit(
                        out,
                        Event::Rejected {
                            id,
                            reason: RejectReason::UnknownOrder,
                        },
                    ),
                }
            }
            Command::CancelAccount { account } => self.mass_cancel(|o| o.account == account, out),
            Command::CancelAll => self.mass_cancel(|_| true, out),
        }
    }

    fn mass_cancel(&mut self, matches: impl Fn(&RestingOrder) -> bool, out: &mut Vec<Emitted>) {
        let mut doomed: Vec<RestingOrder> = self
            .resting
            .iter()
            .copied()
            .filter(|o| matches(o))
            .collect();
        doomed.sort_by_key(|o| o.arrival);
        self.resting.retain(|o| !matches(o));
        for o in doomed {
            self.emit(
                out,
                Event::Cancelled {
                    id: o.id,
                    account: o.account,
                    remaining: o.remaining,
                    reason: CancelReason::MassCancel,
                },
            );
        }
    }

    fn place(&mut self, order: NewOrder, out: &mut Vec<Emitted>) {
        let opposite = order.side.opposite();
        let reject = if order.quantity == 0 {
            Some(RejectReason::ZeroQuantity)
        } else if self.resting.iter().any(|o| o.id == order.id) {
            Some(RejectReason::DuplicateOrderId)
        } else {
            match order.kind {
                OrderKind::Limit { price } if price <= 0 => Some(RejectReason::InvalidPrice),
                OrderKind::Market if order.post_only => Some(RejectReason::PostOnlyMarket),
                OrderKind::Limit { .. }
                    if order.post_only
                        && self
                            .best(opposite)
                            .is_some_and(|i| Self::acceptable(&order, self.resting[i].price)) =>
                {
                    Some(RejectReason::PostOnlyWouldTake)
                }
                _ => None,
            }
        };
        if let Some(reason) = reject {
            self.emit(
                out,
                Event::Rejected {
                    id: order.id,
                    reason,
                },
            );
            return;
        }
        self.emit(
            out,
            Event::Accepted {
                id: order.id,
                account: order.account,
            },
        );

        if order.time_in_force == TimeInForce::Fok {
            let mut book: Vec<RestingOrder> = self
                .resting
                .iter()
                .copied()
                .filter(|o| o.side == opposite)
                .collect();
            book.sort_by_key(|o| {
                (
                    if opposite == Side::Buy {
                        -o.price
                    } else {
                        o.price
                    },
                    o.arrival,
                )
            });
            let mut fillable = 0;
            for o in book
                .iter()
                .take_while(|o| Self::acceptable(&order, o.price))
            {
                if o.account == order.account {
                    if order.self_trade == SelfTradePrevention::CancelMaker {
                        continue;
                    }
                    break;
                }
                fillable += o.remaining;
            }
            if fillable < order.quantity {
                self.emit(
                    out,
                    Event::Cancelled {
                        id: order.id,
                        account: order.account,
                        remaining: order.quantity,
                        reason: CancelReason::FillOrKill,
                    },
                );
                return;
            }
        }

        let mut remaining = order.quantity;
        let mut stopped = false;
        while remaining > 0 {
            let Some(i) = self.best(opposite) else { break };
            let maker = self.resting[i];
            if !Self::acceptable(&order, maker.price) {
                break;
            }
            if maker.account == order.account {
                if order.self_trade == SelfTradePrevention::CancelTaker {
                    stopped = true;
                    break;
                }
                self.resting.remove(i);
                self.emit(
                    out,
                    Event::Cancelled {
                        id: maker.id,
                        account: maker.account,
                        remaining: maker.remaining,
                        reason: CancelReason::SelfTrade,
                    },
                );
                if order.self_trade == SelfTradePrevention::CancelBoth {
                    stopped = true;
                    break;
                }
                continue;
            }
            let quantity = remaining.min(maker.remaining);
            remaining -= quantity;
            let maker_remaining = maker.remaining - quantity;
            if maker_remaining == 0 {
                self.resting.remove(i);
            } else {
                self.resting[i].remaining = maker_remaining;
            }
            self.emit(
                out,
                Event::Trade {
                    maker: maker.id,
                    maker_account: maker.account,
                    taker: order.id,
                    taker_account: order.account,
                    taker_side: order.side,
                    price: maker.price,
                    quantity,
                    maker_remaining,
                    taker_remaining: remaining,
                },
            );
        }
        if remaining == 0 {
            return;
        }
        match (order.kind, order.time_in_force, stopped) {
            (_, _, true) => self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining,
                    reason: CancelReason::SelfTrade,
                },
            ),
            (OrderKind::Limit { price }, TimeInForce::Gtc, false) => {
                self.sequence += 1;
                let arrival = self.sequence;
                self.resting.push(RestingOrder {
                    id: order.id,
                    account: order.account,
                    side: order.side,
                    price,
                    remaining,
                    arrival,
                });
                out.push(Emitted {
                    sequence: arrival,
                    event: Event::Rested {
                        id: order.id,
                        price,
                        remaining,
                    },
                });
            }
            _ => self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining,
                    reason: CancelReason::Unfilled,
                },
            ),
        }
    }
}

/// Random commands over a narrow price band and few accounts, so orders cross, self-trade and
/// collide often. Ids are unique per stream except when a duplicate is drawn on purpose.
fn commands() -> impl Strategy<Value = Vec<Command>> {
    let place = (
        0u128..4,
        any::<bool>(),
        prop_oneof![8 => (95i64..=105).prop_map(|p| OrderKind::Limit { price: p }), 1 => Just(OrderKind::Market)],
        0u64..=12,
        prop_oneof![6 => Just(TimeInForce::Gtc), 2 => Just(TimeInForce::Ioc), 2 => Just(TimeInForce::Fok)],
        prop::bool::weighted(0.15),
        prop_oneof![
            Just(SelfTradePrevention::CancelTaker),
            Just(SelfTradePrevention::CancelMaker),
            Just(SelfTradePrevention::CancelBoth)
        ],
    );
    let step = prop_oneof![
        10 => place.prop_map(|(account, buy, kind, quantity, time_in_force, post_only, self_trade)| {
            (0u8, account, buy, kind, quantity, time_in_force, post_only, self_trade)
        }),
        3 => (0u128..4).prop_map(|account| (1u8, account, false, OrderKind::Market, 0, TimeInForce::Gtc, false, SelfTradePrevention::CancelTaker)),
        1 => (0u128..4).prop_map(|account| (2u8, account, false, OrderKind::Market, 0, TimeInForce::Gtc, false, SelfTradePrevention::CancelTaker)),
    ];
    (
        prop::collection::vec(step, 1..200),
        prop::collection::vec(0usize..1000, 200),
    )
        .prop_map(|(steps, picks)| {
            let mut next_id = 1u128;
            steps
                .into_iter()
                .enumerate()
                .map(
                    |(
                        i,
                        (what, account, buy, kind, quantity, time_in_force, post_only, self_trade),
                    )| match what {
                        0 => {
                            // Now and then reuse an earlier id to exercise duplicate rejection.
                            let id = if picks[i] % 50 == 0 && next_id > 1 {
                                (picks[i] as u128) % next_id
                            } else {
                                next_id
                            };
                            next_id += 1;
                            Command::Place(NewOrder {
                                id: OrderId(id),
                                account: AccountId(account),
                                side: if buy { Side::Buy } else { Side::Sell },
                                kind,
                                quantity,
                                time_in_force,
                                post_only,
                                self_trade,
                            })
                        }
                        1 => Command::Cancel {
                            id: OrderId((picks[i] as u128) % next_id.max(1)),
                            account: AccountId(account),
                        },
                        _ if picks[i] % 7 == 0 => Command::CancelAll,
                        _ => Command::CancelAccount {
                            account: AccountId(account),
                        },
                    },
                )
                .collect()
        })
}

fn run(commands: &[Command]) -> (Book, Vec<Vec<Emitted>>) {
    let mut book = Book::new();
    let outputs = commands
        .iter()
        .map(|c| {
            let mut out = Vec::new();
            book.execute(*c, &mut out);
            out
        })
        .collect();
    (book, outputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_book_behaves_exactly_like_the_naive_model(commands in commands()) {
        let mut book = Book::new();
        let mut model = Model::default();
        for command in &commands {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            book.execute(*command, &mut got);
            model.execute(*command, &mut want);
            prop_assert_eq!(&got, &want, "after {:?}", command);
        }
        let mut expected = model.resting.clone();
        expected.sort_by_key(|o| o.arrival);
        prop_assert_eq!(book.resting_orders(), expected);
    }

    #[test]
    fn the_book_is_never_crossed_and_levels_add_up(commands in commands()) {
        let mut book = Book::new();
        let mut out = Vec::new();
        for command in &commands {
            book.execute(*command, &mut out);
            if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
                prop_assert!(bid < ask, "crossed: bid {} >= ask {}", bid, ask);
            }
            let (bids, asks) = book.depth(usize::MAX);
            for (levels, side) in [(bids, Side::Buy), (asks, Side::Sell)] {
                for level in levels {
                    let orders: Vec<_> = book.resting_orders().into_iter().filter(|o| o.side == side && o.price == level.price).collect();
                    prop_assert_eq!(level.quantity, orders.iter().map(|o| o.remaining).sum::<u64>());
                    prop_assert_eq!(level.orders as usize, orders.len());
                }
            }
        }
    }

    #[test]
    fn quantity_is_conserved_and_fok_never_fills_partially(commands in commands()) {
        let (book, outputs) = run(&commands);
        // (total quantity accepted, times accepted, time in force): an id may be reused once its
        // first order has left the book; the book only guards ids that are resting.
        let mut placed: HashMap<OrderId, (u64, u32, TimeInForce)> = HashMap::new();
        let mut accounted: HashMap<OrderId, u64> = HashMap::new();
        let mut taker_fills: HashMap<OrderId, u64> = HashMap::new();
        for (command, events) in commands.iter().zip(&outputs) {
            for e in events {
                match e.event {
                    Event::Accepted { id, .. } => {
                        let Command::Place(order) = command else { unreachable!() };
                        let entry = placed.entry(id).or_insert((0, 0, order.time_in_force));
                        entry.0 += order.quantity;
                        entry.1 += 1;
                    }
                    Event::Trade { maker, taker, quantity, price, taker_side, .. } => {
                        *accounted.entry(maker).or_default() += quantity;
                        *accounted.entry(taker).or_default() += quantity;
                        *taker_fills.entry(taker).or_default() += quantity;
                        // Never worse than the taker's limit.
                        if let Command::Place(NewOrder { kind: OrderKind::Limit { price: limit }, .. }) = command {
                            let within = if taker_side == Side::Buy { price <= *limit } else { price >= *limit };
                            prop_assert!(within, "trade at {} beyond limit {}", price, limit);
                        }
                    }
                    Event::Cancelled { id, remaining, .. } => *accounted.entry(id).or_default() += remaining,
                    _ => {}
                }
            }
        }
        for order in book.resting_orders() {
            *accounted.entry(order.id).or_default() += order.remaining;
        }
        for (id, (quantity, times, time_in_force)) in &placed {
            prop_assert_eq!(accounted.get(id).copied().unwrap_or(0), *quantity, "order {:?}", id);
            if *time_in_force == TimeInForce::Fok && *times == 1 {
                let filled = taker_fills.get(id).copied().unwrap_or(0);
                prop_assert!(filled == 0 || filled == *quantity, "FOK {:?} filled {} of {}", id, filled, quantity);
            }
        }
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_events(commands in commands()) {
        let (first_book, first) = run(&commands);
        let (second_book, second) = run(&commands);
        prop_assert_eq!(first, second);
        prop_assert_eq!(first_book.resting_orders(), second_book.resting_orders());
        prop_assert_eq!(first_book.sequence(), second_book.sequence());
    }
}
