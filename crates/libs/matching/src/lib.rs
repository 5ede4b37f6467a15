//! The matching engine: one order book per symbol, price-time priority, deterministic.
//!
//! No IO, no async, no clock: a [`Book`] is a state machine that turns [`Command`]s into
//! [`Event`]s, each stamped with the book's next sequence number. Replaying the same commands
//! yields the same events, which is what recovery and the property tests rely on.
//!
//! Prices are integer ticks and quantities integer lots: the caller (the orders service)
//! converts decimal API values exactly, and trades always execute at the resting (maker)
//! order's price.
//!
//! - [`types`]: ids, sides, order kinds, time in force, self-trade prevention.
//! - [`command`] and [`event`]: what goes in and what comes out.
//! - [`book`]: the book itself.

pub mod book;
pub mod command;
pub mod event;
pub mod types;

pub use book::{Book, Level, RestingOrder};
pub use command::{Command, NewOrder};
pub use event::{CancelReason, Emitted, Event, RejectReason};
pub use types::{AccountId, OrderId, OrderKind, SelfTradePrevention, Side, TimeInForce};
