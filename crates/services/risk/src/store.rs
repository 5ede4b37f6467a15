//! All of risk's SQL.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::book::{Change, KillSwitch};
use crate::error::Result;
use crate::limits::LimitsBody;
use crate::positions::{Position, Side};

/// Everything memory is rebuilt from on start.
pub struct Snapshot {
    pub limits: Vec<(Uuid, LimitsBody)>,
    pub kill_switches: Vec<KillSwitch>,
    pub changes: Vec<Change>,
}

type LimitsRow = (Uuid, String, String, i32, i32, String, i32);

pub async fn snapshot(pool: &PgPool) -> Result<Snapshot> {
    let limits: Vec<LimitsRow> = sqlx::query_as(
        "SELECT account_id, max_order_quantity, max_order_notional, max_open_orders,
                max_orders_per_second, max_position, price_collar_bps FROM limits",
    )
    .fetch_all(pool)
    .await?;
    let kill_switches: Vec<(Uuid, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, scope, target, reason FROM kill_switches WHERE released_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let open: Vec<(Uuid, Uuid, String, String, i64)> =
        sqlx::query_as("SELECT order_id, account_id, symbol, side, remaining FROM open_orders")
            .fetch_all(pool)
            .await?;
    let positions: Vec<(Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT account_id, symbol, net_quantity, average_price, realized_pnl FROM positions",
    )
    .fetch_all(pool)
    .await?;
    let prices: Vec<(String, i64)> = sqlx::query_as("SELECT symbol, price FROM last_prices")
        .fetch_all(pool)
        .await?;
    let mut changes = Vec::new();
    for (order, account, symbol, side, remaining) in open {
        if let Some(side) = Side::parse(&side) {
            changes.push(Change::Opened {
                order,
                account,
                symbol,
                side,
                remaining,
            });
        }
    }
    for (account, symbol, net, average_price, realized_pnl) in positions {
        changes.push(Change::Position {
            account,
            symbol,
            position: Position {
                net,
                average_price,
                realized_pnl,
            },
        });
    }
    for (symbol, price) in prices {
        changes.push(Change::LastPrice { symbol, price });
    }
    Ok(Snapshot {
        limits: limits
            .into_iter()
            .map(|(id, q, n, o, r, p, c)| {
                let count = |v: i32| u32::try_from(v).unwrap_or(0);
                (
                    id,
                    LimitsBody {
                        max_order_quantity: q,
                        max_order_notional: n,
                        max_open_orders: count(o),
                        max_orders_per_second: count(r),
                        max_position: p,
                        price_collar_bps: count(c),
                    },
                )
            })
            .collect(),
        kill_switches: kill_switches
            .into_iter()
            .map(|(id, scope, target, reason)| KillSwitch {
                id,
                scope,
                target,
                reason,
            })
            .collect(),
        changes,
    })
}

/// Stores an account's limits and logs the change (who, before, after), in one transaction.
pub async fn put_limits(
    conn: &mut PgConnection,
    account: Uuid,
    before: &LimitsBody,
    after: &LimitsBody,
    actor: Uuid,
) -> Result<()> {
    let count = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO limits (account_id, max_order_quantity, max_order_notional, max_open_orders,
                             max_orders_per_second, max_position, price_collar_bps, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT ON CONSTRAINT limits_pkey DO UPDATE SET
             max_order_quantity = EXCLUDED.max_order_quantity,
             max_order_notional = EXCLUDED.max_order_notional,
             max_open_orders = EXCLUDED.max_open_orders,
             max_orders_per_second = EXCLUDED.max_orders_per_second,
             max_position = EXCLUDED.max_position,
             price_collar_bps = EXCLUDED.price_collar_bps,
             updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(account)
    .bind(&after.max_order_quantity)
    .bind(&after.max_order_notional)
    .bind(count(after.max_open_orders))
    .bind(count(after.max_orders_per_second))
    .bind(&after.max_position)
    .bind(count(after.price_collar_bps))
    .bind(actor)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO limit_changes (account_id, changed_by, before, after) VALUES ($1, $2, $3, $4)",
    )
    .bind(account)
    .bind(actor)
    .bind(sqlx::types::Json(before))
    .bind(sqlx::types::Json(after))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_kill_switch(
    conn: &mut PgConnection,
    switch: &KillSwitch,
    actor: Uuid,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kill_switches (id, scope, target, reason, activated_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(switch.id)
    .bind(&switch.scope)
    .bind(&switch.target)
    .bind(&switch.reason)
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// Releases an active kill switch; `None` when there is no active one with this id.
pub async fn release_kill_switch(
    conn: &mut PgConnection,
    id: Uuid,
    actor: Uuid,
) -> Result<Option<KillSwitch>> {
    let released: Option<(Uuid, String, Option<String>, String)> = sqlx::query_as(
        "UPDATE kill_switches SET released_by = $2, released_at = now()
          WHERE id = $1 AND released_at IS NULL
         RETURNING id, scope, target, reason",
    )
    .bind(id)
    .bind(actor)
    .fetch_optional(conn)
    .await?;
    Ok(released.map(|(id, scope, target, reason)| KillSwitch {
        id,
        scope,
        target,
        reason,
    }))
}

pub async fn open_order(
    conn: &mut PgConnection,
    order: Uuid,
    account: Uuid,
    symbol: &str,
    side: Side,
    remaining: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO open_orders (order_id, account_id, symbol, side, remaining)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT ON CONSTRAINT open_orders_pkey DO NOTHING",
    )
    .bind(order)
    .bind(account)
    .bind(symbol)
    .bind(side.as_str())
    .bind(remaining)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// What is left of an open order after a fill; `None` when it is not (or no longer) open.
pub async fn fill_open_order(
    conn: &mut PgConnection,
    order: Uuid,
    quantity: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE open_orders SET remaining = greatest(remaining - $2, 0) WHERE order_id = $1
         RETURNING remaining",
    )
    .bind(order)
    .bind(quantity)
    .fetch_optional(conn)
    .await?)
}

pub async fn end_order(conn: &mut PgConnection, order: Uuid) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM open_orders WHERE order_id = $1")
        .bind(order)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// The position, locked for this transaction (the consumer is its only writer; the lock
/// makes that true even with two replicas).
pub async fn position_for_update(
    conn: &mut PgConnection,
    account: Uuid,
    symbol: &str,
) -> Result<Position> {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT net_quantity, average_price, realized_pnl FROM positions
          WHERE account_id = $1 AND symbol = $2 FOR UPDATE",
    )
    .bind(account)
    .bind(symbol)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or_else(Position::default, |(net, average_price, realized_pnl)| {
            Position {
                net,
                average_price,
                realized_pnl,
            }
        }),
    )
}

