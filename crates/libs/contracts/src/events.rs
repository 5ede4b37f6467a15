//! Payloads of the events on the `orders` and `settlement` streams, so producer and consumers
//! agree on one definition: producers build events from these types
//! (`events::Envelope::of`), consumers read them back with the type and version checked
//! (`events::Envelope::decode`). Amounts are integer minor units, as everywhere inside the
//! platform; sides are [`Side`], never strings.
//!
//! Evolving one: a field added with `#[serde(default)]` keeps the version — old events still
//! read, and readers ignore fields they do not know (no `deny_unknown_fields`: a consumer
//! deployed before its producer must not choke on the new field). Anything else is a new
//! version, and consumers refuse a version they do not know — the event is dead-lettered, to
//! be replayed once they do — rather than guess at it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Side;

/// An event payload: the type name and schema version the envelope carries with it.
pub trait Event: Serialize + DeserializeOwned {
    /// The envelope's `type`.
    const TYPE: &'static str;
    /// The envelope's `version`: the payload schema this type reads and writes.
    const VERSION: u32;
}

macro_rules! event {
    ($name:ident, $version:literal) => {
        impl Event for $name {
            const TYPE: &'static str = stringify!($name);
            const VERSION: u32 = $version;
        }
    };
}

/// `OrderAccepted`: an order passed its checks and reached the book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    pub side: Side,
    /// Quote minor units per whole base unit; none for a market order.
    pub price: Option<i64>,
    /// Base minor units.
    pub quantity: i64,
    /// A market order's protection price: the worst it can execute at, and what its funds
    /// are held and reserved at (ADR 0023). None for a limit order, and in events written
    /// before the field existed (added with a default, so the version stays 1: ADR 0019).
    #[serde(default)]
    pub protection_price: Option<i64>,
}
event!(OrderAccepted, 1);

/// `TradeExecuted`: one match, at the maker's price.
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
    pub taker_side: Side,
}
event!(TradeExecuted, 1);

/// `OrderCompleted`: an order filled in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
}
event!(OrderCompleted, 1);

/// `OrderCancelled`: an order left the book with `remaining` unfilled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    pub base_asset: String,
    /// Base minor units left unfilled.
    pub remaining: i64,
    /// Who or what cancelled it (the owner, a kill switch, self-trade prevention, …).
    pub reason: String,
}
event!(OrderCancelled, 1);

/// `OrderRejected`: an order that will never trade — refused by the book or its checks, or
/// given up on before it reached the book (`not_placed`). A request refused before its order
/// had an id carries none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: Option<Uuid>,
    pub account_id: Uuid,
    pub symbol: String,
    pub reason: String,
}
event!(OrderRejected, 1);

/// `StreamMarked` on the `orders` stream: a mark a consumer asked orders to write, so that
/// seeing it proves it has read everything orders committed before it (ADR 0023: a restarted
/// risk decides only once its orders consumer has reached its own mark).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMarked {
    /// Chosen by the consumer that asked, which waits for this one.
    pub mark_id: Uuid,
    /// The service that asked.
    pub requested_by: String,
}
event!(StreamMarked, 1);

/// `TradeSettled` on the `settlement` stream: a trade's money moved, delivery versus payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeSettled {
    pub trade_id: Uuid,
    pub symbol: String,
    pub buyer_account_id: Uuid,
    pub seller_account_id: Uuid,
    pub base_asset: String,
    pub quote_asset: String,
    pub price: i64,
    pub quantity: i64,
    /// Quote minor units: price × quantity.
    pub notional: i64,
    pub buyer_fee: i64,
    pub seller_fee: i64,
    pub fee_asset: String,
}
event!(TradeSettled, 1);

/// `FundsDeposited` on the `settlement` stream: money entered an account from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    /// The deposit's transfer.
    pub transfer_id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    /// Minor units of `asset`; positive.
    pub amount: i64,
}
event!(FundsDeposited, 1);

/// `FundsWithdrawn` on the `settlement` stream: money left an account for outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsWithdrawn {
    /// The withdrawal's transfer.
    pub transfer_id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    /// Minor units of `asset`; positive.
    pub amount: i64,
}
event!(FundsWithdrawn, 1);

/// How an order ended, as settlement and risk need it: the three end events read as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderEnded {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub how: Ending,
}

