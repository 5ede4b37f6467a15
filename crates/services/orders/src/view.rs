//! The order object of the API (docs/design.md §5), and the codes of rejected orders.

use contracts::fees::Fees;
use contracts::format_units;
use matching::RejectReason;

use crate::order_entry::OrderStatus;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::instruments::Instrument;
use crate::store::{FillRow, OrderRow};

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FillView {
    pub trade_id: Uuid,
    pub price: String,
    pub quantity: String,
    /// `maker` or `taker`.
    pub liquidity: String,
    /// What settlement books for this fill: the maker or taker bps of its quote amount,
    /// rounded down (the same formula, `contracts::fees`).
    pub fee: String,
    pub fee_asset: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub client_order_id: Option<String>,
    pub account_id: Uuid,
    pub symbol: String,
    pub side: contracts::Side,
    #[serde(rename = "type")]
    pub order_type: String,
    pub price: Option<String>,
    pub quantity: String,
    pub filled_quantity: String,
    /// Quantity-weighted, rounded to the quote asset's scale.
    pub average_fill_price: Option<String>,
    pub status: OrderStatus,
    pub time_in_force: String,
    pub post_only: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub fills: Vec<FillView>,
}

impl OrderView {
    pub fn new(order: &OrderRow, fills: &[FillRow], instrument: &Instrument, fees: Fees) -> Self {
        let price = |units: i64| format_units(units, instrument.quote.scale);
        let quantity = |units: i64| format_units(units, instrument.base.scale);
        Self {
            id: order.id,
            client_order_id: order.client_order_id.clone(),
            account_id: order.account_id,
            symbol: order.symbol.clone(),
            side: order.side,
            order_type: order.order_type.clone(),
            price: order.price.map(price),
            quantity: quantity(order.quantity),
            filled_quantity: quantity(order.filled_quantity),
            average_fill_price: order.average_price.map(price),
            status: order.status,
            time_in_force: order.time_in_force.clone(),
            post_only: order.post_only,
            created_at: order.created_at,
            updated_at: order.updated_at,
            fills: fills
                .iter()
                .map(|fill| FillView {
                    trade_id: fill.trade_id,
                    price: price(fill.price),
                    quantity: quantity(fill.quantity),
                    liquidity: fill.liquidity.clone(),
                    fee: format_units(
                        fee_of(
                            fill.price,
                            fill.quantity,
                            fill.liquidity == "maker",
                            instrument,
                            fees,
                        ),
                        instrument.quote.scale,
                    ),
                    fee_asset: instrument.quote.code.clone(),
                })
                .collect(),
        }
    }
}

/// A fill's fee in quote minor units, as settlement books it: the maker or taker bps of the
/// fill's quote amount (`price` and `quantity` in minor units), rounded down.
pub fn fee_of(price: i64, quantity: i64, maker: bool, instrument: &Instrument, fees: Fees) -> i64 {
    contracts::fees::notional(price, quantity, instrument.base.scale)
        .and_then(|notional| contracts::fees::fee(notional, fees.bps(maker)))
        .unwrap_or(0)
}

/// The problem code and detail of an order the book refused.
pub fn rejection_problem(reason: RejectReason) -> (&'static str, &'static str) {
    match reason {
        RejectReason::PostOnlyWouldTake => (
            "post_only_would_take",
            "a post-only order would have taken liquidity",
        ),
        RejectReason::PostOnlyMarket => ("post_only_market", "a market order cannot be post-only"),
        RejectReason::DuplicateOrderId => ("duplicate_order", "this order is already on the book"),
        RejectReason::ZeroQuantity => ("invalid_quantity", "quantity must be positive"),
        RejectReason::InvalidPrice => ("invalid_price", "price must be positive"),
        RejectReason::UnknownOrder => ("not_found", "no such order"),
    }
}
