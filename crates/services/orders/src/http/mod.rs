//! The orders service's HTTP surface.

mod instruments;
mod market;
mod matching;
mod orders;
mod stream_marks;
mod trade_totals;

use std::sync::Arc;

use access::{ServiceClaims, TokenVerifier};
use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, patch, post};
use contracts::Asset;
use sqlx::PgPool;
use utoipa::OpenApi;

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub pool: PgPool,
    pub verifier: Arc<TokenVerifier>,
    /// Service tokens, for `/internal/*`.
    pub services: Arc<TokenVerifier<ServiceClaims>>,
    pub assets: Arc<Vec<Asset>>,
    /// Instruments, cached until a change is announced (ADR 0025).
    pub catalog: crate::catalog::Catalog,
    pub engines: crate::engine::Engines,
    /// Risk's check and reservation, asked before matching.
    pub funds: crate::funds::Funds,
    pub market_protection_bps: u32,
    /// How long a risk check stays good for booking its order (ADR 0023).
    pub check_valid_for: std::time::Duration,
    /// Shown on each fill (settlement books them).
    pub fees: contracts::fees::Fees,
    /// Runs work that must finish even when its request is cut off (an order being placed).
    pub tasks: service_kit::Supervisor,
    /// Idempotency keys of orders being placed by this process (their claims are written with
    /// the answer, in the matching batch).
    pub placing: service_kit::idempotency::InFlightKeys,
    /// Their look-ups, read together (ADR 0025).
    pub look_ups: service_kit::idempotency::LookUps,
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
        .route("/v1/assets", get(instruments::assets))
        .route("/v1/instruments", get(instruments::list))
        .route("/v1/admin/instruments", post(instruments::create))
        .route(
            "/v1/admin/instruments/{symbol}",
            patch(instruments::set_status),
        )
        .route(
            "/v1/orders",
            post(orders::place)
                .get(orders::list)
                .delete(orders::cancel_all),
        )
        .route("/v1/trades", get(orders::own_trades))
        .route("/v1/markets/{symbol}/book", get(market::book))
        .route("/v1/markets/{symbol}/trades", get(market::trades))
        .route("/v1/markets/{symbol}/ticker", get(market::ticker))
        .route("/v1/orders/{id}", get(orders::get).delete(orders::cancel))
        .route("/internal/v1/trade-totals", get(trade_totals::totals))
        .route("/internal/v1/stream-marks", post(stream_marks::write))
        .route("/internal/v1/risk-fences", post(stream_marks::fence))
        .route("/internal/v1/matching/{symbol}", post(matching::run))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse orders", version = "1"),
    paths(
        instruments::assets,
        instruments::list,
        instruments::create,
        instruments::set_status,
        orders::place,
        orders::get,
        orders::cancel,
        orders::list,
        orders::cancel_all,
        orders::own_trades,
        market::book,
        market::trades,
        market::ticker,
    ),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError))
)]
pub struct ApiDoc;

/// The document, with the assets this deployment trades as the only ones an instrument may use.
async fn openapi(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    let mut document = ApiDoc::openapi();
    let assets = || state.assets.iter().map(|asset| asset.code.clone());
    for field in ["base_asset", "quote_asset"] {
        let restricted = service_kit::http::api_document::restrict_to(
            &mut document,
            "CreateInstrument",
            field,
            assets(),
        );
        if !restricted {
            tracing::warn!("the API document lost a field it restricts: CreateInstrument.{field}");
        }
    }
    axum::Json(document)
}
