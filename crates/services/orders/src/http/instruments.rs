//! Assets and instruments: thin handlers.

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use service_kit::http::{Json, Path, Problem};
use utoipa::ToSchema;

use super::AppState;
use crate::error::Result;
use crate::instruments::{self, InstrumentView, NewInstrument, Status};

#[derive(Serialize, ToSchema)]
pub struct AssetView {
    pub code: String,
    pub scale: u32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstrument {
    /// `BASE-QUOTE`, e.g. `BTC-USD`: the two assets below, in that order.
    #[schema(pattern = "^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")]
    pub symbol: String,
    /// One of the configured assets (the document lists them).
    pub base_asset: String,
    /// One of the configured assets, not the base asset.
    pub quote_asset: String,
    /// Price increment, in the quote asset (e.g. "0.01"), no finer than its scale.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub tick_size: String,
    /// Quantity increment, in the base asset (e.g. "0.0001"), no finer than its scale.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub lot_size: String,
    /// A multiple of the lot size; at most `max_quantity`.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub min_quantity: Option<String>,
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub max_quantity: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeStatus {
    pub status: Status,
}

/// The assets accounts can hold.
#[utoipa::path(get, path = "/v1/assets", tag = "market", responses((status = 200, body = [AssetView])))]
pub async fn assets(State(state): State<AppState>) -> Body<Vec<AssetView>> {
    Body(
        state
            .assets
            .iter()
            .map(|a| AssetView {
                code: a.code.clone(),
                scale: a.scale,
            })
            .collect(),
    )
}

/// Every instrument and whether it trades.
#[utoipa::path(get, path = "/v1/instruments", tag = "market", responses((status = 200, body = [InstrumentView])))]
pub async fn list(State(state): State<AppState>) -> Result<Body<Vec<InstrumentView>>> {
    let instruments = state.catalog.listed().await?;
    Ok(Body(instruments.iter().map(InstrumentView::from).collect()))
}

/// Create an instrument (admin).
#[utoipa::path(post, path = "/v1/admin/instruments", tag = "admin", request_body = CreateInstrument,
    security(("bearer" = [])),
    responses((status = 201, body = InstrumentView), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateInstrument>,
) -> Result<(StatusCode, Body<InstrumentView>)> {
    principal.require_any(&[Role::Admin])?;
    let instrument = NewInstrument {
        symbol: &body.symbol,
        base_asset: &body.base_asset,
        quote_asset: &body.quote_asset,
        tick_size: &body.tick_size,
        lot_size: &body.lot_size,
        min_quantity: body.min_quantity.as_deref(),
        max_quantity: body.max_quantity.as_deref(),
    }
    .validate(&state.assets)?;
    instruments::create(&state.pool, &instrument).await?;
    // Listed here from now on; the other replicas when the creation's notice reaches them.
    state.catalog.forget(&body.symbol);
    Ok((StatusCode::CREATED, Body(InstrumentView::from(&instrument))))
}

/// Halt or reopen trading (admin).
#[utoipa::path(patch, path = "/v1/admin/instruments/{symbol}", tag = "admin", request_body = ChangeStatus,
    params(("symbol" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = InstrumentView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn set_status(
    State(state): State<AppState>,
    principal: Principal,
    Path(symbol): Path<String>,
    Json(body): Json<ChangeStatus>,
) -> Result<Body<InstrumentView>> {
    principal.require_any(&[Role::Admin])?;
    let instrument = instruments::set_status(&state.pool, &symbol, body.status).await?;
    // Seen here from now on; the other replicas forget it when the change's notice reaches
    // them (ADR 0025).
    state.catalog.forget(&symbol);
    Ok(Body(InstrumentView::from(&instrument)))
}
