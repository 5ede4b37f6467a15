//! Every SQL statement of the orders service (schema `orders`).

use contracts::Asset;
use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Result};
use crate::instruments::{Instrument, Status};
use crate::order_entry::OrderStatus;

#[derive(sqlx::FromRow)]
struct InstrumentRow {
    symbol: String,
    base_asset: String,
    quote_asset: String,
    base_scale: i32,
    quote_scale: i32,
    tick_size: i64,
    lot_size: i64,
    min_quantity: i64,
    max_quantity: i64,
    status: String,
}

impl TryFrom<InstrumentRow> for Instrument {
    type Error = Error;
    fn try_from(row: InstrumentRow) -> Result<Self> {
        let scale =
            |s: i32| u32::try_from(s).map_err(|_| Error::Internal(format!("bad scale {s}")));
        Ok(Instrument {
            base: Asset::new(&row.base_asset, scale(row.base_scale)?),
            quote: Asset::new(&row.quote_asset, scale(row.quote_scale)?),
            status: Status::parse(&row.status)
                .ok_or_else(|| Error::Internal(format!("bad status {}", row.status)))?,
            symbol: row.symbol,
            tick_size: row.tick_size,
            lot_size: row.lot_size,
            min_quantity: row.min_quantity,
            max_quantity: row.max_quantity,
        })
    }
}

const INSTRUMENT_COLUMNS: &str = "symbol, base_asset, quote_asset, base_scale, quote_scale, \
     tick_size, lot_size, min_quantity, max_quantity, status";

/// Inserts an instrument; a taken symbol is [`Error::InstrumentExists`] (by constraint name).
pub async fn insert_instrument(conn: &mut PgConnection, i: &Instrument) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO instruments (symbol, base_asset, quote_asset, base_scale, quote_scale,
                                  tick_size, lot_size, min_quantity, max_quantity, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&i.symbol)
    .bind(&i.base.code)
    .bind(&i.quote.code)
    .bind(i32::try_from(i.base.scale).unwrap_or(i32::MAX))
    .bind(i32::try_from(i.quote.scale).unwrap_or(i32::MAX))
    .bind(i.tick_size)
    .bind(i.lot_size)
    .bind(i.min_quantity)
    .bind(i.max_quantity)
    .bind(i.status.as_str())
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("instruments_pkey") => {
            Err(Error::InstrumentExists)
        }
        Err(err) => Err(err.into()),
    }
}

pub async fn instruments(pool: &PgPool) -> Result<Vec<Instrument>> {
    let rows: Vec<InstrumentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INSTRUMENT_COLUMNS} FROM instruments ORDER BY symbol"
    )))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Instrument::try_from).collect()
}

pub async fn set_instrument_status(
    conn: &mut PgConnection,
    symbol: &str,
    status: Status,
) -> Result<Option<Instrument>> {
    let row: Option<InstrumentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE instruments SET status = $2, updated_at = now() WHERE symbol = $1
         RETURNING {INSTRUMENT_COLUMNS}"
    )))
    .bind(symbol)
    .bind(status.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(Instrument::try_from).transpose()
}

/// One order as stored, with the average fill price computed by the database (the notional
/// exceeds 64 bits, so it stays `numeric` there), rounded half up in exact integer arithmetic.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderRow {
    pub id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: contracts::Side,
    pub order_type: String,
    pub price: Option<i64>,
    pub quantity: i64,
    pub filled_quantity: i64,
    pub average_price: Option<i64>,
    pub status: OrderStatus,
    pub time_in_force: String,
    pub post_only: bool,
    pub book_sequence: Option<i64>,
    pub created_at: time::OffsetDateTime,
    pub updated_at: time::OffsetDateTime,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FillRow {
    pub trade_id: uuid::Uuid,
    pub price: i64,
    pub quantity: i64,
    pub liquidity: String,
}

const ORDER_COLUMNS: &str = "id, account_id, client_order_id, symbol, side, type AS order_type, \
     price, quantity, filled_quantity, \
     div(filled_notional * 2 + filled_quantity, NULLIF(filled_quantity, 0) * 2)::bigint \
     AS average_price, \
     status, time_in_force, post_only, book_sequence, created_at, updated_at";

