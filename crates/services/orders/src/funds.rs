//! Before matching (docs/design.md §4): risk checks the order (TRD-10, TRD-11) and reserves
//! what it could cost out of the account's free balance (buying power, TRD-06; ADR 0023).
//!
//! The call goes through `libs/resilience` with a service token and is retried, because it is
//! keyed by the order id: risk remembers the orders it passed and what it reserved for them.
//! Any failure to get an answer refuses the order with 503 — an order is never matched
//! unchecked or unfunded. What an order that never reaches the book reserved goes back when
//! its `OrderRejected` reaches risk, or lapses there.

use serde_json::json;
use service_kit::http::Problem;

use crate::error::{Error, Result};
use crate::instruments::Instrument;
use crate::order_entry::{Rejection, ValidOrder, platform_side};

/// Codes risk refuses orders with; anything else is reported as `risk_refused`.
const RISK_CODES: &[&str] = &[
    "kill_switch",
    "max_order_quantity",
    "max_order_notional",
    "price_collar",
    "max_open_orders",
    "max_orders_per_second",
    "max_position",
    "insufficient_funds",
    "amount_out_of_range",
];

#[derive(Clone)]
pub struct Funds {
    risk: resilience::Upstream,
}

impl Funds {
    pub fn new(risk: resilience::Upstream) -> Self {
        Self { risk }
    }

    /// Asks risk whether the order may proceed (TRD-10, TRD-11) and to reserve its funds, with
    /// the book's mid for the collar before the first trade. `Ok(Err(_))`: risk refused (422
    /// `insufficient_funds`, a limit…); `Err(_)`: no usable answer (503).
    /// Retried: risk remembers the orders it passed, by id.
    #[tracing::instrument(skip_all, fields(order_id = %order.id))]
    pub async fn check(
        &self,
        order: &ValidOrder,
        instrument: &Instrument,
        mid: Option<i64>,
    ) -> Result<Result<(), Rejection>> {
        let price = order
            .hold_price()
            .ok_or_else(|| Error::Internal("a market order reached risk unprotected".into()))?;
        let body = json!({
            "order_id": order.id, "account_id": order.account, "symbol": instrument.symbol,
            "side": platform_side(order.side),
            "type": match order.order_type { crate::order_entry::OrderType::Limit => "limit", crate::order_entry::OrderType::Market => "market" },
            "price": price, "quantity": order.quantity,
            "base_scale": instrument.base.scale, "quote_scale": instrument.quote.scale,
            "base_asset": instrument.base.code, "quote_asset": instrument.quote.code,
            "mid": mid,
        });
        let call =
            resilience::Call::post_json("/internal/v1/checks", body.to_string()).idempotent(true);
        let response = self
            .risk
            .send(call)
            .await
            .map_err(|e| Error::Problem(e.problem()))?;
        refusal(response, "risk", |code| {
            RISK_CODES
                .iter()
                .find(|c| **c == code)
                .copied()
                .unwrap_or("risk_refused")
        })
        .await
    }
}

/// 2xx → go; 422 → the order is refused with the upstream's code (as `code_of` names it);
/// anything else is a fault between the services, not the trader's: 503, loudly.
async fn refusal(
    response: reqwest::Response,
    upstream: &str,
    code_of: impl Fn(&str) -> &'static str,
) -> Result<Result<(), Rejection>> {
    let status = response.status();
    if status.is_success() {
        return Ok(Ok(()));
    }
    if status.as_u16() == 422 {
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        let code = code_of(problem["code"].as_str().unwrap_or_default());
        let detail = problem["detail"].as_str().unwrap_or("refused").to_owned();
        return Ok(Err(Rejection { code, detail }));
    }
    if status.as_u16() == 503 {
        // Risk cannot decide on funds yet (after its start, ADR 0023): the client's to retry.
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        if problem["code"] == "funds_loading" {
            let detail = problem["detail"].as_str().unwrap_or("try again shortly");
            return Err(Error::Problem(Problem::unavailable(
                "funds_loading",
                detail.to_owned(),
                1,
            )));
        }
    }
    tracing::error!(%status, upstream, "an upstream refused an order for a reason other than the order");
    Err(Error::Problem(Problem::unavailable(
        "upstream_unavailable",
        format!("{upstream} could not check this order"),
        1,
    )))
}
