//! An event written and read the way producers and consumers do it: a `TradeExecuted` put in
//! its envelope and turned into the outbox's JSON text ([`Envelope::of`], then `to_string`),
//! and that text read back into the contract type ([`Envelope`] from the text, then
//! [`Envelope::decode`]). Every order makes about two events and every event is read by
//! several consumers, so both are paid many times per order (docs/performance.md, "The event
//! payload kept as text"). Run with `cargo bench -p events --bench envelope`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::Side;
use contracts::events::TradeExecuted;
use events::Envelope;
use uuid::Uuid;

fn main() {
    divan::main();
}

fn trade() -> TradeExecuted {
    let id = Uuid::parse_str("0193a4c2-7f3e-7d2a-9c41-3b8e5f6a7b8c").unwrap();
    TradeExecuted {
        trade_id: id,
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        price: 3_000_000,
        quantity: 100_000,
        maker_order_id: id,
        taker_order_id: id,
        maker_account_id: id,
        taker_account_id: id,
        taker_side: Side::Buy,
    }
}

#[divan::bench]
fn written(bencher: divan::Bencher) {
    let trade = trade();
    bencher.bench(|| {
        let envelope = Envelope::of("orders", "aggregate", 42, &trade).unwrap();
        serde_json::to_string(&envelope).unwrap()
    });
}

#[divan::bench]
fn read(bencher: divan::Bencher) {
    let text =
        serde_json::to_string(&Envelope::of("orders", "aggregate", 42, &trade()).unwrap()).unwrap();
    bencher.bench(|| {
        let envelope: Envelope = serde_json::from_str(&text).unwrap();
        envelope.decode::<TradeExecuted>().unwrap()
    });
}
