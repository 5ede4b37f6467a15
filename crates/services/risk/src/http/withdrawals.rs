//! What a withdrawal takes, reserved before settlement books it (ADR 0023 slice 4): money
//! that open orders have reserved cannot leave. Service tokens only (`risk:withdrawals`).

use access::ServicePrincipal;
use access::service::RISK_WITHDRAWAL;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contracts::format_units;
use contracts::funds::WithdrawalReservation;
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::funds::Short;
use crate::kill_switches::lock;
use crate::store;

/// 204 when reserved (or reserved before under this id); 422 `insufficient_funds` when the
/// account's free balance is short; 503 `funds_loading` before balances are loaded and the orders stream read up to this start's mark.
pub async fn reserve(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(withdrawal): Json<WithdrawalReservation>,
) -> Result<Response> {
    caller.require(RISK_WITHDRAWAL)?;
    if withdrawal.amount <= 0 {
        return Err(Error::fields(vec![(
            "amount".to_owned(),
            "must be greater than zero".to_owned(),
        )]));
    }
    let reserved = {
        let mut book = lock(&state.book)?;
        let funds = book.funds_mut();
        if !funds.deciding() {
            return Err(Problem::unavailable(
                "funds_loading",
                "risk is still loading balances and the orders committed before its start",
                1,
            )
            .into());
        }
        funds.reserve(
            withdrawal.withdrawal_id,
            withdrawal.account_id,
            &withdrawal.asset,
            withdrawal.amount,
        )
    };
    if let Err(Short { free }) = reserved {
        let detail = format!(
            "not enough free {}: {} free",
            withdrawal.asset,
            format_units(free.max(0), state.scale_of(&withdrawal.asset))
        );
        return Ok(Problem::unprocessable("insufficient_funds", detail).into_response());
    }
    // Kept before answering: once settlement has the answer it books the withdrawal, and a
    // restart in between must still find the money reserved.
    if let Err(error) = store::reserve_withdrawal(&state.pool, &withdrawal).await {
        lock(&state.book)?
            .funds_mut()
            .release(withdrawal.withdrawal_id);
        return Err(error);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Settlement gave the withdrawal up (refused it, or failed to book it): what it reserved is
/// free again. 204 whether or not anything was reserved under the id.
pub async fn release(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Path(withdrawal): Path<Uuid>,
) -> Result<Response> {
    caller.require(RISK_WITHDRAWAL)?;
    let mut conn = state.pool.acquire().await?;
    store::end_withdrawals(&mut conn, &[withdrawal]).await?;
    lock(&state.book)?.funds_mut().release(withdrawal);
    Ok(StatusCode::NO_CONTENT.into_response())
}