/// Which end, and what it leaves to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Filled in full.
    Completed,
    /// Left the book with this many base minor units unfilled.
    Cancelled { remaining: i64 },
    /// Never traded.
    Rejected,
}

impl From<OrderCompleted> for OrderEnded {
    fn from(e: OrderCompleted) -> Self {
        Self {
            order_id: e.order_id,
            account_id: e.account_id,
            how: Ending::Completed,
        }
    }
}

impl From<OrderCancelled> for OrderEnded {
    fn from(e: OrderCancelled) -> Self {
        Self {
            order_id: e.order_id,
            account_id: e.account_id,
            how: Ending::Cancelled {
                remaining: e.remaining,
            },
        }
    }
}

impl OrderRejected {
    /// The end of its order; none when the request was refused before the order had an id.
    pub fn ended(self) -> Option<OrderEnded> {
        Some(OrderEnded {
            order_id: self.order_id?,
            account_id: self.account_id,
            how: Ending::Rejected,
        })
    }
}

/// A kill switch as the `risk` stream announces it, activated or released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub kill_switch_id: Uuid,
    /// `global`, `account` or `symbol`.
    pub scope: String,
    /// The account id or the symbol; none for `global`.
    pub target: Option<String>,
    pub reason: String,
    /// Who threw (or released) it.
    pub by: Uuid,
}

/// `KillSwitchActivated` on `risk`: orders mass-cancels what is open in its scope, alerting
/// pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KillSwitchActivated(pub KillSwitch);
event!(KillSwitchActivated, 1);

/// `KillSwitchReleased` on `risk`: trading in its scope may resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KillSwitchReleased(pub KillSwitch);
event!(KillSwitchReleased, 1);

/// `RiskLimitBreached` on `risk`: a trade took an account past a limit checked after the
/// fact (its position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskLimitBreached {
    pub account_id: Uuid,
    pub symbol: String,
    /// Which limit (`max_position`).
    pub limit: String,
    /// The limit, as a decimal string in the base asset.
    pub max_position: String,
    /// The account's net position after the trade, as a decimal string.
    pub net_quantity: String,
    pub trade_id: Uuid,
}
event!(RiskLimitBreached, 1);

/// A circuit breaker between a service and one upstream, as the `ops` stream announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerTransition {
    /// The calling service.
    pub service: String,
    pub upstream: String,
    /// The breaker's state before and after (`closed`, `open`, `half_open`, `disabled`).
    pub from: String,
    pub to: String,
}

/// `CircuitBreakerOpened` on `ops`: the caller stopped calling the upstream for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CircuitBreakerOpened(pub BreakerTransition);
event!(CircuitBreakerOpened, 1);

/// `CircuitBreakerClosed` on `ops`: calls flow again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CircuitBreakerClosed(pub BreakerTransition);
event!(CircuitBreakerClosed, 1);

/// `EventDeadLettered` on `ops`: a consumer group gave up on an event after its deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDeadLettered {
    pub stream: String,
    pub group: String,
    /// The stream entry it was.
    pub entry_id: String,
    /// The event's id and type, when the entry carried them.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    pub deliveries: u64,
}
event!(EventDeadLettered, 1);

/// One failed check of a reconciliation run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCheck {
    pub name: String,
    /// What is wrong.
    pub detail: String,
}

/// `ReconciliationFailed` on `settlement`: the ledger did not prove out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationFailed {
    pub checks: Vec<FailedCheck>,
}
event!(ReconciliationFailed, 1);

/// A service's readiness as alerting's health watch saw it change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub service: String,
    pub detail: String,
}

/// `ServiceUnhealthy` on `ops`: a service stopped answering ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceUnhealthy(pub ServiceHealth);
event!(ServiceUnhealthy, 1);

/// `ServiceRecovered` on `ops`: it answers ready again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceRecovered(pub ServiceHealth);
event!(ServiceRecovered, 1);

/// `BookUpdated` on `market`: a book's top levels after a matching batch that changed it —
/// at most once, straight to Redis (market data is a view, not a state change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookUpdated {
    pub symbol: String,
    /// The book's sequence after the batch: the snapshot sequence a client compares with.
    pub sequence: u64,
    /// The sequence of the update before this one: a client whose last sequence differs
    /// missed something and must take a new snapshot.
    pub previous_sequence: u64,
    /// `[price, quantity]` as decimal strings, best first.
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
}
event!(BookUpdated, 1);
