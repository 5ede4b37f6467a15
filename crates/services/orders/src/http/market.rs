//! Public market data (TRD-09, REST part): book depth, recent trades, ticker.

use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use serde::{Deserialize, Serialize};
use service_kit::http::{Path, Problem, Query};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::book_feed::levels;
use crate::error::{Error, Result};
use crate::instruments::Instrument;
use crate::store;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BookQuery {
    /// Levels per side, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub depth: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TradesQuery {
    /// Only the trades that came after this one (a trade's `id`, from this list or the
    /// `trades:{symbol}` stream), oldest first: how a client that lost its stream catches up
    /// (docs/stream.md, "Reconnecting"). Without it, the most recent trades, newest first.
    pub after: Option<Uuid>,
    /// Trades per answer, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct BookView {
    pub symbol: String,
    /// The book's sequence at the time of the snapshot.
    pub sequence: u64,
    /// `[price, quantity]`, best first.
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
}

#[derive(Serialize, ToSchema)]
pub struct PublicTrade {
    pub id: Uuid,
    pub price: String,
    pub quantity: String,
    pub taker_side: contracts::Side,
    #[serde(with = "time::serde::rfc3339")]
    pub executed_at: time::OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub struct Ticker {
    pub last: Option<String>,
    pub best_bid: Option<String>,
    pub best_ask: Option<String>,
    /// Base quantity traded in the minutes that began in the last 24 hours.
    pub volume_24h: String,
}

async fn instrument(state: &AppState, symbol: &str) -> Result<Instrument> {
    state.catalog.get(symbol).await?.ok_or(Error::NotFound)
}

/// Order book depth, aggregated per price level.
#[utoipa::path(get, path = "/v1/markets/{symbol}/book", tag = "market", params(("symbol" = String, Path), BookQuery),
    responses((status = 200, body = BookView), (status = 404, body = Problem)))]
pub async fn book(
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Query(query): Query<BookQuery>,
) -> Result<Body<BookView>> {
    let depth = query.depth.unwrap_or(20);
    if !(1..=100).contains(&depth) {
        return Err(
            Problem::unprocessable("invalid_query", "depth must be between 1 and 100").into(),
        );
    }
    let instrument = instrument(&state, &symbol).await?;
    let snapshot = state.engines.depth(&instrument, depth).await?;
    Ok(Body(BookView {
        symbol: instrument.symbol.clone(),
        sequence: snapshot.sequence,
        bids: levels(&instrument, &snapshot.bids),
        asks: levels(&instrument, &snapshot.asks),
    }))
}

/// The most recent trades, newest first; or, `after` a trade, the trades since, oldest first.
#[utoipa::path(get, path = "/v1/markets/{symbol}/trades", tag = "market", params(("symbol" = String, Path), TradesQuery),
    responses((status = 200, body = [PublicTrade]), (status = 404, body = Problem, description = "No such symbol (`not_found`), or `after` is not one of its trades (`unknown_trade`)"), (status = 422, body = Problem)))]
pub async fn trades(
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Query(query): Query<TradesQuery>,
) -> Result<Body<Vec<PublicTrade>>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(
            Problem::unprocessable("invalid_query", "limit must be between 1 and 500").into(),
        );
    }
    let instrument = instrument(&state, &symbol).await?;
    let trades = match query.after {
        None => store::recent_trades(&state.pool, &instrument.symbol, limit).await?,
        Some(after) => {
            let Some(sequence) =
                store::trade_sequence(&state.pool, &instrument.symbol, after).await?
            else {
                return Err(Error::UnknownTrade {
                    trade: after,
                    symbol: instrument.symbol,
                });
            };
            store::trades_after(&state.pool, &instrument.symbol, sequence, limit).await?
        }
    };
    Ok(Body(
        trades
            .into_iter()
            .map(|t| PublicTrade {
                id: t.id,
                price: format_units(t.price, instrument.quote.scale),
                quantity: format_units(t.quantity, instrument.base.scale),
                taker_side: t.taker_side,
                executed_at: t.executed_at,
            })
            .collect(),
    ))
}

/// Last price, best bid and ask, 24-hour volume.
#[utoipa::path(get, path = "/v1/markets/{symbol}/ticker", tag = "market", params(("symbol" = String, Path)),
    responses((status = 200, body = Ticker), (status = 404, body = Problem)))]
pub async fn ticker(
    State(state): State<AppState>,
    Path(symbol): Path<String>,
) -> Result<Body<Ticker>> {
    let instrument = instrument(&state, &symbol).await?;
    let (last, volume) = store::ticker(&state.pool, &symbol).await?;
    let top = state.engines.depth(&instrument, 1).await?;
    let best = |levels: &[matching::Level]| {
        levels
            .first()
            .map(|l| format_units(l.price * instrument.tick_size, instrument.quote.scale))
    };
    Ok(Body(Ticker {
        last: last.map(|p| format_units(p, instrument.quote.scale)),
        best_bid: best(&top.bids),
        best_ask: best(&top.asks),
        volume_24h: format_units(volume, instrument.base.scale),
    }))
}
