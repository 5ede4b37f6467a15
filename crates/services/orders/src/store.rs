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
