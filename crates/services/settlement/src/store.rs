//! All of settlement's SQL.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ledger::{Deltas, EXTERNAL, FEES, Plan};
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
/// write at the end of the transaction.
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
        .filter(|(_, d)| **d > 0)
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
    // does not conflict with another batch's no-key-update locks.
    let t = &plan.transfers;
    sqlx::query(
        "INSERT INTO transfers (id, asset, debit_owner_id, credit_owner_id, amount, kind, trade_id, created_by)
         SELECT id, asset, debit, credit, amount, kind, trade, $8
           FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int8[], $6::text[], $7::uuid[])
             AS t(id, asset, debit, credit, amount, kind, trade)",
    )
    .bind(t.iter().map(|t| t.id).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.asset.as_str()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.debit).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.credit).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.amount).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.trade).collect::<Vec<_>>())
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes gathered balance changes: locks the accounts in (owner, asset) order — the order
/// every writer locks in, so two never wait on each other in a cycle — then one update for
/// all. Meant as the last statements before the commit: the rows every trade touches stay
/// locked only from here to the commit. An account that would go negative, or a change to an
/// account that does not exist, fails it with [`Error::InsufficientFunds`].
pub async fn post_deltas(conn: &mut PgConnection, deltas: &Deltas) -> Result<()> {
    let mut owners = Vec::new();
    let mut assets = Vec::new();
    let mut available = Vec::new();
    for (owner, asset, change) in deltas.changes() {
        owners.push(owner);
        assets.push(asset);
        available.push(change);
    }
    if owners.is_empty() {
        return Ok(());
    }
    lock_accounts(&mut *conn, &owners, &assets).await?;
    let updated = sqlx::query(
        "UPDATE accounts a
            SET available = a.available + d.available, updated_at = now()
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[]) AS d(owner, asset, available)
          WHERE a.owner_id = d.owner AND a.asset = d.asset",
    )
    .bind(&owners)
    .bind(&assets)
    .bind(&available)
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
/// — transfers — free to proceed).
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
/// before is left out: its money moved then). A plain insert of the trades not found rather than
/// `ON CONFLICT DO NOTHING`, which writes one more WAL record per row (docs/performance.md,
/// "Inserts that are not speculative"): the consumer's inbox row, claimed first in the same
/// transaction, keeps a second consumer of the same event from getting this far at once, and
/// the key would still refuse it.
pub async fn record_settled(
    conn: &mut PgConnection,
    trades: &[SettledTrade<'_>],
) -> Result<HashSet<Uuid>> {
    if trades.is_empty() {
        return Ok(HashSet::new());
    }
    // Each trade once: the relay may publish a trade's event again under a new id, and both
    // copies can share a batch (a plain insert of both would fail on the second).
    let mut distinct = HashSet::with_capacity(trades.len());
    let trades: Vec<&SettledTrade<'_>> = trades
        .iter()
        .filter(|t| distinct.insert(t.trade.id))
        .collect();
    let column =
        |f: fn(&SettledTrade<'_>) -> i64| trades.iter().map(|t| f(t)).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO settled_trades (trade_id, symbol, buy_order_id, sell_order_id, buyer_id,
                                     seller_id, price, quantity, notional, buyer_fee, seller_fee, executed_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[],
                              $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::timestamptz[])
                        AS t(trade_id)
          WHERE NOT EXISTS (SELECT 1 FROM settled_trades s WHERE s.trade_id = t.trade_id)
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

/// Every customer balance (`available`: the ledger holds nothing, ADR 0023) with the newest outbox position they
/// include: one `REPEATABLE READ` snapshot for both, so the position says exactly which of
/// settlement's events the balances reflect (ADR 0023).
pub async fn balance_snapshot(pool: &PgPool) -> Result<BalanceSnapshot> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let balances = sqlx::query_as::<_, (Uuid, String, i64)>(
        "SELECT owner_id, asset, available FROM accounts
          WHERE kind = 'customer' AND available <> 0",
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
