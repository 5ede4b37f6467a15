//! Order requests: parsing and checking against the instrument, in exact units (TRD-02).

use contracts::parse_units;
use matching::{OrderKind, Side, TimeInForce};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::instruments::{Instrument, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    Limit,
    Market,
}

/// Where an order is in its life. Stored as text; the table's check constraint allows these
/// five and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Open,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Cancelled,
        OrderStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether it may still trade (and so be cancelled).
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::Open | OrderStatus::PartiallyFilled)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeInForceName {
    Gtc,
    Ioc,
    Fok,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub symbol: String,
    pub side: contracts::Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Limit orders only, in the quote asset (e.g. "30000.25"), on the instrument's tick grid.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub price: Option<String>,
    /// In the base asset (e.g. "0.5"), a multiple of the instrument's lot size.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub quantity: String,
    pub time_in_force: TimeInForceName,
    #[serde(default)]
    pub post_only: bool,
    /// Your own reference; unique per account.
    #[schema(min_length = 1, max_length = 64)]
    pub client_order_id: Option<String>,
}

/// An order that passed every check, in units of its assets and in ticks/lots for the book.
/// Serialized only between orders replicas (a request forwarded to its symbol's owner).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidOrder {
    pub id: Uuid,
    pub account: Uuid,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub price: Option<i64>,
    pub quantity: i64,
    pub time_in_force: TimeInForce,
    pub post_only: bool,
    /// A market order's protection price (quote minor units, on the tick grid): it executes
    /// no worse than this, and a buy's funds are held at it. Set by [`protect`].
    pub protection: Option<i64>,
}

impl ValidOrder {
    /// What the book matches. A protected market order is an immediate-or-cancel limit order
    /// at its protection price, so it can never cost more than risk reserved for it.
    pub fn kind(&self, instrument: &Instrument) -> OrderKind {
        match self.price.or(self.protection) {
            Some(price) => OrderKind::Limit {
                price: price / instrument.tick_size,
            },
            None => OrderKind::Market,
        }
    }

    /// A market order never rests, whatever its time in force says.
    pub fn matching_time_in_force(&self) -> TimeInForce {
        match (self.order_type, self.time_in_force) {
            (OrderType::Market, TimeInForce::Gtc) => TimeInForce::Ioc,
            (_, tif) => tif,
        }
    }

    /// The price funds are reserved at: the limit, or a market order's protection price.
    pub fn hold_price(&self) -> Option<i64> {
        self.price.or(self.protection)
    }

    pub fn lots(&self, instrument: &Instrument) -> u64 {
        u64::try_from(self.quantity / instrument.lot_size).unwrap_or(0)
    }
}

/// Why an order was refused before reaching the book; each is a 422 with this code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub detail: String,
}

fn reject(code: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        code,
        detail: detail.into(),
    }
}

/// Checks `request` for `account` against `instrument` (None: the symbol does not exist).
pub fn validate(
    request: &PlaceOrder,
    account: Uuid,
    instrument: Option<&Instrument>,
) -> Result<ValidOrder, Rejection> {
    let instrument = instrument.ok_or_else(|| reject("unknown_symbol", "no such instrument"))?;
    if instrument.status == Status::Halted {
        return Err(reject(
            "instrument_halted",
            "trading in this instrument is halted",
        ));
    }
    if let Some(id) = &request.client_order_id
        && !(1..=64).contains(&id.chars().count())
    {
        return Err(reject(
            "invalid_client_order_id",
            "client_order_id must be 1-64 characters",
        ));
    }
    let units = |field: &str, text: &str, scale: u32| {
        let code = if field == "price" {
            "invalid_price"
        } else {
            "invalid_quantity"
        };
        match parse_units(text, scale) {
            Ok(0) => Err(reject(code, format!("{field} must be greater than zero"))),
            Ok(units) => Ok(units),
            Err(err) => Err(reject(code, format!("{field} {err}"))),
        }
    };
    let price = match (request.order_type, &request.price) {
        (OrderType::Limit, None) => {
            return Err(reject("price_required", "a limit order needs a price"));
        }
        (OrderType::Market, Some(_)) => {
            return Err(reject("price_not_allowed", "a market order takes no price"));
        }
        (OrderType::Market, None) => None,
        (OrderType::Limit, Some(text)) => {
            let price = units("price", text, instrument.quote.scale)?;
            if price % instrument.tick_size != 0 {
                return Err(reject(
                    "invalid_price",
                    "price must be a multiple of the tick size",
                ));
            }
            Some(price)
        }
    };
    if request.order_type == OrderType::Market && request.post_only {
        return Err(reject(
            "post_only_market",
            "a market order cannot be post-only",
        ));
    }
    let quantity = units("quantity", &request.quantity, instrument.base.scale)?;
    if quantity % instrument.lot_size != 0 {
        return Err(reject(
            "invalid_quantity",
            "quantity must be a multiple of the lot size",
        ));
    }
    if quantity < instrument.min_quantity || quantity > instrument.max_quantity {
        return Err(reject(
            "quantity_out_of_range",
            "quantity is outside the instrument's limits",
        ));
    }
    Ok(ValidOrder {
        id: Uuid::now_v7(),
        account,
        client_order_id: request.client_order_id.clone(),
        symbol: instrument.symbol.clone(),
        side: engine_side(request.side),
        order_type: request.order_type,
        price,
        quantity,
        time_in_force: match request.time_in_force {
            TimeInForceName::Gtc => TimeInForce::Gtc,
            TimeInForceName::Ioc => TimeInForce::Ioc,
            TimeInForceName::Fok => TimeInForce::Fok,
        },
        post_only: request.post_only,
        protection: None,
    })
}