/// What a batch did to an order stored before it: fills to add, and its new status.
pub struct OrderChange {
    pub id: uuid::Uuid,
    pub filled_quantity: i64,
    pub filled_notional: i128,
    pub status: Option<OrderStatus>,
}

/// A trade as the matching task records it.
pub struct TradeInsert {
    pub id: uuid::Uuid,
    pub price: i64,
    pub quantity: i64,
    pub maker_order_id: uuid::Uuid,
    pub taker_order_id: uuid::Uuid,
    pub maker_account: uuid::Uuid,
    pub taker_account: uuid::Uuid,
    pub taker_side: contracts::Side,
    pub sequence: i64,
}

/// The rows one matching batch of one symbol writes of its own.
pub struct MatchedRows<'a> {
    pub symbol: &'a str,
    /// The epoch the matching task holds the symbol under (ADR 0014).
    pub epoch: i64,
    /// The orders the batch created, in their final state for the batch.
    pub created: &'a [OrderRow],
    /// Σ price × quantity of each created order's fills, in `created`'s order.
    pub notionals: &'a [i128],
    /// Fills and statuses of orders stored before the batch.
    pub changed: &'a [OrderChange],
    pub trades: &'a [TradeInsert],
    /// The batch's time: the orders' `updated_at` and the trades' `executed_at`, which their
    /// `TradeExecuted` events carry too (reconciliation windows both sides by it).
    pub now: time::OffsetDateTime,
    /// The book's sequence after the batch: the last number it gave an event, stored with the
    /// symbol's owner so a rebuilt book goes on after it ([`last_sequence`]).
    pub sequence: i64,
    /// The earliest start of risk among the batch's checks; `None` for a batch that places
    /// nothing. The batch commits only while no later start has raised its fence
    /// ([`raise_risk_fence`]).
    pub risk_start: Option<contracts::checks::RiskStart>,
}

