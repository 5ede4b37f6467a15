//! All of settlement's SQL.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::holds::HoldStatus;
use crate::ledger::{Delta, Deltas, EXTERNAL, FEES, Plan, Side};
use contracts::Asset;
use contracts::funds::{AccountBalance, BalanceSnapshot};

/// Registers the configured assets and their system accounts. A scale that differs from the
/// one already recorded is refused: money exists in the old one.
pub async fn sync_assets(pool: &PgPool, assets: &[Asset]) -> Result<()> {
    let codes: Vec<&str> = assets.iter().map(|a| a.code.as_str()).collect();
    let scales: Vec<i16> = assets
        .iter()
        .map(|a| i16::try_from(a.scale).unwrap_or(i16::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO assets (code, scale) SELECT * FROM UNNEST($1::text[], $2::int2[])
         ON CONFLICT ON CONSTRAINT assets_pkey DO NOTHING",
    )
    .bind(&codes)
    .bind(&scales)
    .execute(pool)
    .await?;
    let recorded: Vec<(String, i16)> =
        sqlx::query_as("SELECT code, scale FROM assets WHERE code = ANY($1)")
            .bind(&codes)
            .fetch_all(pool)
            .await?;
    for (code, scale) in recorded {
        if let Some(asset) = assets.iter().find(|a| a.code == code)
            && i16::try_from(asset.scale).ok() != Some(scale)
        {
            return Err(Error::Internal(format!(
                "asset {code} is configured with scale {} but the ledger holds it at scale {scale}",
                asset.scale
            )));
        }
    }
    sqlx::query(
        "INSERT INTO accounts (owner_id, asset)
         SELECT owner, code FROM UNNEST($1::text[]) AS code CROSS JOIN UNNEST($2::uuid[]) AS owner
         ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING",
    )
    .bind(&codes)
    .bind([EXTERNAL, FEES])
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes a plan and its balance changes at once, in the caller's transaction (deposits and
/// withdrawals: one plan per transaction). An account that would go negative (or a debit from
/// an account that does not exist) fails it with [`Error::InsufficientFunds`].
pub async fn apply(conn: &mut PgConnection, plan: &Plan, created_by: Option<Uuid>) -> Result<()> {
    // Deposits and withdrawals move available funds only; a post out of a hold here would be
    // written nowhere.
    if let Some(hold) = plan.hold_posts.keys().next() {
        return Err(Error::HoldNotPending(*hold));
    }
    let mut deltas = Deltas::default();
    write_plan(&mut *conn, plan, created_by, &mut deltas).await?;
    post_deltas(&mut *conn, &deltas)
        .await
        .map_err(|err| match plan.transfers.first() {
            Some(transfer) => with_asset(err, &transfer.asset),
            None => err,
        })
}

/// Writes a plan's transfers and adds its balance changes to `deltas` for [`post_deltas`] to
/// write at the end of the transaction. What the plan posts out of holds is the caller's to
/// write ([`write_holds`]): the settling consumer writes each hold once per batch, with
/// everything else the batch does to it.
pub async fn write_plan(
    conn: &mut PgConnection,
    plan: &Plan,
    created_by: Option<Uuid>,
    deltas: &mut Deltas,
) -> Result<()> {
    if plan.transfers.is_empty() {
        return Ok(());
    }
    let changes = plan.deltas()?;
    deltas.add_plan(plan)?;
    // Accounts come into being when money first arrives — before the transfers that name
    // them. An existing account is not locked by this (DO NOTHING takes no row lock).
    let (owners, assets): (Vec<Uuid>, Vec<&str>) = changes
        .iter()
        .filter(|(_, d)| d.available > 0)
        .map(|((owner, asset), _)| (*owner, asset.as_str()))
        .unzip();
    if !owners.is_empty() {
        sqlx::query(
            "INSERT INTO accounts (owner_id, asset)
             SELECT * FROM UNNEST($1::uuid[], $2::text[])
             ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING",
        )
        .bind(&owners)
        .bind(&assets)
        .execute(&mut *conn)
        .await?;
    }
    // The foreign keys to `accounts` take only a key-share lock on the account rows, which
    // does not conflict with the hold writer's no-key-update locks.
    let t = &plan.transfers;
    sqlx::query(
        "INSERT INTO transfers (id, asset, debit_owner_id, credit_owner_id, amount, kind, hold_id, trade_id, created_by)
         SELECT id, asset, debit, credit, amount, kind, hold, trade, $9
           FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int8[], $6::text[], $7::uuid[], $8::uuid[])
             AS t(id, asset, debit, credit, amount, kind, hold, trade)",
    )
    .bind(t.iter().map(|t| t.id).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.asset.as_str()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.debit).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.credit).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.amount).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.hold).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.trade).collect::<Vec<_>>())
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes gathered balance changes: locks the accounts in (owner, asset) order — the order
/// the hold writer locks in, so the two never wait on each other in a cycle — then one update
/// for all. Meant as the last statements before the commit: the rows every trade and hold
/// touches stay locked only from here to the commit. An account that would go negative, or a
/// change to an account that does not exist, fails it with [`Error::InsufficientFunds`].
pub async fn post_deltas(conn: &mut PgConnection, deltas: &Deltas) -> Result<()> {
    let mut owners = Vec::new();
    let mut assets = Vec::new();
    let mut available = Vec::new();
    let mut held = Vec::new();
    for (owner, asset, change) in deltas.changes() {
        owners.push(owner);
        assets.push(asset);
        available.push(change.available);
        held.push(change.held);
    }
    if owners.is_empty() {
        return Ok(());
    }
    lock_accounts(&mut *conn, &owners, &assets).await?;
    let updated = sqlx::query(
        "UPDATE accounts a
            SET available = a.available + d.available, held = a.held + d.held, updated_at = now()
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[]) AS d(owner, asset, available, held)
          WHERE a.owner_id = d.owner AND a.asset = d.asset",
    )
    .bind(&owners)
    .bind(&assets)
    .bind(&available)
    .bind(&held)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != owners.len() as u64 {
        return Err(Error::InsufficientFunds {
            asset: String::new(),
        });
    }
    Ok(())
}

