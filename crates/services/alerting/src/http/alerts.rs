//! Alerts: history and counts (ALR-06), acknowledge and resolve (ALR-05).

use access::Principal;
use axum::Json as Body;
use axum::extract::State;
use service_kit::http::{Path, Problem, Query};
use uuid::Uuid;

use super::{AppState, READERS, RESPONDERS};
use crate::alerts::{self, AlertDetail, AlertStatus, AlertView};
use crate::error::{Error, Result};
use crate::store;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `firing`, `acknowledged` or `resolved`; all when absent.
    #[param(pattern = "^(firing|acknowledged|resolved)$")]
    pub status: Option<String>,
    /// 1-500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Alerts, most recently seen first.
#[utoipa::path(get, path = "/v1/admin/alerts", tag = "admin", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<AlertView>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Body<Vec<AlertView>>> {
    principal.require_any(READERS)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            AlertStatus::parse(text)
                .ok_or_else(|| Problem::bad_request("invalid_query", "unknown status"))?,
        ),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::unprocessable("invalid_query", "limit is 1-500").into());
    }
    Ok(Body(store::alerts(&state.pool, status, limit).await?))
}

/// One alert with its delivery log.
#[utoipa::path(get, path = "/v1/admin/alerts/{id}", tag = "admin", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = AlertDetail), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Body<AlertDetail>> {
    principal.require_any(READERS)?;
    let mut conn = state.pool.acquire().await?;
    let alert = store::alert(&mut conn, id).await?.ok_or(Error::NotFound)?;
    let deliveries = store::deliveries_of(&state.pool, id).await?;
    Ok(Body(AlertDetail { alert, deliveries }))
}

/// Acknowledge: someone is on it; it stops escalating.
#[utoipa::path(post, path = "/v1/admin/alerts/{id}/ack", tag = "admin", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = AlertView), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn acknowledge(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Body<AlertView>> {
    principal.require_any(RESPONDERS)?;
    Ok(Body(
        alerts::acknowledge(&state.pool, id, principal.user_id).await?,
    ))
}

/// Resolve: the channels it went to hear that it is over.
#[utoipa::path(post, path = "/v1/admin/alerts/{id}/resolve", tag = "admin", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = AlertView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Body<AlertView>> {
    principal.require_any(RESPONDERS)?;
    Ok(Body(
        alerts::resolve(&state.pool, id, principal.user_id, &state.wake).await?,
    ))
}