/// Writes a matching batch's own rows behind the symbol's fence, in one statement and so one
/// round trip: the matching task runs its batches one after another, and each round trip of
/// its transaction is time no order of the symbol is matched (docs/performance.md).
///
/// The fence comes first: the symbol's owner row is updated with the book's sequence only
/// under the task's epoch, and every write is conditional on that, so a task that lost the
/// symbol writes nothing ([`Error::NotOwner`]), and the row stays locked until the batch
/// commits, so no takeover can pass it in between. The same row holds risk's fence: a batch
/// with a check of a start of risk earlier than the fence writes nothing either
/// ([`Error::RiskFenced`]).
///
/// An account that reused its client order id fails the statement on the constraint — the
/// constraint, not a prior read, decides (REL-13) — which is [`Error::ClientOrderIdTaken`]; the
/// caller rolls the batch back and replays it job by job to find the order. A plain insert, not
/// `ON CONFLICT DO NOTHING`: the batch is rolled back either way, and a speculative insertion
/// costs every order a lock and a confirmation record for a conflict that almost never comes
/// (docs/performance.md, "…orders inserted without ON CONFLICT").
pub async fn write_matched(conn: &mut PgConnection, batch: &MatchedRows<'_>) -> Result<()> {
    let orders = batch.created;
    let order_ids: Vec<uuid::Uuid> = orders.iter().map(|r| r.id).collect();
    let accounts: Vec<uuid::Uuid> = orders.iter().map(|r| r.account_id).collect();
    let client_ids: Vec<Option<&str>> = orders
        .iter()
        .map(|r| r.client_order_id.as_deref())
        .collect();
    let symbols: Vec<&str> = orders.iter().map(|r| r.symbol.as_str()).collect();
    let sides: Vec<&str> = orders.iter().map(|r| r.side.as_str()).collect();
    let types: Vec<&str> = orders.iter().map(|r| r.order_type.as_str()).collect();
    let prices: Vec<Option<i64>> = orders.iter().map(|r| r.price).collect();
    let quantities: Vec<i64> = orders.iter().map(|r| r.quantity).collect();
    let filled: Vec<i64> = orders.iter().map(|r| r.filled_quantity).collect();
    // numeric has no i128 binding; its text form is exact.
    let notionals: Vec<String> = batch.notionals.iter().map(i128::to_string).collect();
    let statuses: Vec<&str> = orders.iter().map(|r| r.status.as_str()).collect();
    let tifs: Vec<&str> = orders.iter().map(|r| r.time_in_force.as_str()).collect();
    let post_only: Vec<bool> = orders.iter().map(|r| r.post_only).collect();
    let sequences: Vec<Option<i64>> = orders.iter().map(|r| r.book_sequence).collect();
    let created_at: Vec<time::OffsetDateTime> = orders.iter().map(|r| r.created_at).collect();
    let changes = batch.changed;
    let changed_ids: Vec<uuid::Uuid> = changes.iter().map(|c| c.id).collect();
    let changed_filled: Vec<i64> = changes.iter().map(|c| c.filled_quantity).collect();
    let changed_notionals: Vec<String> = changes
        .iter()
        .map(|c| c.filled_notional.to_string())
        .collect();
    let changed_statuses: Vec<Option<&str>> = changes
        .iter()
        .map(|c| c.status.map(OrderStatus::as_str))
        .collect();
    let trades = batch.trades;
    let trade_ids = |f: fn(&TradeInsert) -> uuid::Uuid| trades.iter().map(f).collect::<Vec<_>>();
    let trade_numbers = |f: fn(&TradeInsert) -> i64| trades.iter().map(f).collect::<Vec<_>>();
    let taker_sides: Vec<&str> = trades.iter().map(|t| t.taker_side.as_str()).collect();
    let owned: bool = sqlx::query_scalar(
        "WITH fence AS (
             UPDATE symbol_owners SET last_sequence = GREATEST(last_sequence, $32)
              WHERE symbol = $1 AND epoch = $2 AND ($33::int8 IS NULL OR risk_start <= $33)
             RETURNING 1
         ),
         new_orders AS (
             INSERT INTO orders (id, account_id, client_order_id, symbol, side, type, price,
                                 quantity, filled_quantity, filled_notional, status,
                                 time_in_force, post_only, book_sequence, created_at, updated_at)
             SELECT id, account_id, client_order_id, symbol, side, type, price, quantity,
                    filled_quantity, filled_notional::numeric, status, time_in_force, post_only,
                    book_sequence, created_at, created_at
               FROM UNNEST($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                           $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[],
                           $13::text[], $14::text[], $15::bool[], $16::int8[],
                           $17::timestamptz[])
                    AS o(id, account_id, client_order_id, symbol, side, type, price, quantity,
                         filled_quantity, filled_notional, status, time_in_force, post_only,
                         book_sequence, created_at)
              WHERE EXISTS (SELECT FROM fence)
         ),
         changed AS (
             UPDATE orders o
                SET filled_quantity = o.filled_quantity + c.filled_quantity,
                    filled_notional = o.filled_notional + c.filled_notional::numeric,
                    status = COALESCE(c.status, o.status),
                    updated_at = $22
               FROM UNNEST($18::uuid[], $19::int8[], $20::text[], $21::text[])
                    AS c(id, filled_quantity, filled_notional, status)
              WHERE o.id = c.id AND EXISTS (SELECT FROM fence)
         ),
         new_trades AS (
             INSERT INTO trades (id, symbol, price, quantity, maker_order_id, taker_order_id,
                                 maker_account, taker_account, taker_side, sequence, executed_at)
             SELECT id, $1, price, quantity, maker_order_id, taker_order_id,
                    maker_account, taker_account, taker_side, sequence, $22
               FROM UNNEST($23::uuid[], $24::int8[], $25::int8[], $26::uuid[], $27::uuid[],
                           $28::uuid[], $29::uuid[], $30::text[], $31::int8[])
                    AS t(id, price, quantity, maker_order_id, taker_order_id, maker_account,
                         taker_account, taker_side, sequence)
              WHERE EXISTS (SELECT FROM fence)
         )
         SELECT EXISTS (SELECT FROM fence)",
    )
    .bind(batch.symbol)
    .bind(batch.epoch)
    .bind(&order_ids)
    .bind(&accounts)
    .bind(&client_ids)
    .bind(&symbols)
    .bind(&sides)
    .bind(&types)
    .bind(&prices)
    .bind(&quantities)
    .bind(&filled)
    .bind(&notionals)
    .bind(&statuses)
    .bind(&tifs)
    .bind(&post_only)
    .bind(&sequences)
    .bind(&created_at)
    .bind(&changed_ids)
    .bind(&changed_filled)
    .bind(&changed_notionals)
    .bind(&changed_statuses)
    .bind(batch.now)
    .bind(trade_ids(|t| t.id))
    .bind(trade_numbers(|t| t.price))
    .bind(trade_numbers(|t| t.quantity))
    .bind(trade_ids(|t| t.maker_order_id))
    .bind(trade_ids(|t| t.taker_order_id))
    .bind(trade_ids(|t| t.maker_account))
    .bind(trade_ids(|t| t.taker_account))
    .bind(&taker_sides)
    .bind(trade_numbers(|t| t.sequence))
    .bind(batch.sequence)
    .bind(batch.risk_start.map(|start| start.0))
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match err {
        sqlx::Error::Database(ref db) if db.constraint() == Some("orders_client_order_id_key") => {
            Error::ClientOrderIdTaken
        }
        other => other.into(),
    })?;
    if owned {
        return Ok(());
    }
    // Which fence stopped it: read only on this rare path, so the batch's statement stays one.
    let fence: Option<i64> =
        sqlx::query_scalar("SELECT risk_start FROM symbol_owners WHERE symbol = $1 AND epoch = $2")
            .bind(batch.symbol)
            .bind(batch.epoch)
            .fetch_optional(&mut *conn)
            .await?;
    match (fence, batch.risk_start) {
        (Some(newest), Some(earliest)) if newest > earliest.0 => Err(Error::RiskFenced {
            newest: contracts::checks::RiskStart(newest),
        }),
        _ => Err(Error::NotOwner),
    }
}

