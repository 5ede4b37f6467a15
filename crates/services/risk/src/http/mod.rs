//! The risk service's HTTP surface: the internal checks (one order, or a batch) and withdrawal
//! reservations (service tokens only) and the public risk-officer, admin and trader routes.

mod balances;
mod checks;
mod funds;
mod kill_switches;
mod limits;
mod positions;
mod reconciliation;
mod withdrawals;

use std::sync::{Arc, Mutex};

use access::{ServiceClaims, TokenVerifier};
use axum::Router;
use axum::extract::FromRef;
use axum::routing::{delete, get, post};
use contracts::Asset;
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::book::Book;

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub pool: PgPool,
    pub verifier: Arc<TokenVerifier>,
    pub services: Arc<TokenVerifier<ServiceClaims>>,
    pub book: Arc<Mutex<Book>>,
    /// This process's start: every check it passes carries it (ADR 0023).
    pub start: contracts::checks::RiskStart,
    pub assets: Arc<Vec<Asset>>,
    pub reconciler: Arc<crate::reconciliation::Reconciler>,
}

impl AppState {
    /// Decimals of `code`'s minor unit (0 for an asset this deployment does not list).
    fn scale_of(&self, code: &str) -> u32 {
        self.assets
            .iter()
            .find(|a| a.code == code)
            .map_or(0, |a| a.scale)
    }
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl FromRef<AppState> for Arc<TokenVerifier<ServiceClaims>> {
    fn from_ref(state: &AppState) -> Self {
        state.services.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/internal/v1/checks/batch", post(checks::check_all))
        .route("/internal/v1/withdrawals", post(withdrawals::reserve))
        .route(
            "/internal/v1/withdrawals/{withdrawal_id}",
            delete(withdrawals::release),
        )
        .route(
            "/v1/admin/risk-limits/{account_id}",
            get(limits::get).put(limits::put).patch(limits::patch),
        )
        .route("/v1/admin/kill-switches", post(kill_switches::activate))
        .route(
            "/v1/admin/kill-switches/{id}",
            delete(kill_switches::release),
        )
        .route("/v1/admin/risk-funds/{account_id}", get(funds::get))
        .route("/v1/admin/risk-reconciliation", post(reconciliation::run))
        .route("/v1/positions", get(positions::own))
        .route("/v1/balances", get(balances::own))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse risk", version = "1"),
    paths(
        limits::get,
        limits::put,
        limits::patch,
        kill_switches::activate,
        kill_switches::release,
        funds::get,
        reconciliation::run,
        positions::own,
        balances::own
    ),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError))
)]
pub struct ApiDoc;

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
