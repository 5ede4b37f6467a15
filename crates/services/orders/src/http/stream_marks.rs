//! Marks on the orders stream, written for a consumer that must know when it has read
//! everything orders committed so far (service tokens with `orders:stream-marks` only): risk,
//! after a restart, decides on funds only once its orders consumer reaches its mark (ADR 0023).

use access::ServicePrincipal;
use access::service::ORDERS_STREAM_MARKS;
use axum::extract::State;
use axum::http::StatusCode;
use contracts::events::StreamMarked;
use contracts::funds::StreamMark;
use service_kit::http::Json;

use super::AppState;
use crate::error::Result;
use crate::instruments::{PRODUCER, STREAM};

/// Appends `StreamMarked` to the outbox on its own: it commits after everything committed
/// before it, so the relay publishes it after them.
#[tracing::instrument(skip_all, fields(mark_id = %mark.mark_id))]
pub async fn write(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(mark): Json<StreamMark>,
) -> Result<StatusCode> {
    caller.require(ORDERS_STREAM_MARKS)?;
    let event = events::Envelope::of(
        PRODUCER,
        mark.mark_id.to_string(),
        0,
        &StreamMarked {
            mark_id: mark.mark_id,
            requested_by: caller.claims.client().to_owned(),
        },
    )?;
    let mut conn = state.pool.acquire().await?;
    events::outbox::append(&mut conn, STREAM, &event).await?;
    tracing::info!(requested_by = caller.claims.client(), "stream mark written");
    Ok(StatusCode::CREATED)
}
