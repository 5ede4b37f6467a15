//! Events a book emits.

use crate::types::{AccountId, OrderId, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The owner asked.
    Requested,
    /// IOC or market order: the part that could not fill at once.
    Unfilled,
    /// FOK order that could not fill completely; nothing happened.
    FillOrKill,
    /// Self-trade prevention.
    SelfTrade,
    /// Mass cancel (cancel-all, kill switch, halt).
    MassCancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// A post-only order would have taken liquidity.
    PostOnlyWouldTake,
    /// Post-only makes no sense for a market order.
    PostOnlyMarket,
    DuplicateOrderId,
    ZeroQuantity,
    InvalidPrice,
    /// A cancel for an order that is not resting, or not the caller's.
    UnknownOrder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The order passed the book's checks and is being matched.
    Accepted {
        id: OrderId,
        account: AccountId,
    },
    /// One execution, always at the maker's price.
    Trade {
        maker: OrderId,
        maker_account: AccountId,
        taker: OrderId,
        taker_account: AccountId,
        /// The taker's side.
        taker_side: Side,
        price: i64,
        quantity: u64,
        /// What is left of each order after this trade.
        maker_remaining: u64,
        taker_remaining: u64,
    },
    /// The unfilled remainder now rests on the book.
    Rested {
        id: OrderId,
        price: i64,
        remaining: u64,
    },
    Cancelled {
        id: OrderId,
        account: AccountId,
        remaining: u64,
        reason: CancelReason,
    },
    Rejected {
        id: OrderId,
        reason: RejectReason,
    },
}

/// An event and its place in the book's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub sequence: u64,
    pub event: Event,
}
