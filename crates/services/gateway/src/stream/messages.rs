//! Events as stream messages (TRD-09), without IO: which channel each event goes to and what
//! it says there. Amounts are turned into the same decimal strings the REST API uses.

use contracts::{Asset, format_units};
use events::Envelope;
use serde_json::{Value, json};
use uuid::Uuid;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The `orders` channel of one account: its own orders, nobody else's.
    Account(Uuid),
    /// A public channel: `trades:{symbol}` or `book:{symbol}`.
    Channel(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub audience: Audience,
    /// `order_accepted`, `fill`, `order_completed`, `order_cancelled`, `order_rejected`,
    /// `trade`, `update`.
    pub kind: &'static str,
    pub data: Value,
    /// The source's own sequence, where the channel has one (a book's); otherwise the hub
    /// numbers the channel's messages.
    pub sequence: Option<u64>,
}

/// The channels a client may subscribe to: `orders`, `trades:{symbol}`, `book:{symbol}`.
pub fn valid_channel(channel: &str) -> bool {
    if channel == "orders" {
        return true;
    }
    match channel.split_once(':') {
        Some(("trades" | "book", symbol)) => valid_symbol(symbol),
        _ => false,
    }
}

pub fn valid_symbol(symbol: &str) -> bool {
    (1..=32).contains(&symbol.len())
        && symbol
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

/// Decimal amounts from minor units of assets known by code.
pub struct Amounts {
    assets: Vec<Asset>,
}

impl Amounts {
    pub fn new(assets: Vec<Asset>) -> Self {
        Self { assets }
    }

    fn format(&self, payload: &Value, field: &str, asset_field: &str) -> Value {
        let asset = payload.get(asset_field).and_then(Value::as_str);
        let scale = self
            .assets
            .iter()
            .find(|a| Some(a.code.as_str()) == asset)
            .map(|a| a.scale);
        match (payload.get(field).and_then(Value::as_i64), scale) {
            (Some(units), Some(scale)) => json!(format_units(units, scale)),
            _ => Value::Null,
        }
    }
}

fn field<'a>(payload: &'a Value, name: &str) -> &'a Value {
    payload.get(name).unwrap_or(&Value::Null)
}

fn account(payload: &Value, name: &str) -> Option<Uuid> {
    payload.get(name)?.as_str()?.parse().ok()
}

/// The messages an event on the `orders` or `market` stream becomes.
pub fn translate(event: &Envelope, amounts: &Amounts) -> Vec<Outgoing> {
    let p = &event.payload;
    let to_account = |name: &str, kind, data| {
        account(p, name).map(|id| Outgoing {
            audience: Audience::Account(id),
            kind,
            data,
            sequence: None,
        })
    };
    match event.event_type.as_str() {
        "OrderAccepted" => to_account(
            "account_id",
            "order_accepted",
            json!({
                "order_id": field(p, "order_id"), "symbol": field(p, "symbol"),
                "side": field(p, "side"),
                "price": amounts.format(p, "price", "quote_asset"),
                "quantity": amounts.format(p, "quantity", "base_asset"),
            }),
        )
        .into_iter()
        .collect(),
        "OrderCompleted" | "OrderCancelled" | "OrderRejected" => {
            let kind = match event.event_type.as_str() {
                "OrderCompleted" => "order_completed",
                "OrderCancelled" => "order_cancelled",
                _ => "order_rejected",
            };
            let mut data = json!({
                "order_id": field(p, "order_id"), "symbol": field(p, "symbol"),
            });
            if p.get("reason").is_some() {
                data["reason"] = field(p, "reason").clone();
            }
            if p.get("remaining").is_some() {
                data["remaining"] = amounts.format(p, "remaining", "base_asset");
            }
            to_account("account_id", kind, data).into_iter().collect()
        }
        "TradeExecuted" => {
            let price = amounts.format(p, "price", "quote_asset");
            let quantity = amounts.format(p, "quantity", "base_asset");
            let taker_side = field(p, "taker_side").as_str().unwrap_or_default();
            let maker_side = if taker_side == "buy" { "sell" } else { "buy" };
            let symbol = field(p, "symbol").as_str().unwrap_or_default().to_owned();
            let executed_at = event
                .occurred_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let fill = |order: &str, side: &str, liquidity: &str| {
                json!({
                    "order_id": field(p, order), "trade_id": field(p, "trade_id"),
                    "symbol": symbol, "side": side, "price": price, "quantity": quantity,
                    "liquidity": liquidity, "executed_at": executed_at,
                })
            };
            let mut out = vec![Outgoing {
                audience: Audience::Channel(format!("trades:{symbol}")),
                kind: "trade",
                data: json!({
                    "id": field(p, "trade_id"), "price": price, "quantity": quantity,
                    "taker_side": taker_side, "executed_at": executed_at,
                }),
                sequence: None,
            }];
            out.extend(to_account(
                "maker_account_id",
                "fill",
                fill("maker_order_id", maker_side, "maker"),
            ));
            out.extend(to_account(
                "taker_account_id",
                "fill",
                fill("taker_order_id", taker_side, "taker"),
            ));
            out
        }
        "BookUpdated" => {
            let symbol = field(p, "symbol").as_str().unwrap_or_default();
            vec![Outgoing {
                audience: Audience::Channel(format!("book:{symbol}")),
                kind: "update",
                data: json!({
                    "bids": field(p, "bids"), "asks": field(p, "asks"),
                    "previous_sequence": field(p, "previous_sequence"),
                }),
                sequence: p.get("sequence").and_then(Value::as_u64),
            }]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn amounts() -> Amounts {
        Amounts::new(Asset::defaults())
    }

    #[test]
    fn a_trade_is_public_and_a_fill_for_each_side_alone() {
        let (maker, taker) = (Uuid::now_v7(), Uuid::now_v7());
        let event = Envelope::new(
            "orders",
            "TradeExecuted",
            1,
            "t",
            0,
            json!({
                "trade_id": Uuid::now_v7(), "symbol": "BTC-USD", "base_asset": "BTC",
                "quote_asset": "USD", "price": 3_000_000, "quantity": 50_000_000,
                "maker_order_id": Uuid::now_v7(), "taker_order_id": Uuid::now_v7(),
                "maker_account_id": maker, "taker_account_id": taker, "taker_side": "buy",
            }),
        );
        let out = translate(&event, &amounts());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].audience, Audience::Channel("trades:BTC-USD".into()));
        assert_eq!(out[0].data["price"], "30000.00");
        assert_eq!(out[0].data["quantity"], "0.50000000");
        assert_eq!(out[1].audience, Audience::Account(maker));
        assert_eq!(out[1].data["side"], "sell");
        assert_eq!(out[1].data["liquidity"], "maker");
        assert_eq!(out[2].audience, Audience::Account(taker));
        assert_eq!(out[2].data["liquidity"], "taker");
    }

    #[test]
    fn channels_are_checked() {
        for good in ["orders", "trades:BTC-USD", "book:ETH-USD"] {
            assert!(valid_channel(good), "{good}");
        }
        for bad in [
            "order",
            "trades:",
            "book:btc-usd",
            "trades:BTC USD",
            "fills:BTC-USD",
            "",
        ] {
            assert!(!valid_channel(bad), "{bad}");
        }
    }
}
