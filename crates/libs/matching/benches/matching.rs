//! The matching engine on a standard mixed stream, side by side with `matchcore` (PRF-02).
//! Run: `cargo bench -p matching --bench matching`
//!
//! The stream (seeded, identical for both engines): a book warmed with 1,000 resting orders,
//! then 100,000 operations — 60% passive GTC limit orders 1–50 ticks from the mid, 15%
//! marketable limit orders crossing up to 5 ticks, 25% cancels of live orders. Our engine also
//! checks account ownership and self-trade prevention on every fill and cancel (100 accounts);
//! matchcore has neither.

use divan::counter::ItemsCount;
use matching::{
    AccountId, Book, Command, NewOrder, OrderId, OrderKind, SelfTradePrevention, Side, TimeInForce,
};

fn main() {
    divan::main();
}

const WARM: usize = 1_000;
const OPS: usize = 100_000;
const MID: i64 = 10_000;

#[derive(Clone, Copy)]
enum Op {
    Add {
        id: u64,
        account: u128,
        side: Side,
        price: i64,
        quantity: u64,
    },
    Cancel {
        id: u64,
        account: u128,
    },
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Builds the stream, simulating our book so every cancel names a live order.
fn stream() -> Vec<Op> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut book = Book::new();
    let mut out = Vec::new();
    let mut ops = Vec::with_capacity(WARM + OPS);
    for id in 1..=(WARM + OPS) as u64 {
        let roll = rng.below(100);
        let account = u128::from(rng.below(100));
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let live = book.resting_orders_len_hint();
        let op = if id as usize > WARM && roll < 25 && live > 0 {
            let victim = book.nth_resting(rng.below(live as u64) as usize);
            Op::Cancel {
                id: victim.0 as u64,
                account: victim.1,
            }
        } else {
            let marketable = id as usize > WARM && roll >= 85;
            let offset = if marketable {
                -(rng.below(6) as i64)
            } else {
                1 + rng.below(50) as i64
            };
            let price = match side {
                Side::Buy => MID - offset,
                Side::Sell => MID + offset,
            };
            Op::Add {
                id,
                account,
                side,
                price,
                quantity: 1 + rng.below(10),
            }
        };
        apply(&mut book, op, &mut out);
        ops.push(op);
    }
    ops
}

trait Sample {
    fn resting_orders_len_hint(&self) -> usize;
    fn nth_resting(&self, n: usize) -> (u128, u128);
}
impl Sample for Book {
    fn resting_orders_len_hint(&self) -> usize {
        self.len()
    }
    fn nth_resting(&self, n: usize) -> (u128, u128) {
        let order = self.resting_orders()[n];
        (order.id.0, order.account.0)
    }
}

fn command(op: Op) -> Command {
    match op {
        Op::Add {
            id,
            account,
            side,
            price,
            quantity,
        } => Command::Place(NewOrder {
            id: OrderId(u128::from(id)),
            account: AccountId(account),
            side,
            kind: OrderKind::Limit { price },
            quantity,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            self_trade: SelfTradePrevention::CancelTaker,
        }),
        Op::Cancel { id, account } => Command::Cancel {
            id: OrderId(u128::from(id)),
            account: AccountId(account),
        },
    }
}

fn apply(book: &mut Book, op: Op, out: &mut Vec<matching::Emitted>) {
    out.clear();
    book.execute(command(op), out);
}

fn matchcore_command(sequence: u64, op: Op) -> matchcore::Command {
    use matchcore::*;
    let kind = match op {
        Op::Add {
            side,
            price,
            quantity,
            ..
        } => CommandKind::Submit(SubmitCmd {
            order: NewOrder::Limit(LimitOrder::new(
                Price(price as u64),
                QuantityPolicy::Standard {
                    quantity: Quantity(quantity),
                },
                OrderFlags::new(
                    if side == matching::Side::Buy {
                        matchcore::Side::Buy
                    } else {
                        matchcore::Side::Sell
                    },
                    false,
                    matchcore::TimeInForce::Gtc,
                ),
            )),
        }),
        // matchcore names an order by the sequence number of its submit, counted from 0.
        Op::Cancel { id, .. } => CommandKind::Cancel(CancelCmd {
            order_id: OrderId(id - 1),
            order_kind: OrderKind::Limit,
        }),
    };
    matchcore::Command {
        meta: CommandMeta {
            sequence_number: SequenceNumber(sequence),
            timestamp: Timestamp(sequence),
        },
        kind,
    }
}

#[divan::bench]
fn bourse(bencher: divan::Bencher) {
    let ops = stream();
    let (warm, timed) = ops.split_at(WARM);
    let mut warmed = Book::new();
    let mut out = Vec::with_capacity(64);
    for op in warm {
        apply(&mut warmed, *op, &mut out);
    }
    let commands: Vec<Command> = timed.iter().map(|op| command(*op)).collect();
    bencher
        .counter(ItemsCount::new(OPS))
        .with_inputs(|| (warmed.clone(), Vec::with_capacity(64)))
        .bench_local_values(|(mut book, mut out): (Book, Vec<matching::Emitted>)| {
            for command in &commands {
                out.clear();
                book.execute(*command, &mut out);
            }
            divan::black_box(book.len())
        });
}

#[divan::bench]
fn matchcore(bencher: divan::Bencher) {
    let ops = stream();
    let (warm, timed) = ops.split_at(WARM);
    let mut warmed = matchcore::OrderBook::new("BENCH");
    for (i, op) in warm.iter().enumerate() {
        let _ = warmed.execute(&matchcore_command(i as u64, *op));
    }
    let commands: Vec<matchcore::Command> = timed
        .iter()
        .enumerate()
        .map(|(i, op)| matchcore_command((WARM + i) as u64, *op))
        .collect();
    // A benchmark of rejections would be meaningless: every command must be applied (cancels
    // of orders matchcore already filled are the only expected refusals).
    let mut probe = warmed.clone();
    let rejected = commands
        .iter()
        .filter(|c| matches!(probe.execute(c), matchcore::CommandOutcome::Rejected(_)))
        .count();
    assert!(
        rejected < OPS / 100,
        "matchcore rejected {rejected} of {OPS} commands"
    );
    bencher
        .counter(ItemsCount::new(OPS))
        .with_inputs(|| warmed.clone())
        .bench_local_values(|mut book: matchcore::OrderBook| {
            for command in &commands {
                divan::black_box(book.execute(command));
            }
            book
        });
}
