//! Orders: thin handlers around idempotency, validation and the matching tasks.

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize as _;
use service_kit::http::{Json, Path, Problem};
use uuid::Uuid;

use super::AppState;
use contracts::events::OrderRejected;

use crate::engine::CheckDeadline;
use crate::error::{Error, Result};
use crate::instruments::{PRODUCER, STREAM};
use crate::order_entry::{self, OrderStatus, OrderType, PlaceOrder};
use crate::store;
use crate::view::OrderView;
use service_kit::idempotency::{self, Answer};

/// Place an order (trader). Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters; retries with the same key and body replay the first answer")),
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
    let key = idempotency::required_key(&headers, "POST /v1/orders")?;
    // Read in place; the body is kept whole for the idempotency key's hash.
    let request = PlaceOrder::deserialize(&body)
        .map_err(|e| Problem::unprocessable("invalid_body", e.to_string()))?;

    // The key is claimed only with its answer, in the matching batch (ADR 0023): here it is
    // read, and a duplicate this process is already placing is turned away before it holds
    // funds.
    let Some(in_flight) = state.placing.enter(principal.user_id, key) else {
        return Ok(idempotency::in_flight());
    };
    let begun = state
        .look_ups
        .look_up(principal.user_id, key, &idempotency::request_hash(&body))
        .await?;
    let claim = match begun.claim() {
        Ok(claim) => claim,
        Err(response) => return Ok(*response),
    };

    // From here risk may reserve the order's funds. Whatever becomes of this request — its
    // client gone, its timeout — the work runs to its end in a task of its own: into the book,
    // or refused with its reservation given back.
    let tasks = state.tasks.clone();
    let placing = tasks.complete(async move {
        let placed = place_claimed(state, request, principal.user_id, claim).await;
        drop(in_flight);
        placed
    });
    placing
        .await
        .map_err(|_| Error::Internal("the order placement panicked".to_owned()))?
}

/// Places an order whose idempotency key is claimed: validation, the risk check (which
/// reserves the order's funds), then the book.
async fn place_claimed(
    state: AppState,
    request: PlaceOrder,
    account: Uuid,
    claim: idempotency::Claim,
) -> Result<Response> {
    let instrument = state.catalog.get(&request.symbol).await?;
    let mut order = match order_entry::validate(&request, account, instrument.as_ref()) {
        Ok(order) => order,
        Err(rejection) => return refuse(&state, &claim, &request, rejection, None).await,
    };
    let Some(instrument) = instrument else {
        return Err(Error::Internal(
            "validated without an instrument".to_owned(),
        ));
    };
    // Checks first: a market order is priced against the reference, then risk checks the
    // order and reserves its worst cost. No answer → 503; a refusal → 422, stored like any
    // other.
    // The check is good for booking the order for a bounded time from here (ADR 0023).
    let check_deadline = CheckDeadline::after(state.check_valid_for);
    let funded = async {
        if order.order_type == OrderType::Market {
            let reference = state
                .engines
                .reference_price(&instrument, order.side)
                .await?;
            let protected = order_entry::protect(
                &mut order,
                reference,
                state.market_protection_bps,
                &instrument,
            );
            if let Err(rejection) = protected {
                return Ok(Err(rejection));
            }
        }
        let mid = state.engines.mid(&instrument).await?;
        state.funds.check(&order, &instrument, mid).await
    }
    .await;
    let risk_start = match funded {
        Ok(Ok(start)) => start,
        Ok(Err(rejection)) => {
            return refuse(&state, &claim, &request, rejection, Some(order.id)).await;
        }
        Err(err) => {
            // No answer from risk. It may have reserved all the same (its answer lost to a
            // timeout); the order surely never reached the book, so the reservation goes back.
            release_unplaced(&state, order.id, account, &request.symbol).await;
            return Err(err);
        }
    };
    let order_id = order.id;
    match state
        .engines
        .place(
            &instrument,
            order,
            claim.clone(),
            check_deadline,
            risk_start,
        )
        .await
    {
        Ok(answer) => Ok(answer.into_response(false)),
        Err(Error::IdempotencyKeyTaken) => {
            // Another request with the key was answered first (through another replica):
            // this order's batch rolled back, so its reservation goes back and the key's
            // answer is given instead.
            release_unplaced(&state, order_id, account, &request.symbol).await;
            answer_taken_key(&state, &claim).await
        }
        Err(err) => {
            // Whether the order was stored is not always known here (a commit whose outcome
            // was lost, a matching task that stopped holding it): its claim decides.
            let unplaced = Unplaced {
                order: order_id,
                account,
                symbol: request.symbol,
                claim,
            };
            if let Err(unsettled) = unplaced.settle(&state).await {
                tracing::warn!(order = %order_id, error = %unsettled,
                    "cannot settle a failed placement yet; retrying in the background");
                state.tasks.spawn_tracked(
                    format!("settle order {order_id}"),
                    unplaced.settle_eventually(state.clone()),
                );
            }
            Err(err)
        }
    }
}

