//! Payloads of the events more than one service reads, so producer and consumers agree on
//! one definition. Amounts are integer minor units, as everywhere inside the platform.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `TradeExecuted` on `bourse.orders`: one match, at the maker's price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeExecuted {
    pub trade_id: Uuid,
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    /// Quote minor units per whole base unit.
    pub price: i64,
    /// Base minor units.
    pub quantity: i64,
    pub maker_order_id: Uuid,
    pub taker_order_id: Uuid,
    pub maker_account_id: Uuid,
    pub taker_account_id: Uuid,
    /// `buy` or `sell`.
    pub taker_side: String,
}

/// `OrderCompleted`, `OrderCancelled` and `OrderRejected`: an order that will not trade again.
/// A rejection before the order had an id carries none; a cancel says what was left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEnded {
    pub order_id: Option<Uuid>,
    /// Whose order it was (absent from events written before it was added).
    #[serde(default)]
    pub account_id: Option<Uuid>,
    /// Base minor units left unfilled (cancels only).
    #[serde(default)]
    pub remaining: Option<i64>,
}

/// `OrderAccepted`: an order passed its checks and reached the book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Quote minor units; none for a market order.
    pub price: Option<i64>,
    /// Base minor units.
    pub quantity: i64,
}
