//! Bodies of the internal reconciliation API between orders and settlement (REL-15).

use serde::{Deserialize, Serialize};

/// The trades of one symbol in a time window: what orders executed, or what settlement
/// settled. Equal on both sides when every executed trade settled exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeTotals {
    pub symbol: String,
    pub trades: i64,
    /// Base minor units.
    pub quantity: i64,
}
