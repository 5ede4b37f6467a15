//! The internal trade totals: what settlement's reconciliation counts its settled trades
//! against (REL-15; service tokens only).

use access::ServicePrincipal;
use access::service::ORDERS_TRADE_TOTALS;
use axum::Json as Body;
use axum::extract::State;
use contracts::reconciliation::TradeTotals;
use serde::Deserialize;
use service_kit::http::{Problem, Query};
use time::OffsetDateTime;

use super::AppState;
use crate::error::Result;
use crate::store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
}

/// Per symbol, the trades executed in `[from, to)`.
pub async fn totals(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Query(window): Query<Window>,
) -> Result<Body<Vec<TradeTotals>>> {
    caller.require(ORDERS_TRADE_TOTALS)?;
    if window.from >= window.to {
        return Err(Problem::bad_request("invalid_query", "from must be before to").into());
    }
    let rows = store::trade_totals(&state.pool, window.from, window.to).await?;
    Ok(Body(
        rows.into_iter()
            .map(|(symbol, trades, quantity)| TradeTotals {
                symbol,
                trades,
                quantity,
            })
            .collect(),
    ))
}
