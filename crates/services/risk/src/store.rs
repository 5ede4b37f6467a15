//! All of risk's SQL.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::book::{Change, KillSwitch};
use crate::error::Result;
use contracts::funds::WithdrawalReservation;

use crate::funds::{Debit, Held};
use crate::limits::LimitsBody;
use crate::positions::{Position, Side};

/// Everything memory is rebuilt from on start.
pub struct Snapshot {
    pub limits: Vec<(Uuid, LimitsBody)>,
    pub kill_switches: Vec<KillSwitch>,
    pub changes: Vec<Change>,
    /// Trades seen on one stream and not yet the other: their debits, or `None` for a trade
    /// settled before its execution was seen (ADR 0023).
    pub unsettled_trades: Vec<(Uuid, Option<Vec<Debit>>)>,
    /// What withdrawals not yet booked have reserved (ADR 0023 slice 4).
    pub withdrawals: Vec<WithdrawalReservation>,
}

/// An `open_orders` row.
type OpenOrderRow = (Uuid, Uuid, String, String, i64, Option<String>, i64);

/// An `unsettled_trades` row: the buyer's and the seller's debits (none until the trade is
/// seen to execute), and whether it was seen to settle.
#[derive(sqlx::FromRow)]
struct UnsettledTradeRow {
    trade_id: Uuid,
    buy_order_id: Option<Uuid>,
    buyer_id: Option<Uuid>,
    quote_asset: Option<String>,
    buyer_pays: Option<i64>,
    sell_order_id: Option<Uuid>,
    seller_id: Option<Uuid>,
    base_asset: Option<String>,
    seller_delivers: Option<i64>,
    settled: bool,
}

impl OpenOrder {
    fn from_row(
        (order, account, symbol, side, remaining, hold_asset, reserved): OpenOrderRow,
    ) -> Option<Self> {
        Some(Self {
            order,
            account,
            symbol,
            side: Side::parse(&side)?,
            remaining,
            reserved: hold_asset.map(|asset| Held {
                asset,
                amount: reserved,
            }),
        })
    }
}

impl UnsettledTradeRow {
    /// The debits it keeps, if its execution was seen (the table's check keeps all eight
    /// columns set or none).
    fn debits(self) -> Option<Vec<Debit>> {
        Some(vec![
            Debit {
                order: self.buy_order_id?,
                account: self.buyer_id?,
                asset: self.quote_asset?,
                amount: self.buyer_pays?,
            },
            Debit {
                order: self.sell_order_id?,
                account: self.seller_id?,
                asset: self.base_asset?,
                amount: self.seller_delivers?,
            },
        ])
    }
}

/// An account's `limits` row, its id first.
type AccountLimitsRow = (Uuid, String, String, i32, i32, String, i32);

pub async fn snapshot(pool: &PgPool) -> Result<Snapshot> {
    let limits: Vec<AccountLimitsRow> = sqlx::query_as(
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
    let open: Vec<OpenOrderRow> = sqlx::query_as(
        "SELECT order_id, account_id, symbol, side, remaining, hold_asset, reserved FROM open_orders",
    )
    .fetch_all(pool)
    .await?;
    // Only trades in flight between the two streams: a start-up load of the whole table.
    let trades: Vec<UnsettledTradeRow> = sqlx::query_as(
        "SELECT trade_id, buy_order_id, buyer_id, quote_asset, buyer_pays,
                sell_order_id, seller_id, base_asset, seller_delivers, settled
           FROM unsettled_trades",
    )
    .fetch_all(pool)
    .await?;
    // Only withdrawals between risk's answer and settlement's booking: a start-up load.
    let withdrawals: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(
        "SELECT withdrawal_id, account_id, asset, amount FROM withdrawal_reservations",
    )
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
    for order in open.into_iter().filter_map(OpenOrder::from_row) {
        changes.push(Change::Opened {
            order: order.order,
            account: order.account,
            symbol: order.symbol,
            side: order.side,
            remaining: order.remaining,
            reserved: order.reserved,
        });
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
            .map(|(id, q, n, o, r, p, c)| (id, limits_body((q, n, o, r, p, c))))
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
        unsettled_trades: trades
            .into_iter()
            .filter_map(|row| {
                let (trade, settled) = (row.trade_id, row.settled);
                match row.debits() {
                    // Both halves: the consumer that completed it deleted it; none is left.
                    Some(_) if settled => None,
                    debits => Some((trade, debits)),
                }
            })
            .collect(),
        withdrawals: withdrawals
            .into_iter()
            .map(
                |(withdrawal_id, account_id, asset, amount)| WithdrawalReservation {
                    withdrawal_id,
                    account_id,
                    asset,
                    amount,
                },
            )
            .collect(),
    })
}