/// Per symbol, the trades executed in `[from, to)`: (symbol, count, base quantity).
pub async fn trade_totals(
    pool: &PgPool,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT symbol, count(*), sum(quantity)::int8 FROM trades
          WHERE executed_at >= $1 AND executed_at < $2 GROUP BY symbol ORDER BY symbol",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// The caller's order; someone else's is `None`, exactly like a missing one.
pub async fn own_order(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    account: uuid::Uuid,
) -> Result<Option<(OrderRow, Vec<FillRow>)>> {
    let order: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account_id = $2"
    )))
    .bind(id)
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order) = order else {
        return Ok(None);
    };
    let fills: Vec<FillRow> = sqlx::query_as(
        "SELECT id AS trade_id, price, quantity,
                CASE WHEN maker_order_id = $1 THEN 'maker' ELSE 'taker' END AS liquidity
         FROM trades WHERE maker_order_id = $1 OR taker_order_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((order, fills)))
}

/// The resting orders of a symbol in time priority: what the book is rebuilt from.
pub async fn resting_orders(pool: &PgPool, symbol: &str) -> Result<Vec<OrderRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE symbol = $1 AND status IN ('open', 'partially_filled') ORDER BY book_sequence"
    )))
    .bind(symbol)
    .fetch_all(pool)
    .await?)
}

/// The last book sequence a committed batch of the symbol gave out, so a rebuilt book
/// continues after it: every batch stores it with the symbol's owner, in the statement that
/// checks the fence ([`write_matched`]); 0 for a symbol never owned.
pub async fn last_sequence(pool: &PgPool, symbol: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(max(last_sequence), 0) FROM symbol_owners WHERE symbol = $1",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}

pub async fn instrument<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    symbol: &str,
) -> Result<Option<Instrument>> {
    let row: Option<InstrumentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INSTRUMENT_COLUMNS} FROM instruments WHERE symbol = $1"
    )))
    .bind(symbol)
    .fetch_optional(executor)
    .await?;
    row.map(Instrument::try_from).transpose()
}

/// (symbol, account) of every account with open orders, narrowed to one account and/or one
/// symbol: what a kill switch has to cancel.
pub async fn open_order_owners(
    conn: &mut sqlx::PgConnection,
    account: Option<uuid::Uuid>,
    symbol: Option<&str>,
) -> Result<Vec<(String, uuid::Uuid)>> {
    // Only the scope given is in the statement, so an account's switch reads that account's
    // resting orders and a symbol's that symbol's (each down its partial index), not every
    // resting order of the exchange.
    let mut query = sqlx::QueryBuilder::new(
        "SELECT DISTINCT symbol, account_id FROM orders
          WHERE status IN ('open', 'partially_filled')",
    );
    if let Some(account) = account {
        query.push(" AND account_id = ").push_bind(account);
    }
    if let Some(symbol) = symbol {
        query.push(" AND symbol = ").push_bind(symbol);
    }
    Ok(query.build_query_as().fetch_all(conn).await?)
}

