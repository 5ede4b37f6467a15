//! Events as stream messages (TRD-09), without IO: which channel each event goes to and what
//! it says there. Amounts are turned into the same decimal strings the REST API uses.

use contracts::events::{
    BookUpdated, Event, OrderAccepted, OrderCancelled, OrderCompleted, OrderRejected, TradeExecuted,
};
use contracts::{Asset, Side, format_units};
use events::Envelope;
use events::envelope::PayloadError;
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

    /// `units` of `asset` as the REST API writes them; null for an asset this gateway does
    /// not know.
    fn format(&self, units: i64, asset: &str) -> Value {
        match self.assets.iter().find(|a| a.code == asset) {
            Some(asset) => json!(format_units(units, asset.scale)),
            None => Value::Null,
        }
    }
}

fn to_account(account: Uuid, kind: &'static str, data: Value) -> Outgoing {
    Outgoing {
        audience: Audience::Account(account),
        kind,
        data,
        sequence: None,
    }
}

/// The messages an event on the `orders` or `market` stream becomes; an event of a type the
/// stream forwards but in a shape or version it cannot read is refused (the caller logs and
/// skips it: the stream is at most once, and a REST read shows the truth).
pub fn translate(event: &Envelope, amounts: &Amounts) -> Result<Vec<Outgoing>, PayloadError> {
    let ended = |kind, order_id: Option<Uuid>, account, symbol: &str| {
        to_account(
            account,
            kind,
            json!({ "order_id": order_id, "symbol": symbol }),
        )
    };
    Ok(match event.event_type.as_str() {
        OrderAccepted::TYPE => {
            let p: OrderAccepted = event.decode()?;
            let price = p
                .price
                .map_or(Value::Null, |price| amounts.format(price, &p.quote_asset));
            vec![to_account(
                p.account_id,
                "order_accepted",
                json!({
                    "order_id": p.order_id, "symbol": p.symbol, "side": p.side, "price": price,
                    "quantity": amounts.format(p.quantity, &p.base_asset),
                }),
            )]
        }
        OrderCompleted::TYPE => {
            let p: OrderCompleted = event.decode()?;
            vec![ended(
                "order_completed",
                Some(p.order_id),
                p.account_id,
                &p.symbol,
            )]
        }
        OrderCancelled::TYPE => {
            let p: OrderCancelled = event.decode()?;
            let mut message = ended("order_cancelled", Some(p.order_id), p.account_id, &p.symbol);
            message.data["reason"] = json!(p.reason);
            message.data["remaining"] = amounts.format(p.remaining, &p.base_asset);
            vec![message]
        }
        OrderRejected::TYPE => {
            let p: OrderRejected = event.decode()?;
            let mut message = ended("order_rejected", p.order_id, p.account_id, &p.symbol);
            message.data["reason"] = json!(p.reason);
            vec![message]
        }
        TradeExecuted::TYPE => {
            let p: TradeExecuted = event.decode()?;
            let price = amounts.format(p.price, &p.quote_asset);
            let quantity = amounts.format(p.quantity, &p.base_asset);
            let executed_at = event
                .occurred_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let fill = |order: Uuid, side: Side, liquidity: &str| {
                json!({
                    "order_id": order, "trade_id": p.trade_id, "symbol": p.symbol,
                    "side": side, "price": price, "quantity": quantity,
                    "liquidity": liquidity, "executed_at": executed_at,
                })
            };
            vec![
                Outgoing {
                    audience: Audience::Channel(format!("trades:{}", p.symbol)),
                    kind: "trade",
                    data: json!({
                        "id": p.trade_id, "price": price, "quantity": quantity,
                        "taker_side": p.taker_side, "executed_at": executed_at,
                    }),
                    sequence: None,
                },
                to_account(
                    p.maker_account_id,
                    "fill",
                    fill(p.maker_order_id, p.taker_side.opposite(), "maker"),
                ),
                to_account(
                    p.taker_account_id,
                    "fill",
                    fill(p.taker_order_id, p.taker_side, "taker"),
                ),
            ]
        }
        BookUpdated::TYPE => {
            let p: BookUpdated = event.decode()?;
            vec![Outgoing {
                audience: Audience::Channel(format!("book:{}", p.symbol)),
                kind: "update",
                data: json!({
                    "bids": p.bids, "asks": p.asks, "previous_sequence": p.previous_sequence,
                }),
                sequence: Some(p.sequence),
            }]
        }
        _ => Vec::new(),
    })
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
        let event = Envelope::of(
            "orders",
            "t",
            0,
            &TradeExecuted {
                trade_id: Uuid::now_v7(),
                symbol: "BTC-USD".to_owned(),
                base_asset: "BTC".to_owned(),
                quote_asset: "USD".to_owned(),
                price: 3_000_000,
                quantity: 50_000_000,
                maker_order_id: Uuid::now_v7(),
                taker_order_id: Uuid::now_v7(),
                maker_account_id: maker,
                taker_account_id: taker,
                taker_side: Side::Buy,
            },
        )
        .unwrap();
        let out = translate(&event, &amounts()).unwrap();
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
