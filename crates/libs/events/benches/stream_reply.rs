//! Decoding an `XREADGROUP` reply of 64 entries the shape the relay writes (`event_id`, `type`,
//! `envelope` of ~700 bytes, `outbox`, `position`) and reading each entry's type, envelope and
//! origin, as a consumer does: with the redis crate's `StreamReadReply` (a deep copy of the
//! reply, a hash map per entry, a copy per field read) and with our [`events::StreamEntries`]
//! (the reply's strings moved into a list). Every busy stream's entry is decoded by several
//! readers, so this is paid several times per order (docs/performance.md, "Stream replies
//! decoded without a copy"). Run with `cargo bench -p events --bench stream_reply`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use redis::streams::StreamReadReply;
use redis::{Value, from_redis_value};

fn main() {
    divan::main();
}

const ENTRIES: usize = 64;

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// A `TradeExecuted` envelope as the orders service writes it.
fn envelope() -> String {
    let id = "0193a4c2-7f3e-7d2a-9c41-3b8e5f6a7b8c";
    serde_json::json!({
        "id": id, "type": "TradeExecuted", "version": 1,
        "occurred_at": "2026-12-05T20:00:00.123456Z", "producer": "orders",
        "aggregate_id": id, "sequence": 42, "correlation_id": id, "causation_id": null,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "payload": {
            "trade_id": id, "symbol": "BTC-USD", "base_asset": "BTC", "quote_asset": "USD",
            "price": 3_000_000, "quantity": 100_000, "maker_order_id": id, "taker_order_id": id,
            "maker_account_id": id, "taker_account_id": id, "taker_side": "buy"
        }
    })
    .to_string()
}

/// `[[key, [[id, [field, value, …]], …]]]`, as RESP2 answers it.
fn reply() -> Value {
    let envelope = envelope();
    let entries = (0..ENTRIES)
        .map(|n| {
            Value::Array(vec![
                bulk(&format!("1733428800000-{n}")),
                Value::Array(vec![
                    bulk("event_id"),
                    bulk("0193a4c2-7f3e-7d2a-9c41-3b8e5f6a7b8c"),
                    bulk("type"),
                    bulk("TradeExecuted"),
                    bulk("envelope"),
                    bulk(&envelope),
                    bulk("outbox"),
                    bulk("orders"),
                    bulk("position"),
                    bulk(&(1_000_000 + n).to_string()),
                ]),
            ])
        })
        .collect();
    Value::Array(vec![Value::Array(vec![
        bulk("bourse:stream:orders"),
        Value::Array(entries),
    ])])
}

#[divan::bench]
fn the_crates_stream_read_reply(bencher: divan::Bencher) {
    bencher.with_inputs(reply).bench_values(|reply| {
        let reply: StreamReadReply = from_redis_value(reply).unwrap();
        let mut read = 0;
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            let event_type: String = entry.get("type").unwrap();
            let envelope: String = entry.get("envelope").unwrap();
            let outbox: String = entry.get("outbox").unwrap();
            let position: i64 = entry.get("position").unwrap();
            read += event_type.len() + envelope.len() + outbox.len();
            read += usize::from(position > 0);
        }
        read
    });
}

#[divan::bench]
fn our_stream_entries(bencher: divan::Bencher) {
    bencher.with_inputs(reply).bench_values(|reply| {
        let reply: events::StreamEntries = from_redis_value(reply).unwrap();
        let mut read = 0;
        for entry in reply.into_entries() {
            let origin = events::Origin::of_entry(&entry).unwrap();
            read += entry.field("type").unwrap().len() + entry.field("envelope").unwrap().len();
            read += origin.outbox.len() + usize::from(origin.position > 0);
        }
        read
    });
}
