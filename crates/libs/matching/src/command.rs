//! Commands a book executes.

use crate::types::{AccountId, OrderId, OrderKind, SelfTradePrevention, Side, TimeInForce};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub kind: OrderKind,
    /// In lots; must be positive.
    pub quantity: u64,
    pub time_in_force: TimeInForce,
    /// Rejected instead of taking liquidity.
    pub post_only: bool,
    pub self_trade: SelfTradePrevention,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Place(NewOrder),
    /// Cancel one resting order. Someone else's order is treated as unknown.
    Cancel {
        id: OrderId,
        account: AccountId,
    },
    /// Cancel every resting order of an account (cancel-all, account kill switch).
    CancelAccount {
        account: AccountId,
    },
    /// Cancel every resting order (halt, symbol or global kill switch).
    CancelAll,
}
