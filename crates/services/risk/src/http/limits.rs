//! Risk limits per account (risk officers, admins), every change logged (SEC-16).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::kill_switches::lock;
use crate::limits::{LimitsBody, LimitsPatch};
use crate::store;

const OFFICERS: &[Role] = &[Role::RiskOfficer, Role::Admin];

/// The account's limits: its own, or the defaults.
#[utoipa::path(get, path = "/v1/admin/risk-limits/{account_id}", tag = "admin",
    params(("account_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = LimitsBody), (status = 403, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<Uuid>,
) -> Result<Body<LimitsBody>> {
    principal.require_any(OFFICERS)?;
    let limits = lock(&state.book)?
        .limits_of(account)
        .ok_or_else(|| Error::Internal("no default limits".to_owned()))?;
    Ok(Body(limits.into()))
}

/// Sets the account's limits (all fields); applied to its next order.
#[utoipa::path(put, path = "/v1/admin/risk-limits/{account_id}", tag = "admin",
    params(("account_id" = Uuid, Path)), request_body = LimitsBody, security(("bearer" = [])),
    responses((status = 200, body = LimitsBody), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<Uuid>,
    Json(body): Json<LimitsBody>,
) -> Result<Body<LimitsBody>> {
    principal.require_any(OFFICERS)?;
    let limits = body.validate().map_err(Error::fields)?;
    let mut tx = state.pool.begin().await?;
    let before = current_limits(&state, &mut tx, account).await?;
    store::put_limits(&mut tx, account, &before, &body, principal.user_id).await?;
    tx.commit().await?;
    lock(&state.book)?.set_limits(account, limits);
    tracing::info!(%account, by = %principal.user_id, "risk limits changed");
    Ok(Body(limits.into()))
}

/// Changes only the limits given; the others keep their current values (the account's own, or
/// the defaults). Two partial updates at once both take effect: each reads and writes under
/// the account's lock.
#[utoipa::path(patch, path = "/v1/admin/risk-limits/{account_id}", tag = "admin",
    params(("account_id" = Uuid, Path)), request_body = LimitsPatch, security(("bearer" = [])),
    responses((status = 200, body = LimitsBody), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<Uuid>,
    Json(patch): Json<LimitsPatch>,
) -> Result<Body<LimitsBody>> {
    principal.require_any(OFFICERS)?;
    let mut tx = state.pool.begin().await?;
    let before = current_limits(&state, &mut tx, account).await?;
    let after = patch.applied_to(&before);
    let limits = after.validate().map_err(Error::fields)?;
    store::put_limits(&mut tx, account, &before, &after, principal.user_id).await?;
    tx.commit().await?;
    lock(&state.book)?.set_limits(account, limits);
    tracing::info!(%account, by = %principal.user_id, "risk limits changed (partial)");
    Ok(Body(limits.into()))
}

/// The account's limits as stored, locked for this transaction; the defaults if it has none.
async fn current_limits(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    account: Uuid,
) -> Result<LimitsBody> {
    match store::lock_limits(tx, account).await? {
        Some(stored) => Ok(stored),
        None => Ok(lock(&state.book)?
            .limits_of(account)
            .ok_or_else(|| Error::Internal("no default limits".to_owned()))?
            .into()),
    }
}
