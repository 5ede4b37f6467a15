//! Admin deposits and withdrawals: thin handlers around idempotency and the ledger.

use access::{Principal, Role};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize as _;
use service_kit::http::{Json, Problem};
use service_kit::idempotency;

use super::AppState;
use crate::error::Result;
use crate::funding::{self, FundingRequest, FundingView};
use crate::ledger::Kind;

/// Credit a trader's account from outside the platform (admin). Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/deposits", tag = "admin", request_body = FundingRequest,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters; retries with the same key and body replay the first answer")),
    security(("bearer" = [])),
    responses((status = 201, body = FundingView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn deposit(
    state: State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Json<serde_json::Value>,
) -> Result<Response> {
    fund(state, principal, headers, body, Kind::Deposit).await
}

/// Pay out of a trader's available balance (admin). Requires `Idempotency-Key`; more than is
/// free of what open orders have reserved (risk's pre-trade stage decides first), or more
/// than is available → 422 `insufficient_funds`; risk unreachable → 503.
#[utoipa::path(post, path = "/v1/admin/withdrawals", tag = "admin", request_body = FundingRequest,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters; retries with the same key and body replay the first answer")),
    security(("bearer" = [])),
    responses((status = 201, body = FundingView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn withdraw(
    state: State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Json<serde_json::Value>,
) -> Result<Response> {
    fund(state, principal, headers, body, Kind::Withdrawal).await
}

async fn fund(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
    kind: Kind,
) -> Result<Response> {
    principal.require_any(&[Role::Admin])?;
    let route = match kind {
        Kind::Withdrawal => "POST /v1/admin/withdrawals",
        _ => "POST /v1/admin/deposits",
    };
    let key = idempotency::required_key(&headers, route)?;
    // Read in place; the body is kept whole for the idempotency key's hash.
    let request = FundingRequest::deserialize(&body)
        .map_err(|e| Problem::unprocessable("invalid_body", e.to_string()))?;
    let valid = funding::validate(&request, &state.assets)?;
    let begun = idempotency::begin(
        &state.pool,
        principal.user_id,
        key,
        &idempotency::request_hash(&body),
    )
    .await?;
    let claim = match begun.claim() {
        Ok(claim) => claim,
        Err(response) => return Ok(*response),
    };
    let posted = funding::post(
        &state.pool,
        Some(&state.pre_trade),
        kind,
        &valid,
        principal.user_id,
        &claim,
    )
    .await;
    match posted {
        Ok(answer) => Ok(answer.into_response(false)),
        Err(err) => {
            idempotency::abandon(&state.pool, &claim).await;
            Err(err)
        }
    }
}
