//! Orders: thin handlers around idempotency, validation and the matching tasks.

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::idempotency::{self, Begin};
use crate::instruments::{PRODUCER, STREAM};
use crate::order_entry::{self, PlaceOrder};
use crate::store;
use crate::view::OrderView;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn json_response(status: u16, body: String, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        service_kit::http::problem::CONTENT_TYPE
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Place an order (trader). Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = String, Header, description = "1-255 characters; retries with the same key and body replay the first answer")),
    security(("bearer" = [])),
    responses((status = 201, body = OrderView), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn place(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    principal.require_any(&[Role::Trader])?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Problem::bad_request(
                "idempotency_key_missing",
                "POST /v1/orders needs an Idempotency-Key header",
            )
        })?;
    if !(1..=255).contains(&key.len()) {
        return Err(Problem::bad_request(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1-255 characters",
        )
        .into());
    }
    let request: PlaceOrder = serde_json::from_value(body.clone())
        .map_err(|e| Problem::unprocessable("invalid_body", e.to_string()))?;

    let claim = match idempotency::begin(
        &state.pool,
        principal.user_id,
        key,
        &idempotency::request_hash(&body),
    )
    .await?
    {
        Begin::Proceed(claim) => claim,
        Begin::Replay { status, body } => return Ok(json_response(status, body, true)),
        Begin::InFlight => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "a request with this key is still being processed",
            )
            .into());
        }
        Begin::Mismatch => {
            return Err(Problem::unprocessable(
                "idempotency_key_reused",
                "this key was used with a different request",
            )
            .into());
        }
    };

    let instrument = match store::instrument(&state.pool, &request.symbol).await {
        Ok(instrument) => instrument,
        Err(err) => {
            idempotency::abandon(&state.pool, &claim).await;
            return Err(err);
        }
    };
    match order_entry::validate(&request, principal.user_id, instrument.as_ref()) {
        Ok(order) => {
            let Some(instrument) = instrument else {
                return Err(Error::Internal(
                    "validated without an instrument".to_owned(),
                ));
            };
            match state.engines.place(&instrument, order, claim.clone()).await {
                Ok(answer) => Ok(json_response(answer.status, answer.body, false)),
                Err(err) => {
                    idempotency::abandon(&state.pool, &claim).await;
                    Err(err)
                }
            }
        }
        Err(rejection) => {
            // A refused order is an answer too: stored for replay, announced as an event.
            let problem = Problem::unprocessable(rejection.code, rejection.detail.clone());
            let mut details = problem.details().clone();
            details.request_id = service_kit::http::observe::current_request_id();
            let body =
                serde_json::to_string(&details).map_err(|e| Error::Internal(e.to_string()))?;
            let mut tx = state.pool.begin().await?;
            let event = events::Envelope::new(
                PRODUCER,
                "OrderRejected",
                1,
                principal.user_id.to_string(),
                0,
                serde_json::json!({ "account_id": principal.user_id, "symbol": request.symbol, "reason": rejection.code }),
            );
            events::outbox::append(&mut tx, STREAM, &event).await?;
            idempotency::complete(&mut tx, &claim, 422, &body).await?;
            tx.commit().await?;
            Ok(json_response(422, body, false))
        }
    }
}

/// One of your orders, with its fills.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Body<OrderView>> {
    let mut conn = state.pool.acquire().await?;
    let (order, fills) = store::own_order(&mut conn, id, principal.user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let instrument = store::instrument(&state.pool, &order.symbol)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Body(OrderView::new(&order, &fills, &instrument)))
}

/// Cancel one of your resting orders.
#[utoipa::path(delete, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Body<OrderView>> {
    let mut conn = state.pool.acquire().await?;
    let (order, _) = store::own_order(&mut conn, id, principal.user_id)
        .await?
        .ok_or(Error::NotFound)?;
    drop(conn);
    if !matches!(order.status.as_str(), "open" | "partially_filled") {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "order_not_open",
            format!("the order is {}", order.status),
        )
        .into());
    }
    let instrument = store::instrument(&state.pool, &order.symbol)
        .await?
        .ok_or(Error::NotFound)?;
    state
        .engines
        .cancel(&instrument, id, principal.user_id)
        .await?
        // Filled between our read and the book's turn.
        .map(Body)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "order_not_open",
                "the order is no longer open",
            )
            .into()
        })
}