/// Locks account rows in (owner, asset) order, for an update of their balances only
/// (`FOR NO KEY UPDATE`: it leaves the key-share locks of inserts that reference the accounts
/// — transfers, holds — free to proceed).
async fn lock_accounts(conn: &mut PgConnection, owners: &[Uuid], assets: &[&str]) -> Result<()> {
    sqlx::query(
        "SELECT 1 FROM accounts a JOIN UNNEST($1::uuid[], $2::text[]) AS k(owner, asset)
             ON a.owner_id = k.owner AND a.asset = k.asset
          ORDER BY a.owner_id, a.asset FOR NO KEY UPDATE OF a",
    )
    .bind(owners)
    .bind(assets)
    .execute(conn)
    .await?;
    Ok(())
}

fn with_asset(err: Error, asset: &str) -> Error {
    match err {
        Error::InsufficientFunds { .. } => Error::InsufficientFunds {
            asset: asset.to_owned(),
        },
        other => other,
    }
}

/// A hold as requested by orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHold {
    pub id: Uuid,
    pub owner: Uuid,
    pub asset: String,
    pub side: Side,
    pub symbol: String,
    pub price: i64,
    pub quantity: i64,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct HoldRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub asset: String,
    pub side: String,
    pub symbol: String,
    pub price: i64,
    pub quantity: i64,
    pub amount: i64,
    pub posted: i64,
    pub released: i64,
    pub filled: i64,
    pub status: HoldStatus,
}

impl HoldRow {
    fn same_terms(&self, hold: &NewHold) -> bool {
        self.owner_id == hold.owner
            && self.asset == hold.asset
            && self.side == hold.side.as_str()
            && self.symbol == hold.symbol
            && self.price == hold.price
            && self.quantity == hold.quantity
            && self.amount == hold.amount
    }
}

const HOLD_COLUMNS: &str =
    "id, owner_id, asset, side, symbol, price, quantity, amount, posted, released, filled, status";

/// Advisory lock class of orders' holds (the key is the order id's hash).
const ORDER_HOLD_LOCK: i32 = 736_812_611;

