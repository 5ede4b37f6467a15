//! Auth's HTTP surface: the routes of docs/design.md §5 "auth" rows, and its OpenAPI description.

mod api_keys;
mod routes;

use std::sync::Arc;

use access::TokenVerifier;
use axum::extract::FromRef;
use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};
use service_kit::http::TrustedProxies;
use utoipa::OpenApi;

use crate::api_keys::ApiKeys;
use crate::identity::Identity;
use crate::service_tokens::ServiceTokens;
use crate::signing_keys::Keyring;

pub use routes::{
    LoginRequest, RefreshRequest, RegisterRequest, ServiceTokenRequest, ServiceTokenResponse,
    SetRolesRequest, TokenResponse, UserResponse,
};

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub identity: Identity,
    pub service_tokens: ServiceTokens,
    pub keyring: Arc<Keyring>,
    pub verifier: Arc<TokenVerifier>,
    pub services: Arc<TokenVerifier<access::ServiceClaims>>,
    pub api_keys: ApiKeys,
}

impl FromRef<AppState> for Arc<TokenVerifier<access::ServiceClaims>> {
    fn from_ref(state: &AppState) -> Self {
        state.services.clone()
    }
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The API routes (health and metrics are added by the service kit).
pub fn router(state: AppState, trusted_proxies: TrustedProxies) -> Router {
    Router::new()
        .route("/v1/auth/register", post(routes::register))
        .route("/v1/auth/login", post(routes::login))
        .route("/v1/auth/refresh", post(routes::refresh))
        .route("/v1/auth/logout", post(routes::logout))
        .route(
            "/v1/auth/sessions",
            axum::routing::delete(routes::revoke_sessions),
        )
        .route("/v1/auth/me", get(routes::me))
        .route("/v1/admin/users/{id}/roles", put(routes::set_roles))
        .route("/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route("/.well-known/jwks.json", get(routes::jwks))
        // Between services only: the gateway never routes `/internal/*` (SEC-14).
        .route("/internal/v1/service-tokens", post(routes::service_token))
        .route(
            "/internal/v1/api-keys/{key_id}/credential",
            get(api_keys::credential),
        )
        .route("/openapi.json", get(routes::openapi))
        .layer(Extension(trusted_proxies))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse auth", version = "1"),
    paths(
        routes::register,
        routes::login,
        routes::refresh,
        routes::logout,
        routes::revoke_sessions,
        routes::me,
        routes::set_roles,
        routes::jwks,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
    ),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError, access::Role)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