/// An order whose placement failed after risk reserved its funds.
struct Unplaced {
    order: Uuid,
    account: Uuid,
    symbol: String,
    claim: idempotency::Claim,
}

impl Unplaced {
    /// Fences the order's claim off: once fenced no batch can commit the order any more, so
    /// its reservation goes back; if a batch answered it first, the order stands with it.
    async fn settle(&self, state: &AppState) -> std::result::Result<(), sqlx::Error> {
        match idempotency::fence(&state.pool, &self.claim).await? {
            idempotency::Withdrawal::Withdrawn => {
                release_unplaced(state, self.order, self.account, &self.symbol).await;
            }
            idempotency::Withdrawal::Answered => {
                tracing::info!(order = %self.order, "a placement that failed to answer was stored after all");
            }
        }
        Ok(())
    }

    /// [`Self::settle`] retried while the database is away. Giving up at shutdown leaves the
    /// reservation to lapse in risk (its sweeper ends what never reached the book).
    async fn settle_eventually(self, state: AppState) {
        let backoff = service_kit::backoff::Backoff {
            base: std::time::Duration::from_millis(100),
            cap: std::time::Duration::from_secs(5),
        };
        let shutdown = state.tasks.shutdown().clone();
        for retry in 0.. {
            tokio::select! {
                () = shutdown.triggered() => {
                    tracing::warn!(order = %self.order, "shutting down with a failed placement unsettled; its reservation is left to lapse");
                    return;
                }
                () = tokio::time::sleep(backoff.delay(retry)) => {}
            }
            if self.settle(&state).await.is_ok() {
                return;
            }
        }
    }
}

/// Gives back what risk reserved for an order that surely never reached the book, through the
/// outbox: `OrderRejected` (reason `not_placed`) makes risk release it once, whenever it reads
/// it — a direct call would be lost exactly when risk is slow or away, which is when orders
/// fail here. Without the database either, the reservation lapses in risk: it ends what was
/// never seen on the orders stream (ADR 0023).
async fn release_unplaced(state: &AppState, order: Uuid, account: Uuid, symbol: &str) {
    let announced = async {
        let event = events::Envelope::of(
            PRODUCER,
            account.to_string(),
            0,
            &OrderRejected {
                order_id: Some(order),
                account_id: account,
                symbol: symbol.to_owned(),
                reason: "not_placed".to_owned(),
            },
        )?;
        let mut tx = state.pool.begin().await?;
        events::outbox::append(&mut tx, STREAM, &event).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = announced {
        tracing::warn!(%order, error = %err, "could not announce an unplaced order; its reservation will lapse in risk");
    }
}

/// A refused order is an answer too: stored for replay, announced as `OrderRejected`.
async fn refuse(
    state: &AppState,
    claim: &idempotency::Claim,
    request: &PlaceOrder,
    rejection: order_entry::Rejection,
    order_id: Option<Uuid>,
) -> Result<Response> {
    let body = crate::group_commit::problem_body(Problem::unprocessable(
        rejection.code,
        rejection.detail.clone(),
    ))?;
    let mut tx = state.pool.begin().await?;
    let event = events::Envelope::of(
        PRODUCER,
        claim.principal.to_string(),
        0,
        &OrderRejected {
            order_id,
            account_id: claim.principal,
            symbol: request.symbol.clone(),
            reason: rejection.code.to_string(),
        },
    )?;
    events::outbox::append(&mut tx, STREAM, &event).await?;
    let answer = Answer { status: 422, body };
    let answers = [(claim.clone(), answer.clone())];
    match idempotency::record_all(&mut tx, &answers).await? {
        idempotency::Recorded::All => {
            tx.commit().await?;
            Ok(answer.into_response(false))
        }
        idempotency::Recorded::KeyTaken => {
            tx.rollback().await?;
            answer_taken_key(state, claim).await
        }
    }
}

/// What a request whose key turned out taken is answered: the stored answer replayed, 422 if
/// it was for another body, 409 while the other request is still at work.
async fn answer_taken_key(state: &AppState, claim: &idempotency::Claim) -> Result<Response> {
    let begun = idempotency::look_up(
        &state.pool,
        claim.principal,
        &claim.key,
        &claim.request_hash,
    )
    .await?;
    Ok(match begun.claim() {
        Err(response) => *response,
        // Fenced off or expired meanwhile: nothing stands for the key, and nothing of this
        // request was stored — the client retries.
        Ok(_) => idempotency::in_flight(),
    })
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
    let instrument = state
        .catalog
        .get(&order.symbol)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Body(OrderView::new(
        &order,
        &fills,
        &instrument,
        state.fees,
    )))
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
    if !order.status.is_open() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "order_not_open",
            format!("the order is {}", order.status.as_str()),
        )
        .into());
    }
    let instrument = state
        .catalog
        .get(&order.symbol)
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub symbol: Option<String>,
    #[param(pattern = "^(open|partially_filled|filled|cancelled|rejected)$")]
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<Uuid>,
}