/// Serializes this transaction with every other one about these orders' holds: placing a hold
/// and releasing its order each take it first. Without it the two can miss each other under
/// READ COMMITTED — the release finds no hold yet and records the order released, while the
/// hold's insert, checking `released_orders` from a snapshot taken before that commit, goes in
/// anyway and stays held with no order (found by the load generator). Taken in sorted order.
pub async fn lock_order_holds(conn: &mut PgConnection, orders: &[Uuid]) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, k)
           FROM (SELECT DISTINCT hashtext(id::text) AS k FROM UNNEST($2::uuid[]) AS id
                  ORDER BY 1) AS keys",
    )
    .bind(ORDER_HOLD_LOCK)
    .bind(orders)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that these orders were released with no hold: a hold arriving for one later is
/// refused. The caller holds [`lock_order_holds`] for them.
pub async fn remember_released(conn: &mut PgConnection, orders: &[Uuid]) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO released_orders (order_id) SELECT * FROM UNNEST($1::uuid[])
         ON CONFLICT ON CONSTRAINT released_orders_pkey DO NOTHING",
    )
    .bind(orders)
    .execute(conn)
    .await?;
    Ok(())
}

/// Places a hold, or finds the one placed before under the same id (`false`: nothing new).
pub async fn place_hold(conn: &mut PgConnection, hold: &NewHold) -> Result<(HoldRow, bool)> {
    lock_order_holds(&mut *conn, &[hold.id]).await?;
    let inserted: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO holds (id, owner_id, asset, side, symbol, price, quantity, amount)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8
          WHERE NOT EXISTS (SELECT 1 FROM released_orders WHERE order_id = $1)
         ON CONFLICT ON CONSTRAINT holds_pkey DO NOTHING
         RETURNING {HOLD_COLUMNS}"
    )))
    .bind(hold.id)
    .bind(hold.owner)
    .bind(&hold.asset)
    .bind(hold.side.as_str())
    .bind(&hold.symbol)
    .bind(hold.price)
    .bind(hold.quantity)
    .bind(hold.amount)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| with_asset(e.into(), &hold.asset))?;
    if let Some(row) = inserted {
        sqlx::query(
            "UPDATE accounts SET available = available - $3, held = held + $3, updated_at = now()
              WHERE owner_id = $1 AND asset = $2",
        )
        .bind(hold.owner)
        .bind(&hold.asset)
        .bind(hold.amount)
        .execute(&mut *conn)
        .await
        .map_err(|e| with_asset(e.into(), &hold.asset))?;
        return Ok((row, true));
    }
    // Not inserted and not there: its order was released before this hold arrived.
    let existing = hold_by_id(&mut *conn, hold.id)
        .await?
        .ok_or(Error::OrderReleased(hold.id))?;
    if existing.same_terms(hold) {
        Ok((existing, false))
    } else {
        Err(Error::HoldConflict(hold.id))
    }
}

/// Places many new holds in one transaction: one insert, one update per account, one
/// commit. Any refusal in the batch — an account short of funds or missing, an id placed
/// before, the same id twice — fails it whole, and the caller places them one by one with
/// [`place_hold`] to give each its own answer.
pub async fn place_holds(pool: &PgPool, holds: &[NewHold]) -> Result<Vec<HoldRow>> {
    let ids: Vec<Uuid> = holds.iter().map(|h| h.id).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != ids.len() {
        return Err(Error::HoldConflict(ids[0]));
    }
    let mut per_account: std::collections::BTreeMap<(Uuid, &str), i64> =
        std::collections::BTreeMap::new();
    for hold in holds {
        let total = per_account.entry((hold.owner, &hold.asset)).or_default();
        *total = total
            .checked_add(hold.amount)
            .ok_or(crate::ledger::Overflow)?;
    }
    let owners: Vec<Uuid> = per_account.keys().map(|(o, _)| *o).collect();
    let assets: Vec<&str> = per_account.keys().map(|(_, a)| *a).collect();
    let mut tx = pool.begin().await?;
    // The order's lock first, then the accounts in the one order every multi-account writer
    // uses (the settling consumer's end-of-batch update too): no two transactions wait on each
    // other in a cycle, and the consumer holds account rows only for its last statement.
    lock_order_holds(&mut tx, &ids).await?;
    lock_accounts(&mut tx, &owners, &assets).await?;
    let inserted: Vec<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO holds (id, owner_id, asset, side, symbol, price, quantity, amount)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                              $6::int8[], $7::int8[], $8::int8[])
                AS n(id, owner_id, asset, side, symbol, price, quantity, amount)
          WHERE NOT EXISTS (SELECT 1 FROM released_orders r WHERE r.order_id = n.id)
         ON CONFLICT ON CONSTRAINT holds_pkey DO NOTHING
         RETURNING {HOLD_COLUMNS}"
    )))
    .bind(&ids)
    .bind(holds.iter().map(|h| h.owner).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.asset.as_str()).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.side.as_str()).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.symbol.as_str()).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.price).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.quantity).collect::<Vec<_>>())
    .bind(holds.iter().map(|h| h.amount).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() != holds.len() {
        return Err(Error::HoldConflict(ids[0]));
    }
    sqlx::query(
        "UPDATE accounts a
            SET available = a.available - d.amount, held = a.held + d.amount, updated_at = now()
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[]) AS d(owner, asset, amount)
          WHERE a.owner_id = d.owner AND a.asset = d.asset",
    )
    .bind(&owners)
    .bind(&assets)
    .bind(per_account.values().copied().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // In the order asked.
    let mut by_id: std::collections::HashMap<Uuid, HoldRow> =
        inserted.into_iter().map(|r| (r.id, r)).collect();
    ids.iter()
        .map(|id| by_id.remove(id).ok_or(Error::HoldConflict(*id)))
        .collect()
}

