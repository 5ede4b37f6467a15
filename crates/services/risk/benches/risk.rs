//! A pre-trade check from memory: what every order pays before it may match (docs/design.md §4).
//! Run with `cargo bench -p risk`.

#![allow(clippy::unwrap_used)]

use contracts::checks::{CheckRequest, CheckedOrderType};
use contracts::funds::{AccountBalance, BalanceSnapshot};
use risk::book::{Book, Change};
use risk::limits::LimitsBody;
use risk::positions::Side;
use uuid::Uuid;

fn main() {
    divan::main();
}

/// A book with 1,000 accounts, each long 1 BTC and funded, and a last price; then checks that
/// pass and reserve (their place among open orders and their funds), spread over the accounts
/// so no limit is reached.
#[divan::bench]
fn check_a_passing_order(bencher: divan::Bencher) {
    let limits = LimitsBody {
        max_order_quantity: "100".into(),
        max_order_notional: "100000000".into(),
        max_open_orders: i32::MAX.unsigned_abs(),
        max_orders_per_second: i32::MAX.unsigned_abs(),
        max_position: "1000000".into(),
        price_collar_bps: 1_000,
    }
    .validate()
    .unwrap();
    let mut book = Book::new(limits);
    let accounts: Vec<Uuid> = (0..1_000).map(|_| Uuid::now_v7()).collect();
    for account in &accounts {
        book.apply(Change::Position {
            account: *account,
            symbol: "BTC-USD".into(),
            position: risk::positions::Position {
                net: 100_000_000,
                average_price: 3_000_000,
                realized_pnl: 0,
            },
        });
    }
    book.apply(Change::LastPrice {
        symbol: "BTC-USD".into(),
        price: 3_000_000,
    });
    // Enough of both assets for every order the bench places.
    book.funds_mut().load(BalanceSnapshot {
        position: 0,
        balances: accounts
            .iter()
            .flat_map(|account| {
                ["BTC", "USD"].map(|asset| AccountBalance {
                    account_id: *account,
                    asset: asset.into(),
                    balance: i64::MAX / 4,
                })
            })
            .collect(),
    });
    // And the orders stream read up to this start's mark: funds decide (ADR 0023).
    let mark = Uuid::now_v7();
    book.funds_mut().await_mark(mark);
    book.apply(Change::MarkRead { mark });
    let mut n = 0usize;
    bencher.bench_local(|| {
        n += 1;
        let order = CheckRequest {
            order_id: Uuid::now_v7(),
            account_id: accounts[n % accounts.len()],
            symbol: "BTC-USD".into(),
            side: if n.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            order_type: CheckedOrderType::Limit,
            price: 3_000_000 + (n % 100) as i64,
            quantity: 1_000_000,
            base_scale: 8,
            quote_scale: 2,
            base_asset: Some("BTC".into()),
            quote_asset: Some("USD".into()),
            mid: None,
        };
        book.check(divan::black_box(&order), 1).unwrap();
    });
}
