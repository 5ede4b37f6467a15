//! The alerting service's HTTP surface: channels and rules (admins), alerts and silences
//! (admins and risk officers act; auditors read) — docs/design.md §5, ALR-06.

mod alerts;
mod channels;
mod rules;
mod silences;

use std::sync::Arc;

use access::{Role, TokenVerifier};
use axum::Router;
use axum::extract::FromRef;
use axum::routing::{delete, get, post};
use sqlx::PgPool;
use tokio::sync::Notify;
use utoipa::OpenApi;

/// Who may read alerts, and who may act on them.
pub const READERS: &[Role] = &[Role::Admin, Role::RiskOfficer, Role::Auditor];
pub const RESPONDERS: &[Role] = &[Role::Admin, Role::RiskOfficer];

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub pool: PgPool,
    pub verifier: Arc<TokenVerifier>,
    /// Wakes the notifier when an operator's action queued deliveries.
    pub wake: Arc<Notify>,
    /// Whether SMTP is configured, so email channels can work.
    pub email_enabled: bool,
    /// Channel targets and secrets are sealed with these at rest (SEC-12).
    pub master_keys: Arc<secrets::MasterKeys>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/admin/alert-channels",
            post(channels::create).get(channels::list),
        )
        .route(
            "/v1/admin/alert-rules",
            post(rules::create).get(rules::list),
        )
        .route("/v1/admin/alert-rules/{id}", delete(rules::remove))
        .route("/v1/admin/alerts", get(alerts::list))
        .route("/v1/admin/alerts/{id}", get(alerts::one))
        .route("/v1/admin/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/v1/admin/alerts/{id}/resolve", post(alerts::resolve))
        .route(
            "/v1/admin/silences",
            post(silences::create).get(silences::list),
        )
        .route("/v1/admin/silences/{id}", delete(silences::expire))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse alerting", version = "1"),
    paths(
        channels::create,
        channels::list,
        rules::create,
        rules::list,
        rules::remove,
        alerts::list,
        alerts::one,
        alerts::acknowledge,
        alerts::resolve,
        silences::create,
        silences::list,
        silences::expire
    ),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError))
)]
pub struct ApiDoc;

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The gateway merges this document after parsing it: it must survive the round trip.
    #[test]
    fn the_api_document_round_trips() {
        let text = serde_json::to_string(&ApiDoc::openapi()).unwrap();
        let parsed: Result<utoipa::openapi::OpenApi, _> = serde_json::from_str(&text);
        assert!(parsed.is_ok(), "{:?}\n{text}", parsed.err());
    }
}