/// Gives a market order its protection price: `bps` beyond the reference price (the last
/// trade, else the best opposite quote), rounded onto the tick grid inside that band — never
/// worse than `bps` from the reference. No reference means nothing to price it against: 422
/// `no_reference_price`.
pub fn protect(
    order: &mut ValidOrder,
    reference: Option<i64>,
    bps: u32,
    instrument: &Instrument,
) -> Result<(), Rejection> {
    if order.order_type != OrderType::Market {
        return Ok(());
    }
    let reference = reference.ok_or_else(|| {
        reject(
            "no_reference_price",
            "no last trade and no opposite quote to price a market order against",
        )
    })?;
    let tick = i128::from(instrument.tick_size);
    let reference = i128::from(reference);
    let bps = i128::from(bps);
    let ticks = match order.side {
        Side::Buy => reference * (10_000 + bps) / 10_000 / tick,
        Side::Sell => {
            let per = 10_000 * tick;
            ((reference * (10_000 - bps) + per - 1) / per).max(1)
        }
    };
    let price = i64::try_from(ticks * tick)
        .map_err(|_| reject("invalid_price", "the protection price does not fit"))?;
    order.protection = Some(price);
    Ok(())
}

/// The platform's side as the matching engine spells it.
pub fn engine_side(side: contracts::Side) -> Side {
    match side {
        contracts::Side::Buy => Side::Buy,
        contracts::Side::Sell => Side::Sell,
    }
}

/// The matching engine's side as the platform spells it.
pub fn platform_side(side: Side) -> contracts::Side {
    match side {
        Side::Buy => contracts::Side::Buy,
        Side::Sell => contracts::Side::Sell,
    }
}

#[cfg(test)]
mod tests {
    use contracts::Asset;

    use super::*;
    use crate::instruments::Status;

    fn btc_usd() -> Instrument {
        Instrument {
            symbol: "BTC-USD".into(),
            base: Asset::new("BTC", 8),
            quote: Asset::new("USD", 2),
            tick_size: 5,
            lot_size: 10_000,
            min_quantity: 10_000,
            max_quantity: i64::MAX,
            status: Status::Open,
        }
    }

    fn market(side: Side) -> ValidOrder {
        ValidOrder {
            id: Uuid::now_v7(),
            account: Uuid::now_v7(),
            client_order_id: None,
            symbol: "BTC-USD".into(),
            side,
            order_type: OrderType::Market,
            price: None,
            quantity: 10_000,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            protection: None,
        }
    }

    #[test]
    fn a_market_order_is_protected_on_the_tick_grid_towards_the_reference() {
        let instrument = btc_usd();
        // 10 % beyond 30,000.00: a buy at most 33,000.00, a sell at least 27,000.00.
        let mut buy = market(Side::Buy);
        protect(&mut buy, Some(3_000_000), 1_000, &instrument).unwrap();
        assert_eq!(buy.protection, Some(3_300_000));
        let mut sell = market(Side::Sell);
        protect(&mut sell, Some(3_000_000), 1_000, &instrument).unwrap();
        assert_eq!(sell.protection, Some(2_700_000));
        // 1 % beyond 0.13 is 0.1313 / 0.1287: rounded inside the band onto the 0.05 grid.
        let mut buy = market(Side::Buy);
        protect(&mut buy, Some(13), 100, &instrument).unwrap();
        assert_eq!(buy.protection, Some(10));
        let mut sell = market(Side::Sell);
        protect(&mut sell, Some(13), 100, &instrument).unwrap();
        assert_eq!(sell.protection, Some(15));
        // It matches as an immediate-or-cancel limit at that price.
        assert_eq!(buy.kind(&instrument), OrderKind::Limit { price: 2 });
        assert_eq!(buy.matching_time_in_force(), TimeInForce::Ioc);
    }

    #[test]
    fn a_market_order_without_a_reference_is_refused() {
        let mut buy = market(Side::Buy);
        let refused = protect(&mut buy, None, 1_000, &btc_usd()).unwrap_err();
        assert_eq!(refused.code, "no_reference_price");
    }
}