/// Keeps what a withdrawal reserved until settlement's `FundsWithdrawn` for it is consumed
/// ([`end_withdrawals`]). Asked again (a retried call), it keeps the first.
pub async fn reserve_withdrawal(pool: &PgPool, reservation: &WithdrawalReservation) -> Result<()> {
    sqlx::query(
        "INSERT INTO withdrawal_reservations (withdrawal_id, account_id, asset, amount)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT withdrawal_reservations_pkey DO NOTHING",
    )
    .bind(reservation.withdrawal_id)
    .bind(reservation.account_id)
    .bind(&reservation.asset)
    .bind(reservation.amount)
    .execute(pool)
    .await?;
    Ok(())
}

/// These withdrawals were booked, or given up: they reserve nothing any more.
pub async fn end_withdrawals(conn: &mut PgConnection, withdrawals: &[Uuid]) -> Result<()> {
    delete_all(
        conn,
        "DELETE FROM withdrawal_reservations WHERE withdrawal_id = ANY($1)",
        withdrawals,
    )
    .await
}

/// Runs `statement`, a `DELETE … WHERE <key> = ANY($1)`, for `ids`; nothing when there are none.
async fn delete_all(conn: &mut PgConnection, statement: &'static str, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(statement).bind(ids).execute(conn).await?;
    Ok(())
}

/// Ends the withdrawal reservations older than `ttl` (settlement neither booked nor gave them
/// up) and returns them.
pub async fn lapse_withdrawals(pool: &PgPool, ttl: std::time::Duration) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "DELETE FROM withdrawal_reservations
          WHERE reserved_at < now() - make_interval(secs => $1)
         RETURNING withdrawal_id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// A start of risk's process, as `starts` records it.
#[derive(Clone, Copy, Debug, sqlx::FromRow)]
pub struct Start {
    /// Names this start when it hands over ([`record_handover`]).
    pub started_at: time::OffsetDateTime,
    /// One more than the start before it's: the verdicts of this process carry it, and the
    /// fence orders raises for it shuts out every earlier start's checks (ADR 0023).
    #[sqlx(try_from = "i64")]
    pub number: contracts::checks::RiskStart,
    /// An earlier process ran and did not hand over: an order it checked may still reach the
    /// book. The fence keeps it out; where orders cannot fence yet, this start waits out the
    /// bound on checks before its funds decide (ADR 0023).
    pub follows_unfinished: bool,
    /// The start before this one was of a release before the numbers: its verdicts carried
    /// none, which no fence shuts out, so only the wait covers its checks.
    pub follows_unnumbered: bool,
}

/// Records this start, and whether the process before it left checks behind.
pub async fn record_start(pool: &PgPool) -> Result<Start> {
    // `earlier` reads the table as it was before the upsert (one snapshot per statement). A
    // handover counts only if it came after the start it belongs to: a start by a release
    // that predates the column moves `started_at` and leaves the old handover behind it.
    Ok(sqlx::query_as(
        "WITH earlier AS (SELECT started_at, handed_over_at, numbered_at FROM starts)
         INSERT INTO starts (started_at, number, numbered_at) VALUES (now(), 1, now())
         ON CONFLICT (singleton)
             DO UPDATE SET started_at = excluded.started_at, handed_over_at = NULL,
                           number = starts.number + 1, numbered_at = excluded.started_at
         RETURNING started_at, number,
                   EXISTS (SELECT 1 FROM earlier e
                            WHERE e.handed_over_at IS NULL
                               OR e.handed_over_at <= e.started_at) AS follows_unfinished,
                   EXISTS (SELECT 1 FROM earlier e
                            WHERE e.numbered_at IS DISTINCT FROM e.started_at)
                       AS follows_unnumbered",
    )
    .fetch_one(pool)
    .await?)
}

