//! The settlement service's HTTP surface: public routes (through the gateway) and the
//! internal balances API (service tokens only; the gateway never routes `/internal/*`).

mod balances;
mod funding;
mod reconciliation;

use std::sync::Arc;

use access::{ServiceClaims, TokenVerifier};
use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};
use contracts::Asset;
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::ledger::Fees;

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub pool: PgPool,
    /// Users' access tokens.
    pub verifier: Arc<TokenVerifier>,
    /// Service tokens minted for settlement.
    pub services: Arc<TokenVerifier<ServiceClaims>>,
    pub assets: Arc<Vec<Asset>>,
    pub fees: Fees,
    pub reconciler: Arc<crate::reconciliation::Reconciler>,
    /// Where withdrawals reserve before they are booked (risk).
    pub pre_trade: crate::funding::PreTrade,
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
        .route("/v1/admin/deposits", post(funding::deposit))
        .route("/v1/admin/withdrawals", post(funding::withdraw))
        .route("/v1/admin/reconciliation", post(reconciliation::run))
        .route("/internal/v1/balances", get(balances::snapshot))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

/// The public routes only: `/internal/*` is not part of the public API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse settlement", version = "1"),
    paths(funding::deposit, funding::withdraw, reconciliation::run),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError))
)]
pub struct ApiDoc;

/// The document, with the assets this deployment holds as the only ones a request may name.
async fn openapi(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    let mut document = ApiDoc::openapi();
    let assets = || state.assets.iter().map(|asset| asset.code.clone());
    let restricted = service_kit::http::api_document::restrict_to(
        &mut document,
        "FundingRequest",
        "asset",
        assets(),
    );
    if !restricted {
        tracing::warn!("the API document lost a field it restricts: FundingRequest.asset");
    }
    axum::Json(document)
}
