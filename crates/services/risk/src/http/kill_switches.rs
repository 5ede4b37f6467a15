//! Kill switches (risk officers, admins).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::error::Result;
use crate::kill_switches::{self, Activate, KillSwitchView};

const OFFICERS: &[Role] = &[Role::RiskOfficer, Role::Admin];

/// Stop trading in a scope at once; open orders in it are cancelled.
#[utoipa::path(post, path = "/v1/admin/kill-switches", tag = "admin", request_body = Activate,
    security(("bearer" = [])),
    responses((status = 201, body = KillSwitchView), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<Activate>,
) -> Result<(StatusCode, Body<KillSwitchView>)> {
    principal.require_any(OFFICERS)?;
    let switch =
        kill_switches::activate(&state.pool, &state.book, &request, principal.user_id).await?;
    Ok((StatusCode::CREATED, Body(switch.into())))
}

/// Release a kill switch: trading in its scope may resume.
#[utoipa::path(delete, path = "/v1/admin/kill-switches/{id}", tag = "admin",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    principal.require_any(OFFICERS)?;
    kill_switches::release(&state.pool, &state.book, id, principal.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