/// Records that the process which made `start` handed over: nothing it checked can reach the
/// book unread any more. False if a later start has taken the row meanwhile (then that start
/// has made its own decision to wait).
pub async fn record_handover(pool: &PgPool, start: &Start) -> Result<bool> {
    let recorded = sqlx::query("UPDATE starts SET handed_over_at = now() WHERE started_at = $1")
        .bind(start.started_at)
        .execute(pool)
        .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Stores an account's limits and logs the change (who, before, after), in one transaction.
/// Serializes changes to one account's limits until the transaction ends (every replica), and
/// returns what is stored for it now (None: it has the defaults). A partial update reads and
/// writes under this lock, so two concurrent ones both take effect.
pub async fn lock_limits(conn: &mut PgConnection, account: Uuid) -> Result<Option<LimitsBody>> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('risk.limits'), hashtext($1::text))")
        .bind(account)
        .execute(&mut *conn)
        .await?;
    let row: Option<LimitsRow> = sqlx::query_as(
        "SELECT max_order_quantity, max_order_notional, max_open_orders, max_orders_per_second,
                max_position, price_collar_bps
           FROM limits WHERE account_id = $1",
    )
    .bind(account)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(limits_body))
}

/// A `limits` row: quantity, notional, open orders, orders per second, position, collar.
type LimitsRow = (String, String, i32, i32, String, i32);

fn limits_body((q, n, o, r, p, c): LimitsRow) -> LimitsBody {
    // The table's CHECKs keep these non-negative.
    let count = |v: i32| u32::try_from(v).unwrap_or(0);
    LimitsBody {
        max_order_quantity: q,
        max_order_notional: n,
        max_open_orders: count(o),
        max_orders_per_second: count(r),
        max_position: p,
        price_collar_bps: count(c),
    }
}

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

/// An open order as risk keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOrder {
    pub order: Uuid,
    pub account: Uuid,
    pub symbol: String,
    pub side: Side,
    pub remaining: i64,
    /// What is left of its funds' reservation (ADR 0023).
    pub reserved: Option<Held>,
}

/// The open orders among `orders` (the others are not, or no longer, open).
pub async fn open_orders(conn: &mut PgConnection, orders: &[Uuid]) -> Result<Vec<OpenOrder>> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<OpenOrderRow> = sqlx::query_as(
        "SELECT order_id, account_id, symbol, side, remaining, hold_asset, reserved
           FROM open_orders WHERE order_id = ANY($1)",
    )
    .bind(orders)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(OpenOrder::from_row).collect())
}

