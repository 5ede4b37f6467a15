//! Routing rules (admins): event type → severity → channels (ALR-01).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::rules::{self, NewRule, Rule};
use crate::store;

/// Route an event type to channels.
#[utoipa::path(post, path = "/v1/admin/alert-rules", tag = "admin", request_body = NewRule,
    security(("bearer" = [])),
    responses((status = 201, body = Rule), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<NewRule>,
) -> Result<(StatusCode, Body<Rule>)> {
    principal.require_any(&[Role::Admin])?;
    let rule = rules::validate(request)?;
    let mut named = rule.channels.clone();
    named.extend(rule.escalate_to.iter().cloned());
    let unknown = store::unknown_channels(&state.pool, &named).await?;
    if !unknown.is_empty() {
        return Err(Error::fields(vec![(
            "channels".into(),
            format!("no such channel: {}", unknown.join(", ")),
        )]));
    }
    store::insert_rule(&state.pool, &rule, principal.user_id).await?;
    tracing::info!(rule_id = %rule.id, event_type = %rule.event_type, "alert rule created");
    Ok((StatusCode::CREATED, Body(rule)))
}

/// Every rule, oldest first (the order ties are broken in).
#[utoipa::path(get, path = "/v1/admin/alert-rules", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Rule>), (status = 403, body = Problem)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Body<Vec<Rule>>> {
    principal.require_any(&[Role::Admin])?;
    let mut conn = state.pool.acquire().await?;
    Ok(Body(store::rules(&mut conn).await?))
}

/// Remove a rule; its open alerts stay, unrouted.
#[utoipa::path(delete, path = "/v1/admin/alert-rules/{id}", tag = "admin",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    principal.require_any(&[Role::Admin])?;
    if store::delete_rule(&state.pool, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound)
    }
}
