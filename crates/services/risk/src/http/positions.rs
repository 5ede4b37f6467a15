//! Positions and realized PnL (traders: their own).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::Result;
use crate::store;

#[derive(Serialize, ToSchema)]
pub struct PositionView {
    pub symbol: String,
    /// Base asset; negative when short.
    pub net_quantity: String,
    /// Of the open position, in the quote asset.
    pub average_price: String,
    /// In the quote asset.
    pub realized_pnl: String,
}

/// Your positions, one per instrument you have traded.
#[utoipa::path(get, path = "/v1/positions", tag = "positions", security(("bearer" = [])),
    responses((status = 200, body = [PositionView])))]
pub async fn own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<Vec<PositionView>>> {
    principal.require_any(&[Role::Trader])?;
    let scale = |code: &str| state.scale_of(code);
    let rows = store::positions(&state.pool, principal.user_id).await?;
    Ok(Body(
        rows.into_iter()
            .map(
                |(symbol, net, average, realized, base, quote)| PositionView {
                    symbol,
                    net_quantity: format_units(net, scale(&base)),
                    average_price: format_units(average, scale(&quote)),
                    realized_pnl: format_units(realized, scale(&quote)),
                },
            )
            .collect(),
    ))
}