pub async fn hold_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<HoldRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// What releasing a hold did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// The rest went back to available; the hold is resolved.
    Resolved { amount: i64, status: HoldStatus },
    /// Resolved before (a redelivered or late event).
    AlreadyResolved,
    /// No hold has this id (an order placed before holds existed, or rejected before one).
    Unknown,
    /// Trades of the order are still to settle: `filled` of `expected` so far.
    Unsettled { filled: i64, expected: i64 },
}

/// Releases what is left of a hold once its order has ended with `filled` base units traded
/// (`None`: whatever has settled). Locks the hold row, so a concurrent release waits; the
/// balance change goes into `deltas`, for [`post_deltas`] before the commit.
pub async fn release_hold(
    conn: &mut PgConnection,
    id: Uuid,
    filled: Option<i64>,
    deltas: &mut Deltas,
) -> Result<Released> {
    let hold: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(hold) = hold else {
        return Ok(Released::Unknown);
    };
    if hold.status != HoldStatus::Pending {
        return Ok(Released::AlreadyResolved);
    }
    if let Some(expected) = filled
        && hold.filled != expected
    {
        return Ok(Released::Unsettled {
            filled: hold.filled,
            expected,
        });
    }
    let rest = hold.amount - hold.posted;
    let status = HoldStatus::resolved(hold.posted);
    sqlx::query("UPDATE holds SET released = $2, status = $3, resolved_at = now() WHERE id = $1")
        .bind(id)
        .bind(rest)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    deltas.add(
        hold.owner_id,
        &hold.asset,
        Delta {
            available: rest,
            held: -rest,
        },
    )?;
    Ok(Released::Resolved {
        amount: rest,
        status,
    })
}

/// A settled trade's record; `false` when it was settled before.
pub struct SettledTrade<'a> {
    pub trade: &'a crate::ledger::Trade,
    pub symbol: &'a str,
    pub notional: i64,
    pub buyer_fee: i64,
    pub seller_fee: i64,
    pub executed_at: OffsetDateTime,
}

