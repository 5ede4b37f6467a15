//! Thin handlers: parse, call [`Identity`](crate::identity::Identity), shape the answer.

use access::{Principal, Role};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use service_kit::http::{ClientIp, Json, Path, Problem};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::identity::{OnDuplicate, TokenPair, UserView};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// One `@`, a dot inside the domain, no spaces or control characters, at most 254.
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f.][^@\\s\\x00-\\x1f\\x7f-\\x9f]*\\.[^@\\s\\x00-\\x1f\\x7f-\\x9f]*[^@\\s\\x00-\\x1f\\x7f-\\x9f.]$"
    )]
    pub email: String,
    /// 12-1024 characters, not the email address.
    #[schema(value_type = String, min_length = 12, max_length = 1024)]
    pub password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub roles: Vec<Role>,
}

impl From<UserView> for UserResponse {
    fn from(user: UserView) -> Self {
        Self {
            id: user.id,
            email: user.email,
            roles: user.roles,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
}

/// Tokens must never be cached by a browser or proxy (RFC 6749 §5.1).
fn token_response(pair: TokenPair) -> Response {
    let body = TokenResponse {
        access_token: pair.access_token.expose_secret().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: pair.expires_in,
        refresh_token: pair.refresh_token.expose_secret().to_owned(),
    };
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

/// Client credentials of a service asking for a token to call `audience`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenRequest {
    pub client_id: String,
    pub client_secret: SecretString,
    pub audience: String,
}

#[derive(Serialize, Deserialize)]
pub struct ServiceTokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

/// A service token (SEC-14). Internal: reachable from other services, never through the gateway.
pub async fn service_token(
    State(state): State<AppState>,
    Json(body): Json<ServiceTokenRequest>,
) -> Result<Response> {
    let issued =
        state
            .service_tokens
            .issue(&body.client_id, &body.client_secret, &body.audience)?;
    let body = ServiceTokenResponse {
        access_token: issued.access_token.expose_secret().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: issued.expires_in,
        scope: issued.scope,
    };
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response())
}

/// Register a trader account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserResponse), (status = 422, body = Problem), (status = 400, body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<UserResponse>)> {
    let user = state
        .identity
        .register(
            &body.email,
            &body.password,
            &[Role::Trader],
            OnDuplicate::Conceal,
            Some(ip),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Exchange email and password for a token pair.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Response> {
    let pair = state
        .identity
        .login(&body.email, &body.password, ip)
        .await?;
    Ok(token_response(pair))
}

/// Exchange a refresh token for a new pair; the presented token is rotated out.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> Result<Response> {
    let pair = state.identity.refresh(&body.refresh_token, ip).await?;
    Ok(token_response(pair))
}

/// End the session the refresh token belongs to.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    security(("bearer" = [])), responses((status = 204), (status = 401, body = Problem)))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode> {
    state
        .identity
        .logout(principal.user_id, &body.refresh_token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every refresh token of the caller.
#[utoipa::path(delete, path = "/v1/auth/sessions", tag = "auth",
    security(("bearer" = [])), responses((status = 204), (status = 401, body = Problem)))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode> {
    state
        .identity
        .revoke_all_sessions(principal.user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth",
    security(("bearer" = [])), responses((status = 200, body = UserResponse), (status = 401, body = Problem)))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<UserResponse>> {
    let user = state.identity.user(principal.user_id).await?;
    Ok(axum::Json(user.into()))
}

/// Replace a user's roles (admin). Not your own: an admin who demoted themselves could leave
/// the platform without one, so another admin does it (403 `own_roles`).
#[utoipa::path(put, path = "/v1/admin/users/{id}/roles", tag = "admin", request_body = SetRolesRequest,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn set_roles(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetRolesRequest>,
) -> Result<axum::Json<UserResponse>> {
    principal.require_any(&[Role::Admin])?;
    if user_id == principal.user_id {
        return Err(Error::Problem(Problem::new(
            StatusCode::FORBIDDEN,
            "own_roles",
            "you cannot change your own roles; another admin can",
        )));
    }
    let user = state
        .identity
        .set_roles(principal.user_id, user_id, &body.roles)
        .await?;
    Ok(axum::Json(user.into()))
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JWK set (Ed25519 keys)", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        // Short enough that a rotation propagates well inside the overlap window.
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(state.keyring.jwks()),
    )
        .into_response()
}

pub async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(super::ApiDoc::openapi())
}
