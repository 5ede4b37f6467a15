//! The vocabulary of the book.

/// An order id, chosen by the caller (the orders service uses UUIDv7s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub u128);

/// The account that owns an order; self-trade prevention compares these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Limit orders carry a price in ticks; market orders take whatever the book offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    Limit { price: i64 },
    Market,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum TimeInForce {
    /// Good till cancelled: what does not fill rests on the book.
    #[default]
    Gtc,
    /// Immediate or cancel: fill what is possible now, cancel the rest.
    Ioc,
    /// Fill or kill: fill completely now or do nothing at all.
    Fok,
}

/// What happens when an order would trade with another order of the same account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SelfTradePrevention {
    /// Cancel the incoming order's remainder; the resting order stays.
    #[default]
    CancelTaker,
    /// Cancel the resting order and keep matching.
    CancelMaker,
    /// Cancel both.
    CancelBoth,
}
