//! Marks on the orders stream, written for a consumer that must know when it has read
//! everything orders committed so far (service tokens with `orders:stream-marks` only): risk,
//! after a restart, decides on funds only once its orders consumer reaches its mark (ADR 0023).
//! Risk asks first for its mark behind a fence that shuts its earlier starts' checks out of
//! every book ([`fence`]), so that it need not wait out the bound on checks.

use access::ServicePrincipal;
use access::service::ORDERS_STREAM_MARKS;
use axum::extract::State;
use axum::http::StatusCode;
use contracts::events::StreamMarked;
use contracts::funds::{RiskFence, StreamMark};
use service_kit::http::{Json, Problem};

use super::AppState;
use crate::error::Result;
use crate::instruments::{PRODUCER, STREAM};
use crate::store;

/// Appends `StreamMarked` to the outbox on its own: it commits after everything committed
/// before it, so the relay publishes it after them.
#[tracing::instrument(skip_all, fields(mark_id = %mark.mark_id))]
pub async fn write(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(mark): Json<StreamMark>,
) -> Result<StatusCode> {
    caller.require(ORDERS_STREAM_MARKS)?;
    let event = marked(mark.mark_id, &caller)?;
    let mut conn = state.pool.acquire().await?;
    events::outbox::append(&mut conn, STREAM, &event).await?;
    tracing::info!(requested_by = caller.claims.client(), "stream mark written");
    Ok(StatusCode::CREATED)
}

/// Raises the fence against checks of risk's starts before `start` on every symbol, then
/// appends `StreamMarked`, in one transaction (ADR 0023, "A fence instead of the wait"). The
/// fence waits for the batches in flight, which commit first; every later batch carrying an
/// earlier start's check commits nothing. `409 fence_unsupported`, with nothing written, while
/// a replica whose batches do not check the fence may still commit one.
#[tracing::instrument(skip_all, fields(mark_id = %fence.mark_id, start = fence.start.0))]
pub async fn fence(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(fence): Json<RiskFence>,
) -> Result<StatusCode> {
    caller.require(ORDERS_STREAM_MARKS)?;
    if fence.start.0 < 1 {
        return Err(Problem::unprocessable("invalid_start", "a start is numbered from 1").into());
    }
    let event = marked(fence.mark_id, &caller)?;
    let mut tx = state.pool.begin().await?;
    if store::raise_risk_fence(&mut tx, fence.start).await? == store::RiskFence::Unsupported {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "fence_unsupported",
            "an orders replica of an earlier release may still book orders: wait out the bound on checks instead",
        )
        .into());
    }
    events::outbox::append(&mut tx, STREAM, &event).await?;
    tx.commit().await?;
    tracing::info!(
        requested_by = caller.claims.client(),
        "risk fence raised and stream mark written"
    );
    Ok(StatusCode::CREATED)
}

/// `StreamMarked` for `mark_id`, as asked for by `caller`.
fn marked(mark_id: uuid::Uuid, caller: &ServicePrincipal) -> Result<events::Envelope> {
    Ok(events::Envelope::of(
        PRODUCER,
        mark_id.to_string(),
        0,
        &StreamMarked {
            mark_id,
            requested_by: caller.claims.client().to_owned(),
        },
    )?)
}