/// The caller's orders, newest first, after the `cursor` order (exclusive).
pub async fn list_orders(
    pool: &PgPool,
    account: uuid::Uuid,
    symbol: Option<&str>,
    status: Option<OrderStatus>,
    cursor: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>> {
    // Only the conditions given are in the statement, so each one's plan is made for exactly
    // them: the cursor bounds the index scan (a page costs a page of rows, however deep), and a
    // status of a resting order names the partial index of open orders by account. An
    // `$n IS NULL OR …` for every optional filter made one plan for all and left them as filters
    // over the account's whole history (tests/query_plans.rs).
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = "
    ));
    query.push_bind(account);
    if let Some(symbol) = symbol {
        query.push(" AND symbol = ").push_bind(symbol);
    }
    if let Some(status) = status {
        // A literal from a closed set, so the planner can prove the partial index's predicate.
        query.push(format_args!(" AND status = '{}'", status.as_str()));
    }
    if let Some(cursor) = cursor {
        query
            .push(" AND (created_at, id) < (SELECT created_at, id FROM orders WHERE id = ")
            .push_bind(cursor)
            .push(" AND account_id = ")
            .push_bind(account)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// Fills of several orders at once, keyed by order id.
pub async fn fills_of(pool: &PgPool, ids: &[uuid::Uuid]) -> Result<Vec<(uuid::Uuid, FillRow)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        order_id: uuid::Uuid,
        trade_id: uuid::Uuid,
        price: i64,
        quantity: i64,
        liquidity: String,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT maker_order_id AS order_id, id AS trade_id, price, quantity, 'maker' AS liquidity, sequence
           FROM trades WHERE maker_order_id = ANY($1)
         UNION ALL
         SELECT taker_order_id, id, price, quantity, 'taker', sequence
           FROM trades WHERE taker_order_id = ANY($1)
         ORDER BY sequence",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.order_id,
                FillRow {
                    trade_id: r.trade_id,
                    price: r.price,
                    quantity: r.quantity,
                    liquidity: r.liquidity,
                },
            )
        })
        .collect())
}

/// Symbols where the account has resting orders (optionally just one).
pub async fn symbols_with_resting_orders(
    pool: &PgPool,
    account: uuid::Uuid,
    symbol: Option<&str>,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT symbol FROM orders
         WHERE account_id = $1 AND status IN ('open', 'partially_filled')
           AND ($2::text IS NULL OR symbol = $2)
         ORDER BY symbol",
    )
    .bind(account)
    .bind(symbol)
    .fetch_all(pool)
    .await?)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TradeRow {
    pub id: uuid::Uuid,
    pub symbol: String,
    pub price: i64,
    pub quantity: i64,
    pub taker_side: contracts::Side,
    pub sequence: i64,
    pub executed_at: time::OffsetDateTime,
    pub maker_order_id: uuid::Uuid,
    pub taker_order_id: uuid::Uuid,
    pub maker_account: uuid::Uuid,
}

const TRADE_COLUMNS: &str = "id, symbol, price, quantity, taker_side, sequence, executed_at, maker_order_id, taker_order_id, maker_account";

/// Public recent trades of a symbol, newest first.
pub async fn recent_trades(pool: &PgPool, symbol: &str, limit: i64) -> Result<Vec<TradeRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = $1 ORDER BY sequence DESC LIMIT $2"
    )))
    .bind(symbol)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Where trade `id` of `symbol` stands in the symbol's sequence; `None` if it is not one of
/// the symbol's trades.
pub async fn trade_sequence(pool: &PgPool, symbol: &str, id: uuid::Uuid) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT sequence FROM trades WHERE id = $1 AND symbol = $2")
            .bind(id)
            .bind(symbol)
            .fetch_optional(pool)
            .await?,
    )
}

/// Public trades of a symbol that came after `sequence`, oldest first: how a client that lost
/// its stream catches up.
pub async fn trades_after(
    pool: &PgPool,
    symbol: &str,
    sequence: i64,
    limit: i64,
) -> Result<Vec<TradeRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = $1 AND sequence > $2
          ORDER BY sequence LIMIT $3"
    )))
    .bind(symbol)
    .bind(sequence)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The account's own trades (as maker or taker), newest first, after `cursor` (exclusive).