/// Writes open orders as they now stand (new ones inserted, known ones' `remaining` and
/// `reserved` set).
pub async fn put_open_orders(conn: &mut PgConnection, open: &[&OpenOrder]) -> Result<()> {
    if open.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO open_orders (order_id, account_id, symbol, side, remaining, hold_asset, reserved)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[],
                              $6::text[], $7::int8[])
         ON CONFLICT ON CONSTRAINT open_orders_pkey DO UPDATE
             SET remaining = EXCLUDED.remaining, reserved = EXCLUDED.reserved",
    )
    .bind(open.iter().map(|o| o.order).collect::<Vec<_>>())
    .bind(open.iter().map(|o| o.account).collect::<Vec<_>>())
    .bind(open.iter().map(|o| o.symbol.as_str()).collect::<Vec<_>>())
    .bind(open.iter().map(|o| o.side.as_str()).collect::<Vec<_>>())
    .bind(open.iter().map(|o| o.remaining).collect::<Vec<_>>())
    .bind(
        open.iter()
            .map(|o| o.reserved.as_ref().map(|h| h.asset.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        open.iter()
            .map(|o| o.reserved.as_ref().map_or(0, |h| h.amount))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A trade's debits as `unsettled_trades` keeps them: the buyer's, the seller's.
pub struct TradeDebits<'a> {
    pub trade: Uuid,
    pub buyer: &'a Debit,
    pub seller: &'a Debit,
}

/// One side's debits of a batch of trades, a column each, as `UNNEST` takes them.
struct DebitColumns<'a> {
    orders: Vec<Uuid>,
    accounts: Vec<Uuid>,
    assets: Vec<&'a str>,
    amounts: Vec<i64>,
}

impl<'a> DebitColumns<'a> {
    fn of(debits: impl Iterator<Item = &'a Debit>) -> Self {
        let mut columns = Self {
            orders: Vec::new(),
            accounts: Vec::new(),
            assets: Vec::new(),
            amounts: Vec::new(),
        };
        for debit in debits {
            columns.orders.push(debit.order);
            columns.accounts.push(debit.account);
            columns.assets.push(&debit.asset);
            columns.amounts.push(debit.amount);
        }
        columns
    }
}

/// The orders consumer saw these trades execute: their debits are stored, and a trade whose
/// settlement was seen already is done with (its row deleted).
pub async fn trades_executed(conn: &mut PgConnection, trades: &[TradeDebits<'_>]) -> Result<()> {
    if trades.is_empty() {
        return Ok(());
    }
    let buyers = DebitColumns::of(trades.iter().map(|t| t.buyer));
    let sellers = DebitColumns::of(trades.iter().map(|t| t.seller));
    let whole: Vec<Uuid> = sqlx::query_scalar::<_, Option<Uuid>>(
        "INSERT INTO unsettled_trades (trade_id, buy_order_id, buyer_id, quote_asset, buyer_pays,
                                       sell_order_id, seller_id, base_asset, seller_delivers)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[],
                              $6::uuid[], $7::uuid[], $8::text[], $9::int8[])
         ON CONFLICT ON CONSTRAINT unsettled_trades_pkey DO UPDATE SET
             buy_order_id = EXCLUDED.buy_order_id, buyer_id = EXCLUDED.buyer_id,
             quote_asset = EXCLUDED.quote_asset, buyer_pays = EXCLUDED.buyer_pays,
             sell_order_id = EXCLUDED.sell_order_id, seller_id = EXCLUDED.seller_id,
             base_asset = EXCLUDED.base_asset, seller_delivers = EXCLUDED.seller_delivers
         RETURNING CASE WHEN settled THEN trade_id END",
    )
    .bind(trades.iter().map(|t| t.trade).collect::<Vec<_>>())
    .bind(&buyers.orders)
    .bind(&buyers.accounts)
    .bind(&buyers.assets)
    .bind(&buyers.amounts)
    .bind(&sellers.orders)
    .bind(&sellers.accounts)
    .bind(&sellers.assets)
    .bind(&sellers.amounts)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flatten()
    .collect();
    forget_trades(conn, &whole).await
}

/// Settlement's consumer saw these trades settle: a trade whose execution was seen already is
/// done with; one not yet seen to execute is remembered as settled.
pub async fn trades_settled(conn: &mut PgConnection, trades: &[Uuid]) -> Result<()> {
    if trades.is_empty() {
        return Ok(());
    }
    let whole: Vec<Uuid> = sqlx::query_scalar::<_, Option<Uuid>>(
        "INSERT INTO unsettled_trades (trade_id, settled) SELECT UNNEST($1::uuid[]), true
         ON CONFLICT ON CONSTRAINT unsettled_trades_pkey DO UPDATE SET settled = true
         RETURNING CASE WHEN buy_order_id IS NOT NULL THEN trade_id END",
    )
    .bind(trades)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flatten()
    .collect();
    forget_trades(conn, &whole).await
}

/// Trades both streams have been seen for: nothing of theirs is committed any more.
async fn forget_trades(conn: &mut PgConnection, trades: &[Uuid]) -> Result<()> {
    delete_all(
        conn,
        "DELETE FROM unsettled_trades WHERE trade_id = ANY($1)",
        trades,
    )
    .await
}

pub async fn end_orders(conn: &mut PgConnection, orders: &[Uuid]) -> Result<()> {
    delete_all(
        conn,
        "DELETE FROM open_orders WHERE order_id = ANY($1)",
        orders,
    )
    .await
}

