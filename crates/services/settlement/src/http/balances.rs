//! Balances: what a trader owns, available and held; and every balance at once for the
//! pre-trade stage (service tokens only).

use access::service::SETTLEMENT_BALANCES;
use access::{Principal, Role, ServicePrincipal};
use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use contracts::funds::BalanceSnapshot;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::Result;
use crate::store;

#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    pub asset: String,
    /// Spendable now; decimal string at the asset's scale.
    pub available: String,
    /// Reserved by open orders.
    pub held: String,
}

/// Your balances, one per asset you have held.
#[utoipa::path(get, path = "/v1/balances", tag = "balances", security(("bearer" = [])),
    responses((status = 200, body = [BalanceView]), (status = 401, body = service_kit::http::Problem)))]
pub async fn own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<Vec<BalanceView>>> {
    principal.require_any(&[Role::Trader])?;
    let rows = store::balances(&state.pool, principal.user_id).await?;
    Ok(Body(
        rows.into_iter()
            .map(|(asset, scale, available, held)| {
                let scale = u32::try_from(scale).unwrap_or(0);
                BalanceView {
                    asset,
                    available: format_units(available, scale),
                    held: format_units(held, scale),
                }
            })
            .collect(),
    ))
}

/// `GET /internal/v1/balances`: every customer balance with the outbox position it reflects,
/// for risk to load before it follows settlement's stream (ADR 0023).
pub async fn snapshot(
    State(state): State<AppState>,
    caller: ServicePrincipal,
) -> Result<Body<BalanceSnapshot>> {
    caller.require(SETTLEMENT_BALANCES)?;
    Ok(Body(store::balance_snapshot(&state.pool).await?))
}
