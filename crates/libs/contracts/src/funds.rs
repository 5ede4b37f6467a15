//! Bodies of the internal APIs the pre-trade stage (risk) keeps its funds with (ADR 0023):
//! the balances it loads from settlement at its start, before it follows settlement's stream;
//! the mark it asks orders to write, to know when it has read everything orders committed;
//! and what a withdrawal reserves there before settlement books it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every customer balance at one point of settlement's history: `position` is the newest
/// event of settlement's outbox the balances include. A reader applies only the stream's
/// events above it, so nothing is counted twice and nothing is missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSnapshot {
    pub position: i64,
    pub balances: Vec<AccountBalance>,
}

/// What an account owns of one asset, available and held together, in minor units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub account_id: Uuid,
    pub asset: String,
    pub balance: i64,
}

/// `POST /internal/v1/withdrawals` on risk: reserve what a withdrawal takes, before settlement
/// books it (ADR 0023 slice 4). `withdrawal_id` is the transfer settlement will book, and
/// announce as `FundsWithdrawn.transfer_id`; `amount` is in the asset's minor units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalReservation {
    pub withdrawal_id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    pub amount: i64,
}

/// `POST /internal/v1/stream-marks` on orders: write `StreamMarked { mark_id }` to the orders
/// stream. Orders' outbox is read in commit order, so a consumer that reaches its mark has read
/// every event orders committed before it (ADR 0023, "Catching up before deciding").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMark {
    pub mark_id: Uuid,
}

/// `POST /internal/v1/risk-fences` on orders: shut out of every book the checks of risk's
/// starts before `start`, then write `StreamMarked { mark_id }` (ADR 0023, "A fence instead of
/// the wait"). Both happen in one transaction that first waits for every matching batch in
/// flight, so a consumer that reaches the mark has read every order an earlier start's check
/// can ever book. Answered 201 once fenced and marked; `409 fence_unsupported`, with nothing
/// written, while an orders replica that predates the fence may still book; 404 from an
/// orders release before it. Either refusal leaves risk to wait out the bound on checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFence {
    pub mark_id: Uuid,
    pub start: crate::checks::RiskStart,
}
