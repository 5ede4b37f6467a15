//! `/v1/api-keys`: a signed-in user's keys for their programs (SEC-19). Only a user's own
//! session reaches these routes — a program signing with a key cannot make, list or revoke
//! keys (the gateway refuses it; here the token minted for a key is refused too).
//! And the gateway's internal read of a key's credential.

use access::service::AUTH_API_KEYS;
use access::{Principal, ServicePrincipal};
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::http::{ClientIp, Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::api_keys::{ApiKeyView, CreatedApiKey, KeyCredential, NewApiKey};
use crate::error::Result;

/// A key manages nothing: only the owner's own session does.
fn session_only(principal: &Principal) -> Result<()> {
    if principal.api_key.is_some() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "api_key_not_allowed",
            "API keys cannot manage API keys; sign in",
        )
        .into());
    }
    Ok(())
}

/// The credential of an active key, for the gateway (service token `auth:api-keys`); 404 when
/// unknown or revoked.
pub async fn credential(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Path(key_id): Path<String>,
) -> Result<axum::Json<KeyCredential>> {
    caller.require(AUTH_API_KEYS)?;
    Ok(axum::Json(state.api_keys.credential(&key_id).await?))
}

/// Creates a key. Its `secret` is in this answer and never again.
#[utoipa::path(post, path = "/v1/api-keys", tag = "auth", request_body = NewApiKey,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    Json(request): Json<NewApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>)> {
    session_only(&principal)?;
    let created = state
        .api_keys
        .create(principal.user_id, request, Some(ip))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Your keys, newest first, revoked ones with when; never a secret.
#[utoipa::path(get, path = "/v1/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKeyView>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<ApiKeyView>>> {
    session_only(&principal)?;
    Ok(axum::Json(state.api_keys.list(principal.user_id).await?))
}

/// Revokes one of your keys, at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "auth", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, body = Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    session_only(&principal)?;
    state
        .api_keys
        .revoke(principal.user_id, id, Some(ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