pub async fn put_position(
    conn: &mut PgConnection,
    account: Uuid,
    symbol: &str,
    assets: (&str, &str),
    position: Position,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO positions (account_id, symbol, net_quantity, average_price, realized_pnl, base_asset, quote_asset)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT positions_pkey DO UPDATE SET
             net_quantity = EXCLUDED.net_quantity, average_price = EXCLUDED.average_price,
             realized_pnl = EXCLUDED.realized_pnl",
    )
    .bind(account)
    .bind(symbol)
    .bind(position.net)
    .bind(position.average_price)
    .bind(position.realized_pnl)
    .bind(assets.0)
    .bind(assets.1)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn put_last_price(conn: &mut PgConnection, symbol: &str, price: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO last_prices (symbol, price) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT last_prices_pkey DO UPDATE SET price = EXCLUDED.price",
    )
    .bind(symbol)
    .bind(price)
    .execute(conn)
    .await?;
    Ok(())
}

/// An account's positions: (symbol, net, average price, realized PnL, base, quote).
pub async fn positions(
    pool: &PgPool,
    account: Uuid,
) -> Result<Vec<(String, i64, i64, i64, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT symbol, net_quantity, average_price, realized_pnl, base_asset, quote_asset
           FROM positions WHERE account_id = $1 ORDER BY symbol",
    )
    .bind(account)
    .fetch_all(pool)
    .await?)
}