/// Which of `orders` risk has seen end (`ended_orders`).
pub async fn ended_among(
    conn: &mut PgConnection,
    orders: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>> {
    if orders.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let ended: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM ended_orders WHERE order_id = ANY($1)")
            .bind(orders)
            .fetch_all(conn)
            .await?;
    Ok(ended.into_iter().collect())
}

/// Remembers that `orders` ended, so an acceptance of one delivered late opens nothing.
///
/// A plain insert of the orders not remembered yet rather than `ON CONFLICT DO NOTHING`, which
/// writes one more WAL record per row (docs/performance.md, "Inserts that are not
/// speculative"). Risk runs one projection (ADR 0018), so no other transaction writes these rows
/// meanwhile; were one to, the key would refuse the second and its batch would be applied
/// again event by event.
pub async fn record_ended(conn: &mut PgConnection, orders: &[Uuid]) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    // Each order once: an order's end and a replay of it may share a batch.
    let mut distinct = std::collections::HashSet::with_capacity(orders.len());
    let orders: Vec<Uuid> = orders
        .iter()
        .copied()
        .filter(|order| distinct.insert(*order))
        .collect();
    sqlx::query(
        "INSERT INTO ended_orders (order_id)
         SELECT o FROM unnest($1::uuid[]) AS o
          WHERE NOT EXISTS (SELECT 1 FROM ended_orders e WHERE e.order_id = o)",
    )
    .bind(&orders)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets at most `chunk` orders that ended longer than `retention` ago and were made before
/// it; returns how many. Order ids are UUIDv7: those made before the cutoff are a range of the
/// primary key (`events::envelope::first_id_within`, as the inbox's purge).
pub async fn purge_ended(pool: &PgPool, retention: std::time::Duration, chunk: i64) -> Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM ended_orders WHERE order_id IN (
             SELECT order_id FROM ended_orders
              WHERE order_id < $1 AND ended_at < now() - make_interval(secs => $2)
              LIMIT $3)",
    )
    .bind(events::envelope::first_id_within(retention))
    .bind(retention.as_secs_f64())
    .bind(chunk)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// A position's key: (account, symbol).
pub type PositionKey = (Uuid, String);

/// These positions, locked for this transaction (the consumer is their only writer; the lock
/// makes that true even with two replicas), in key order. A position never traded is absent.
pub async fn positions_for_update(
    conn: &mut PgConnection,
    keys: &[PositionKey],
) -> Result<HashMap<PositionKey, Position>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.account_id, p.symbol, p.net_quantity, p.average_price, p.realized_pnl
           FROM positions p JOIN UNNEST($1::uuid[], $2::text[]) AS k(account_id, symbol)
             ON p.account_id = k.account_id AND p.symbol = k.symbol
          ORDER BY p.account_id, p.symbol FOR UPDATE OF p",
    )
    .bind(keys.iter().map(|(a, _)| *a).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, symbol, net, average_price, realized_pnl)| {
            let position = Position {
                net,
                average_price,
                realized_pnl,
            };
            ((account, symbol), position)
        })
        .collect())
}

/// A position to write, with its instrument's assets.
pub struct PositionRow<'a> {
    pub account: Uuid,
    pub symbol: &'a str,
    pub base_asset: &'a str,
    pub quote_asset: &'a str,
    pub position: Position,
}

pub async fn put_positions(conn: &mut PgConnection, rows: &[PositionRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO positions (account_id, symbol, net_quantity, average_price, realized_pnl, base_asset, quote_asset)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[])
         ON CONFLICT ON CONSTRAINT positions_pkey DO UPDATE SET
             net_quantity = EXCLUDED.net_quantity, average_price = EXCLUDED.average_price,
             realized_pnl = EXCLUDED.realized_pnl",
    )
    .bind(rows.iter().map(|r| r.account).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.symbol).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.net).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.average_price).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.realized_pnl).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.base_asset).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.quote_asset).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn put_last_prices(conn: &mut PgConnection, prices: &HashMap<&str, i64>) -> Result<()> {
    if prices.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO last_prices (symbol, price) SELECT * FROM UNNEST($1::text[], $2::int8[])
         ON CONFLICT ON CONSTRAINT last_prices_pkey DO UPDATE SET price = EXCLUDED.price",
    )
    .bind(prices.keys().copied().collect::<Vec<_>>())
    .bind(prices.values().copied().collect::<Vec<_>>())
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
