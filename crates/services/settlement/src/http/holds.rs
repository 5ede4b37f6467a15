//! The internal holds API: orders reserves funds before matching (service tokens only).

use access::ServicePrincipal;
use access::service::SETTLEMENT_HOLD;
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{Json, Path};
use uuid::Uuid;

use super::AppState;
use crate::error::Result;
use crate::holds::{self, HoldRequest, HoldView};

/// 201 with the new hold; 200 with the same hold when it was placed before (a retry).
pub async fn place(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(request): Json<HoldRequest>,
) -> Result<(StatusCode, Body<HoldView>)> {
    caller.require(SETTLEMENT_HOLD)?;
    let (view, placed) = holds::place(&state.holds, &state.assets, state.fees, &request).await?;
    let status = if placed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Body(view)))
}

/// Voids a hold whose order never reached the book → 204.
pub async fn void(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    caller.require(SETTLEMENT_HOLD)?;
    holds::void(&state.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
