//! Types more than one service speaks. No IO.
//!
//! - [`amount`]: decimal strings ⇄ integer minor units, exactly or not at all.
//! - [`asset`]: assets and their scales.
//! - [`checks`]: the pre-trade check orders asks risk for, and its verdicts.
//! - [`events`]: payloads of events that several services read.
//! - [`funds`]: the balances settlement hands risk, the pre-trade stage, at its start.
//! - [`fees`]: maker/taker fees, one formula for settlement and orders.
//! - [`reconciliation`]: what orders and settlement compare to prove every trade settled.
//! - [`side`]: buy or sell.

pub mod amount;
pub mod asset;
pub mod checks;
pub mod events;
pub mod fees;
pub mod funds;
pub mod reconciliation;
pub mod side;

pub use amount::{AmountError, format_units, parse_units};
pub use asset::Asset;
pub use side::Side;
