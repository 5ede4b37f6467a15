//! Funds before matching: every order holds what it could cost in the settlement ledger
//! before it reaches the book (DESIGN §4, TRD-10 buying power).
//!
//! The call goes through `libs/resilience` with a service token; it is retried, because a
//! hold is keyed by the order id and settlement answers a repeated request with the same hold.
//! Any failure to get an answer refuses the order with 503 — an order is never matched
//! without its hold.

use serde_json::json;
use service_kit::http::Problem;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::instruments::Instrument;
use crate::order_entry::{Rejection, ValidOrder};

#[derive(Clone)]
pub struct Funds {
    settlement: resilience::Upstream,
}

impl Funds {
    pub fn new(settlement: resilience::Upstream) -> Self {
        Self { settlement }
    }

    pub fn upstream(&self) -> &resilience::Upstream {
        &self.settlement
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
            "side": match order.side { matching::Side::Buy => "buy", matching::Side::Sell => "sell" },
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
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(()));
        }
        if status.as_u16() == 422 {
            let problem: serde_json::Value = response.json().await.unwrap_or_default();
            let code = match problem["code"].as_str() {
                Some("insufficient_funds") => "insufficient_funds",
                Some("amount_out_of_range") => "amount_out_of_range",
                _ => "hold_refused",
            };
            let detail = problem["detail"]
                .as_str()
                .unwrap_or("settlement refused the hold")
                .to_owned();
            return Ok(Err(Rejection { code, detail }));
        }
        // 401/403/409/5xx: a fault between the services, not the trader's — refuse, loudly.
        tracing::error!(%status, "settlement refused a hold for a reason other than the order");
        Err(Error::Problem(Problem::unavailable(
            "upstream_unavailable",
            "settlement could not hold funds for this order",
            1,
        )))
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
