//! Every SQL statement of the orders service (schema `orders`).

use contracts::Asset;
use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Result};
use crate::instruments::{Instrument, Status};

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
/// exceeds 64 bits, so it stays `numeric` there).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderRow {
    pub id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: String,
    pub order_type: String,
    pub price: Option<i64>,
    pub quantity: i64,
    pub filled_quantity: i64,
    pub average_price: Option<i64>,
    pub status: String,
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
     (filled_notional / NULLIF(filled_quantity, 0))::bigint AS average_price, \
     status, time_in_force, post_only, book_sequence, created_at, updated_at";

/// The fields of a new order row.
pub struct NewOrderRow<'a> {
    pub id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub client_order_id: Option<&'a str>,
    pub symbol: &'a str,
    pub side: &'a str,
    pub order_type: &'a str,
    pub price: Option<i64>,
    pub quantity: i64,
    pub status: &'a str,
    pub time_in_force: &'a str,
    pub post_only: bool,
    pub book_sequence: Option<i64>,
}

/// Inserts an order; `Ok(false)` when the account already used its client order id.
pub async fn insert_order(conn: &mut PgConnection, o: &NewOrderRow<'_>) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO orders (id, account_id, client_order_id, symbol, side, type, price, quantity,
                             status, time_in_force, post_only, book_sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT ON CONSTRAINT orders_client_order_id_key DO NOTHING",
    )
    .bind(o.id)
    .bind(o.account_id)
    .bind(o.client_order_id)
    .bind(o.symbol)
    .bind(o.side)
    .bind(o.order_type)
    .bind(o.price)
    .bind(o.quantity)
    .bind(o.status)
    .bind(o.time_in_force)
    .bind(o.post_only)
    .bind(o.book_sequence)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Adds a fill to an order and sets its resulting status.
pub async fn add_fill(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    price: i64,
    quantity: i64,
    status: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE orders SET filled_quantity = filled_quantity + $3,
                filled_notional = filled_notional + ($2::numeric * $3::numeric),
                status = $4, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(price)
    .bind(quantity)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_order_status(conn: &mut PgConnection, id: uuid::Uuid, status: &str) -> Result<()> {
    sqlx::query("UPDATE orders SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

pub struct NewTrade<'a> {
    pub id: uuid::Uuid,
    pub symbol: &'a str,
    pub price: i64,
    pub quantity: i64,
    pub maker_order_id: uuid::Uuid,
    pub taker_order_id: uuid::Uuid,
    pub maker_account: uuid::Uuid,
    pub taker_account: uuid::Uuid,
    pub taker_side: &'a str,
    pub sequence: i64,
}

pub async fn insert_trade(conn: &mut PgConnection, t: &NewTrade<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO trades (id, symbol, price, quantity, maker_order_id, taker_order_id,
                             maker_account, taker_account, taker_side, sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(t.id)
    .bind(t.symbol)
    .bind(t.price)
    .bind(t.quantity)
    .bind(t.maker_order_id)
    .bind(t.taker_order_id)
    .bind(t.maker_account)
    .bind(t.taker_account)
    .bind(t.taker_side)
    .bind(t.sequence)
    .execute(conn)
    .await?;
    Ok(())
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

/// The highest book sequence stored for a symbol, so a rebuilt book continues after it.
pub async fn last_sequence(pool: &PgPool, symbol: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT GREATEST(
            (SELECT COALESCE(max(sequence), 0) FROM trades WHERE symbol = $1),
            (SELECT COALESCE(max(book_sequence), 0) FROM orders WHERE symbol = $1))",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}

pub async fn instrument(pool: &PgPool, symbol: &str) -> Result<Option<Instrument>> {
    let row: Option<InstrumentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INSTRUMENT_COLUMNS} FROM instruments WHERE symbol = $1"
    )))
    .bind(symbol)
    .fetch_optional(pool)
    .await?;
    row.map(Instrument::try_from).transpose()
}

/// The caller's orders, newest first, after the `cursor` order (exclusive).
pub async fn list_orders(
    pool: &PgPool,
    account: uuid::Uuid,
    symbol: Option<&str>,
    status: Option<&str>,
    cursor: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE account_id = $1
           AND ($2::text IS NULL OR symbol = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR (created_at, id) <
                (SELECT created_at, id FROM orders WHERE id = $4 AND account_id = $1))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    )))
    .bind(account)
    .bind(symbol)
    .bind(status)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
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
    pub taker_side: String,
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

/// The account's own trades (as maker or taker), newest first, after `cursor` (exclusive).
pub async fn own_trades(
    pool: &PgPool,
    account: uuid::Uuid,
    symbol: Option<&str>,
    cursor: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<TradeRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRADE_COLUMNS} FROM trades
         WHERE (maker_account = $1 OR taker_account = $1)
           AND ($2::text IS NULL OR symbol = $2)
           AND ($3::uuid IS NULL OR (executed_at, id) < (SELECT executed_at, id FROM trades WHERE id = $3))
         ORDER BY executed_at DESC, id DESC
         LIMIT $4"
    )))
    .bind(account)
    .bind(symbol)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Last price and 24-hour volume of a symbol.
pub async fn ticker(pool: &PgPool, symbol: &str) -> Result<(Option<i64>, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT price FROM trades WHERE symbol = $1 ORDER BY sequence DESC LIMIT 1),
                (SELECT COALESCE(sum(quantity), 0)::bigint FROM trades
                  WHERE symbol = $1 AND executed_at > now() - interval '24 hours')",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}
