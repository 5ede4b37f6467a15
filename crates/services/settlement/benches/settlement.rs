//! The settlement hot path without IO: turning a trade into its transfers and per-account
//! deltas, what every settled trade pays before touching the database.
//! Run with `cargo bench -p settlement`.

#![allow(clippy::unwrap_used)]

use settlement::ledger::{self, Fees, Trade};
use uuid::Uuid;

fn main() {
    divan::main();
}

const FEES: Fees = Fees {
    maker_bps: 10,
    taker_bps: 20,
};

fn trades(n: u64) -> Vec<Trade> {
    (0..n)
        .map(|i| Trade {
            id: Uuid::now_v7(),
            base_asset: "BTC".into(),
            quote_asset: "USD".into(),
            base_scale: 8,
            price: 3_000_000 + (i % 100) as i64,
            quantity: 10_000 * (1 + (i % 50) as i64),
            buyer: Uuid::from_u128(u128::from(i % 1_000) + 10),
            seller: Uuid::from_u128(u128::from(i % 997) + 2_000),
            buy_order: Uuid::now_v7(),
            sell_order: Uuid::now_v7(),
            buyer_is_taker: i % 2 == 0,
        })
        .collect()
}

/// A batch of 100 trades (the consumer's default read): plans and deltas for each.
#[divan::bench]
fn settle_a_batch_of_100_trades(bencher: divan::Bencher) {
    let batch = trades(100);
    bencher
        .counter(divan::counter::ItemsCount::new(batch.len()))
        .bench(|| {
            for trade in &batch {
                let settled = ledger::settle(divan::black_box(trade), FEES).unwrap();
                divan::black_box(settled.plan.deltas().unwrap());
            }
        });
}
