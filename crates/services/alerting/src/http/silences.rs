//! Silences (admins, risk officers; auditors read): mute matching alerts until `ends_at`.

use access::Principal;
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{Json, Path, Problem};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AppState, READERS, RESPONDERS};
use crate::error::{Error, Result};
use crate::silences::{self, NewSilence, Silence};
use crate::store;

/// Mute alerts matching every given field of the matcher until `ends_at`.
#[utoipa::path(post, path = "/v1/admin/silences", tag = "admin", request_body = NewSilence,
    security(("bearer" = [])),
    responses((status = 201, body = Silence), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<NewSilence>,
) -> Result<(StatusCode, Body<Silence>)> {
    principal.require_any(RESPONDERS)?;
    let silence = silences::validate(request, OffsetDateTime::now_utc())?;
    store::insert_silence(&state.pool, &silence, principal.user_id).await?;
    tracing::info!(silence_id = %silence.id, matcher = ?silence.matcher, "silence created");
    Ok((StatusCode::CREATED, Body(silence)))
}

/// Silences that have not ended.
#[utoipa::path(get, path = "/v1/admin/silences", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Silence>), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<Vec<Silence>>> {
    principal.require_any(READERS)?;
    Ok(Body(store::current_silences(&state.pool).await?))
}

/// End a silence now.
#[utoipa::path(delete, path = "/v1/admin/silences/{id}", tag = "admin", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn expire(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    principal.require_any(RESPONDERS)?;
    if store::expire_silence(&state.pool, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound)
    }
}
