//! Before matching (docs/design.md §4): risk checks the order (TRD-10, TRD-11), then settlement holds
//! what it could cost (buying power).
//!
//! Both calls go through `libs/resilience` with a service token and are retried, because both
//! are keyed by the order id: risk remembers the orders it passed and settlement answers a
//! repeated hold with the same hold. Any failure to get an answer refuses the order with 503 —
//! an order is never matched unchecked or without its hold.

use serde_json::json;
use service_kit::http::Problem;
use uuid::Uuid;

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
];

#[derive(Clone)]
pub struct Funds {
    risk: resilience::Upstream,
    settlement: resilience::Upstream,
}

impl Funds {
    pub fn new(risk: resilience::Upstream, settlement: resilience::Upstream) -> Self {
        Self { risk, settlement }
    }

    /// Asks risk whether the order may proceed (TRD-10, TRD-11), with the book's mid for the
    /// collar before the first trade. Same answers as [`Self::hold`].
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

    /// Holds the order's funds. `Ok(Err(_))`: settlement refused (422 `insufficient_funds`…);
    /// `Err(_)`: no usable answer (503).
    #[tracing::instrument(skip_all, fields(order_id = %order.id))]
    pub async fn hold(
        &self,
        order: &ValidOrder,
        instrument: &Instrument,
    ) -> Result<Result<(), Rejection>> {
        let price = order
            .hold_price()
            .ok_or_else(|| Error::Internal("a market order reached funds unprotected".into()))?;
        let body = json!({
            "order_id": order.id, "account_id": order.account, "symbol": instrument.symbol,
            "side": platform_side(order.side),
            "base_asset": instrument.base.code, "quote_asset": instrument.quote.code,
            "price": price, "quantity": order.quantity,
        });
        let call =
            resilience::Call::post_json("/internal/v1/holds", body.to_string()).idempotent(true);
        let response = self
            .settlement
            .send(call)
            .await
            .map_err(|e| Error::Problem(e.problem()))?;
        refusal(response, "settlement", |code| match code {
            "insufficient_funds" => "insufficient_funds",
            "amount_out_of_range" => "amount_out_of_range",
            _ => "hold_refused",
        })
        .await
    }

    /// Gives back the hold of an order that never reached the book (best effort: a hold left
    /// behind is found by reconciliation and can be voided by hand).
    pub async fn void(&self, order: Uuid) {
        let call = resilience::Call::new(
            axum::http::Method::DELETE,
            format!("/internal/v1/holds/{order}"),
        );
        match self.settlement.send(call).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(%order, status = %response.status(), "could not void a hold")
            }
            Err(err) => tracing::warn!(%order, error = %err, "could not void a hold"),
        }
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
    tracing::error!(%status, upstream, "an upstream refused an order for a reason other than the order");
    Err(Error::Problem(Problem::unavailable(
        "upstream_unavailable",
        format!("{upstream} could not check this order"),
        1,
    )))
}
