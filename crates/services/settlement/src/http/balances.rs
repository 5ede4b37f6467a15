//! Every balance at once, for the pre-trade stage (service tokens only). A trader's own
//! balances are risk's to answer (`GET /v1/balances`): it knows what open orders have reserved
//! out of them (ADR 0023 slice 3b).

use access::ServicePrincipal;
use access::service::SETTLEMENT_BALANCES;
use axum::Json as Body;
use axum::extract::State;
use contracts::funds::BalanceSnapshot;

use super::AppState;
use crate::error::Result;
use crate::store;

/// `GET /internal/v1/balances`: every customer balance with the outbox position it reflects,
/// for risk to load before it follows settlement's stream (ADR 0023).
pub async fn snapshot(
    State(state): State<AppState>,
    caller: ServicePrincipal,
) -> Result<Body<BalanceSnapshot>> {
    caller.require(SETTLEMENT_BALANCES)?;
    Ok(Body(store::balance_snapshot(&state.pool).await?))
}
