//! Order requests: parsing and checking against the instrument, in exact units (TRD-02).

use contracts::parse_units;
use matching::{OrderKind, Side, TimeInForce};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::instruments::{Instrument, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SideName {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    Limit,
    Market,
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
    pub side: SideName,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Limit orders only, in the quote asset (e.g. "30000.25").
    pub price: Option<String>,
    /// In the base asset (e.g. "0.5").
    pub quantity: String,
    pub time_in_force: TimeInForceName,
    #[serde(default)]
    pub post_only: bool,
    /// Your own reference; unique per account.
    pub client_order_id: Option<String>,
}

/// An order that passed every check, in units of its assets and in ticks/lots for the book.
#[derive(Clone, Debug)]
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
}

impl ValidOrder {
    pub fn kind(&self, instrument: &Instrument) -> OrderKind {
        match self.price {
            Some(price) => OrderKind::Limit {
                price: price / instrument.tick_size,
            },
            None => OrderKind::Market,
        }
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
        && !(1..=64).contains(&id.len())
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
        side: match request.side {
            SideName::Buy => Side::Buy,
            SideName::Sell => Side::Sell,
        },
        order_type: request.order_type,
        price,
        quantity,
        time_in_force: match request.time_in_force {
            TimeInForceName::Gtc => TimeInForce::Gtc,
            TimeInForceName::Ioc => TimeInForce::Ioc,
            TimeInForceName::Fok => TimeInForce::Fok,
        },
        post_only: request.post_only,
    })
}