pub async fn own_trades(
    pool: &PgPool,
    account: uuid::Uuid,
    symbol: Option<&str>,
    cursor: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<TradeRow>> {
    // As maker and as taker (a trade with itself once, as maker), each down its own index in
    // order and cut at a page, then merged: a page costs a page of rows, not the account's
    // whole history (an `OR` of the two columns can use neither index for the order). Only the
    // conditions given are in the statement, so the cursor bounds each index scan.
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {TRADE_COLUMNS} FROM ("));
    for as_taker in [false, true] {
        if as_taker {
            query
                .push(format_args!(
                    " UNION ALL (SELECT {TRADE_COLUMNS} FROM trades WHERE taker_account = "
                ))
                .push_bind(account)
                .push(" AND maker_account <> ")
                .push_bind(account);
        } else {
            query
                .push(format_args!(
                    "(SELECT {TRADE_COLUMNS} FROM trades WHERE maker_account = "
                ))
                .push_bind(account);
        }
        if let Some(symbol) = symbol {
            query.push(" AND symbol = ").push_bind(symbol);
        }
        if let Some(cursor) = cursor {
            query
                .push(" AND (executed_at, id) < (SELECT executed_at, id FROM trades WHERE id = ")
                .push_bind(cursor)
                .push(")");
        }
        query
            .push(" ORDER BY executed_at DESC, id DESC LIMIT ")
            .push_bind(limit)
            .push(")");
    }
    query
        .push(") AS own ORDER BY executed_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

/// Last price and 24-hour volume of a symbol.
pub async fn ticker(pool: &PgPool, symbol: &str) -> Result<(Option<i64>, i64)> {
    // The volume of the minutes that began in the last 24 hours, from the per-minute sums a
    // trigger keeps (migration `volume_by_minute`): at most 1,440 rows, however busy the day.
    Ok(sqlx::query_as(
        "SELECT (SELECT price FROM trades WHERE symbol = $1 ORDER BY sequence DESC LIMIT 1),
                (SELECT COALESCE(sum(quantity), 0)::bigint FROM volume_by_minute
                  WHERE symbol = $1 AND minute > now() - interval '24 hours')",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}

/// The price of the symbol's latest trade, in quote minor units.
pub async fn last_price(pool: &PgPool, symbol: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT price FROM trades WHERE symbol = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(symbol)
    .fetch_optional(pool)
    .await?)
}

/// Renews this replica's lease (and says where it can be reached).
pub async fn renew_replica(
    pool: &PgPool,
    replica: uuid::Uuid,
    address: &str,
    lease: std::time::Duration,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO replicas (id, address, lease_until, fences_risk_starts)
         VALUES ($1, $2, now() + make_interval(secs => $3), true)
         ON CONFLICT ON CONSTRAINT replicas_pkey
         DO UPDATE SET address = EXCLUDED.address, lease_until = EXCLUDED.lease_until,
                       fences_risk_starts = true",
    )
    .bind(replica)
    .bind(address)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// A symbol's owner as the database has it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OwnerRow {
    pub symbol: String,
    /// 0: never owned.
    pub epoch: i64,
    pub replica: Option<uuid::Uuid>,
    pub address: Option<String>,
    /// The owner's lease still holds.
    pub live: bool,
}

/// Every instrument with its owner, or only `symbol`'s.
async fn owners_of(pool: &PgPool, symbol: Option<&str>) -> Result<Vec<OwnerRow>> {
    Ok(sqlx::query_as(
        "SELECT i.symbol, COALESCE(o.epoch, 0) AS epoch, o.replica, r.address,
                COALESCE(r.lease_until > now(), false) AS live
           FROM instruments i
           LEFT JOIN symbol_owners o ON o.symbol = i.symbol
           LEFT JOIN replicas r ON r.id = o.replica
          WHERE $1::text IS NULL OR i.symbol = $1
          ORDER BY i.symbol",
    )
    .bind(symbol)
    .fetch_all(pool)
    .await?)
}

/// The owner of `symbol`; `None` when there is no such instrument.
pub async fn owner(pool: &PgPool, symbol: &str) -> Result<Option<OwnerRow>> {
    Ok(owners_of(pool, Some(symbol)).await?.pop())
}

/// Every instrument with its owner.
pub async fn owners(pool: &PgPool) -> Result<Vec<OwnerRow>> {
    owners_of(pool, None).await
}

/// The replicas whose lease holds.
pub async fn live_replicas(pool: &PgPool) -> Result<Vec<uuid::Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM replicas WHERE lease_until > now() ORDER BY id")
            .fetch_all(pool)
            .await?,
    )
}

/// Makes `replica` the owner of `symbol` if its epoch is still `seen` (compare and set): the
/// new epoch, or `None` when another replica moved it first. The update waits for a batch of
/// the old owner that is committing (its fence updated the row), so what that batch wrote is
/// in the database before the new owner rebuilds the book.
pub async fn take_symbol(
    pool: &PgPool,
    symbol: &str,
    seen: i64,
    replica: uuid::Uuid,
) -> Result<Option<i64>> {
    let statement = if seen == 0 {
        // Never owned: the first owner creates the row; a concurrent first owner wins.
        "INSERT INTO symbol_owners (symbol, epoch, replica) VALUES ($1, 1, $3)
         ON CONFLICT ON CONSTRAINT symbol_owners_pkey DO NOTHING
         RETURNING epoch"
    } else {
        "UPDATE symbol_owners SET epoch = epoch + 1, replica = $3
          WHERE symbol = $1 AND epoch = $2
         RETURNING epoch"
    };
    Ok(sqlx::query_scalar(statement)
        .bind(symbol)
        .bind(seen)
        .bind(replica)
        .fetch_optional(pool)
        .await?)
}

/// Gives up every symbol of `replica` and its lease (a clean shutdown): the others take its
/// symbols at once instead of waiting for the lease to run out.
pub async fn leave(pool: &PgPool, replica: uuid::Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Rows locked in symbol order, as a risk fence locks them ([`raise_risk_fence`]).
    sqlx::query(
        "UPDATE symbol_owners SET replica = NULL
          WHERE replica = $1
            AND symbol IN (SELECT symbol FROM symbol_owners WHERE replica = $1
                            ORDER BY symbol FOR UPDATE)",
    )
    .bind(replica)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(replica)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// What raising a risk fence did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskFence {
    /// Every symbol's batches now refuse checks of earlier starts.
    Raised,
    /// A replica whose batches do not check the fence is live, or still owns a symbol:
    /// nothing was raised.
    Unsupported,
}

/// Raises every symbol's risk fence to `start` in the caller's transaction, which must write
/// the start's mark next (ADR 0023, "A fence instead of the wait"). Waits for each matching
/// batch in flight, since a batch holds its symbol's row until it commits; from then on no
/// batch with a check of an earlier start commits ([`write_matched`]). A symbol never owned
/// gets a released row, so whoever takes it first inherits the fence. Rows are locked in
/// symbol order, as [`leave`] locks them.
pub async fn raise_risk_fence(
    conn: &mut PgConnection,
    start: contracts::checks::RiskStart,
) -> Result<RiskFence> {
    // A replica of an earlier release books whatever it is handed: while one may still commit
    // a batch (its lease holds, or a symbol still names it), a fence would protect nothing.
    let unsupported: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM replicas
                         WHERE NOT fences_risk_starts AND lease_until > now())
             OR EXISTS (SELECT FROM symbol_owners o
                         WHERE o.replica IS NOT NULL
                           AND NOT EXISTS (SELECT FROM replicas r
                                            WHERE r.id = o.replica AND r.fences_risk_starts))",
    )
    .fetch_one(&mut *conn)
    .await?;
    if unsupported {
        return Ok(RiskFence::Unsupported);
    }
    sqlx::query(
        "INSERT INTO symbol_owners (symbol, epoch, replica, risk_start)
         SELECT symbol, 1, NULL, $1 FROM instruments ORDER BY symbol
         ON CONFLICT ON CONSTRAINT symbol_owners_pkey
         DO UPDATE SET risk_start = GREATEST(symbol_owners.risk_start, EXCLUDED.risk_start)",
    )
    .bind(start.0)
    .execute(&mut *conn)
    .await?;
    Ok(RiskFence::Raised)
}

/// Forgets replicas whose lease ran out long ago (their symbols were taken over by epoch).
pub async fn purge_replicas(pool: &PgPool, older_than: std::time::Duration) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM replicas WHERE lease_until < now() - make_interval(secs => $1)")
            .bind(older_than.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