fn page_size(limit: Option<i64>) -> Result<i64> {
    match limit.unwrap_or(50) {
        limit @ 1..=100 => Ok(limit),
        // Well-formed but out of range: refused, never clamped.
        _ => Err(Problem::unprocessable("invalid_query", "limit must be between 1 and 100").into()),
    }
}

/// Your orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    service_kit::http::Query(query): service_kit::http::Query<ListQuery>,
) -> Result<Body<OrderPage>> {
    let limit = page_size(query.limit)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            OrderStatus::parse(text)
                .ok_or_else(|| Problem::bad_request("invalid_query", "unknown status"))?,
        ),
    };
    let rows = store::list_orders(
        &state.pool,
        principal.user_id,
        query.symbol.as_deref(),
        status,
        query.cursor,
        limit + 1,
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    let rows: Vec<_> = rows.into_iter().take(limit as usize).collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let fills = store::fills_of(&state.pool, &ids).await?;
    // From the catalog's memory (ADR 0025), not a read of every instrument per request.
    let instruments = state.catalog.listed().await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let instrument = instruments
            .iter()
            .find(|i| i.symbol == row.symbol)
            .ok_or(Error::NotFound)?;
        let own: Vec<_> = fills
            .iter()
            .filter(|(id, _)| *id == row.id)
            .map(|(_, f)| f.clone())
            .collect();
        items.push(OrderView::new(row, &own, instrument, state.fees));
    }
    Ok(Body(OrderPage {
        next_cursor: if has_more {
            rows.last().map(|r| r.id)
        } else {
            None
        },
        items,
    }))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CancelAllQuery {
    pub symbol: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub cancelled: u64,
}

/// Cancel all your resting orders (in one symbol, or everywhere).
#[utoipa::path(delete, path = "/v1/orders", tag = "orders", params(CancelAllQuery), security(("bearer" = [])),
    responses((status = 200, body = Cancelled)))]
pub async fn cancel_all(
    State(state): State<AppState>,
    principal: Principal,
    service_kit::http::Query(query): service_kit::http::Query<CancelAllQuery>,
) -> Result<Body<Cancelled>> {
    let mut cancelled = 0;
    for symbol in
        store::symbols_with_resting_orders(&state.pool, principal.user_id, query.symbol.as_deref())
            .await?
    {
        if let Some(instrument) = state.catalog.get(&symbol).await? {
            cancelled += state
                .engines
                .cancel_account(&instrument, principal.user_id)
                .await?;
        }
    }
    Ok(Body(Cancelled { cancelled }))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TradesQuery {
    pub symbol: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OwnTrade {
    pub id: Uuid,
    pub order_id: Uuid,
    pub symbol: String,
    pub side: contracts::Side,
    pub price: String,
    pub quantity: String,
    /// `maker` or `taker`.
    pub liquidity: String,
    /// What settlement books for this fill (the same figure as the fill inside its order).
    pub fee: String,
    pub fee_asset: String,
    #[serde(with = "time::serde::rfc3339")]
    pub executed_at: time::OffsetDateTime,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TradePage {
    pub items: Vec<OwnTrade>,
    pub next_cursor: Option<Uuid>,
}

/// Your fills, newest first.
#[utoipa::path(get, path = "/v1/trades", tag = "orders", params(TradesQuery), security(("bearer" = [])),
    responses((status = 200, body = TradePage)))]
pub async fn own_trades(
    State(state): State<AppState>,
    principal: Principal,
    service_kit::http::Query(query): service_kit::http::Query<TradesQuery>,
) -> Result<Body<TradePage>> {
    let limit = page_size(query.limit)?;
    let rows = store::own_trades(
        &state.pool,
        principal.user_id,
        query.symbol.as_deref(),
        query.cursor,
        limit + 1,
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    let instruments = state.catalog.listed().await?;
    let mut items = Vec::new();
    for trade in rows.iter().take(limit as usize) {
        let instrument = instruments
            .iter()
            .find(|i| i.symbol == trade.symbol)
            .ok_or(Error::NotFound)?;
        let maker = trade.maker_account == principal.user_id;
        // A maker traded on the side opposite the taker's.
        let side = if maker {
            trade.taker_side.opposite()
        } else {
            trade.taker_side
        };
        items.push(OwnTrade {
            id: trade.id,
            order_id: if maker {
                trade.maker_order_id
            } else {
                trade.taker_order_id
            },
            symbol: trade.symbol.clone(),
            side,
            price: contracts::format_units(trade.price, instrument.quote.scale),
            quantity: contracts::format_units(trade.quantity, instrument.base.scale),
            liquidity: if maker { "maker" } else { "taker" }.to_owned(),
            fee: contracts::format_units(
                crate::view::fee_of(trade.price, trade.quantity, maker, instrument, state.fees),
                instrument.quote.scale,
            ),
            fee_asset: instrument.quote.code.clone(),
            executed_at: trade.executed_at,
        });
    }
    Ok(Body(TradePage {
        next_cursor: if has_more {
            rows.get(limit as usize - 1).map(|t| t.id)
        } else {
            None
        },
        items,
    }))
}
