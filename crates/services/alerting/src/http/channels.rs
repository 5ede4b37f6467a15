//! Alert channels (admins). Targets are shown masked and secrets never (ALR-02).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{Json, Problem};

use super::AppState;
use crate::channels::{self, ChannelView, NewChannel};
use crate::error::Result;
use crate::store;

/// Add a channel notifications can go to.
#[utoipa::path(post, path = "/v1/admin/alert-channels", tag = "admin", request_body = NewChannel,
    security(("bearer" = [])),
    responses((status = 201, body = ChannelView), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<NewChannel>,
) -> Result<(StatusCode, Body<ChannelView>)> {
    principal.require_any(&[Role::Admin])?;
    let channel = channels::validate(request, state.email_enabled)?;
    store::insert_channel(&state.pool, &state.master_keys, &channel, principal.user_id).await?;
    tracing::info!(channel = %channel.name, kind = channel.kind.as_str(), "alert channel created");
    Ok((StatusCode::CREATED, Body(ChannelView::from(&channel))))
}

/// Every channel, targets masked.
#[utoipa::path(get, path = "/v1/admin/alert-channels", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<ChannelView>), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<Vec<ChannelView>>> {
    principal.require_any(&[Role::Admin])?;
    let channels = store::channels(&state.pool, &state.master_keys).await?;
    Ok(Body(channels.iter().map(ChannelView::from).collect()))
}