/// Records settled trades in one statement; returns the ids recorded now (a trade settled
/// before is left out: its money moved then).
pub async fn record_settled(
    conn: &mut PgConnection,
    trades: &[SettledTrade<'_>],
) -> Result<HashSet<Uuid>> {
    if trades.is_empty() {
        return Ok(HashSet::new());
    }
    let column = |f: fn(&SettledTrade<'_>) -> i64| trades.iter().map(f).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO settled_trades (trade_id, symbol, buy_order_id, sell_order_id, buyer_id,
                                     seller_id, price, quantity, notional, buyer_fee, seller_fee, executed_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[],
                              $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::timestamptz[])
         ON CONFLICT ON CONSTRAINT settled_trades_pkey DO NOTHING
         RETURNING trade_id",
    )
    .bind(trades.iter().map(|s| s.trade.id).collect::<Vec<_>>())
    .bind(trades.iter().map(|s| s.symbol).collect::<Vec<_>>())
    .bind(trades.iter().map(|s| s.trade.buy_order).collect::<Vec<_>>())
    .bind(trades.iter().map(|s| s.trade.sell_order).collect::<Vec<_>>())
    .bind(trades.iter().map(|s| s.trade.buyer).collect::<Vec<_>>())
    .bind(trades.iter().map(|s| s.trade.seller).collect::<Vec<_>>())
    .bind(column(|s| s.trade.price))
    .bind(column(|s| s.trade.quantity))
    .bind(column(|s| s.notional))
    .bind(column(|s| s.buyer_fee))
    .bind(column(|s| s.seller_fee))
    .bind(trades.iter().map(|s| s.executed_at).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// These holds, locked for an update of everything but their key (`FOR NO KEY UPDATE`: the
/// transfers that reference a hold take only a key-share lock on it) in id order.
pub async fn holds_for_update(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, HoldRow>> {
    let rows: Vec<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}

/// A hold as a batch leaves it: what it has posted and filled, what went back to available,
/// its status, and whether its order reached the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldChange {
    pub id: Uuid,
    pub posted: i64,
    pub filled: i64,
    pub released: i64,
    pub status: HoldStatus,
    pub accepted: bool,
}

/// Writes a batch's holds, each once, whatever the batch did to it — accepted, posted out of,
/// released. A hold's every write is a new row version in every index (the partial indexes
/// read `status` and `accepted_at`), so a taker's hold, accepted, filled and released by one
/// batch, costs one version here instead of three. The rows are locked by
/// [`holds_for_update`] first; their balance changes go through [`post_deltas`].
pub async fn write_holds(conn: &mut PgConnection, changes: &[HoldChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE holds h
            SET posted = c.posted, filled = c.filled, released = c.released, status = c.status,
                resolved_at = CASE WHEN c.status = 'pending' THEN NULL ELSE now() END,
                accepted_at = CASE WHEN c.accepted THEN coalesce(h.accepted_at, now())
                                   ELSE h.accepted_at END
           FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::bool[])
             AS c(id, posted, filled, released, status, accepted)
          WHERE h.id = c.id",
    )
    .bind(changes.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.posted).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.filled).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.released).collect::<Vec<_>>())
    .bind(
        changes
            .iter()
            .map(|c| c.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(changes.iter().map(|c| c.accepted).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// An owner's balances, by asset.
pub async fn balances(pool: &PgPool, owner: Uuid) -> Result<Vec<(String, i16, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT a.asset, s.scale, a.available, a.held
           FROM accounts a JOIN assets s ON s.code = a.asset
          WHERE a.owner_id = $1 ORDER BY a.asset",
    )
    .bind(owner)
    .fetch_all(pool)
    .await?)
}

/// Every customer balance (available and held together) with the newest outbox position they
/// include: one `REPEATABLE READ` snapshot for both, so the position says exactly which of
/// settlement's events the balances reflect (ADR 0023).
pub async fn balance_snapshot(pool: &PgPool) -> Result<BalanceSnapshot> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let balances = sqlx::query_as::<_, (Uuid, String, i64)>(
        "SELECT owner_id, asset, available + held FROM accounts
          WHERE kind = 'customer' AND (available <> 0 OR held <> 0)",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(account_id, asset, balance)| AccountBalance {
        account_id,
        asset,
        balance,
    })
    .collect();
    let position = events::outbox::snapshot_position(&mut tx).await?;
    tx.commit().await?;
    Ok(BalanceSnapshot { position, balances })
}

/// Per symbol, the trades settled in `[from, to)` of their execution: (symbol, count, base
/// quantity) — reconciliation's side of the comparison with orders.
pub async fn settled_totals(
    pool: &PgPool,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT symbol, count(*), sum(quantity)::int8 FROM settled_trades
          WHERE executed_at >= $1 AND executed_at < $2 GROUP BY symbol ORDER BY symbol",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// One reconciliation query's findings: a row per discrepancy, described.
pub async fn discrepancies(pool: &PgPool, sql: &'static str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(sql).fetch_all(pool).await?)
}
