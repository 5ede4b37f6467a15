//! Commands forwarded by another orders replica to the one that keeps the symbol's book
//! (TRD-08; service tokens with `orders:matching` only).

use access::ServicePrincipal;
use access::service::ORDERS_MATCHING;
use axum::Json as Body;
use axum::extract::State;
use service_kit::http::{Json, Path, Problem};

use super::AppState;
use crate::engine::{Command, Outcome};
use crate::error::{Error, Result};
use crate::forwarding::Forwarded;

/// Runs the command on this replica's book of `symbol`; `409 not_owner` when it is not here.
pub async fn run(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Path(symbol): Path<String>,
    Json(Forwarded { owner, command }): Json<Forwarded>,
) -> Result<Body<Outcome>> {
    caller.require(ORDERS_MATCHING)?;
    let instrument = state.catalog.get(&symbol).await?.ok_or(Error::NotFound)?;
    if let Command::Place { order, .. } = &command
        && order.symbol != instrument.symbol
    {
        return Err(Problem::unprocessable(
            "symbol_mismatch",
            "the order is for another instrument than the path names",
        )
        .into());
    }
    Ok(Body(
        state.engines.ask_owner(&instrument, owner, command).await?,
    ))
}
