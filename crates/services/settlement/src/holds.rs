//! Holds: funds reserved for an order before it may match (TRD-06).
//!
//! Orders asks for one per order, keyed by the order id, so a retried request (a timeout,
//! the resilience client's retry) finds the hold it already placed instead of reserving twice.
//! The amount is settlement's to compute — it knows the fees — from what the order could cost.

use contracts::{Asset, format_units};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ledger::{self, EXTERNAL, FEES, Fees, Side};
use crate::store::{self, HoldRow, NewHold};

/// `POST /internal/v1/holds`. Prices and quantities are integer minor units, as in events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The order's id: the hold's id.
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub base_asset: String,
    pub quote_asset: String,
    /// Quote minor units per whole base unit: the limit price, or for a market buy the
    /// highest price the collar allows.
    pub price: i64,
    /// Base minor units.
    pub quantity: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HoldView {
    pub id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    /// Decimal string at the asset's scale.
    pub amount: String,
    /// `pending`, `posted` or `voided`.
    pub status: String,
}

impl HoldView {
    fn new(row: &HoldRow, scale: u32) -> Self {
        Self {
            id: row.id,
            account_id: row.owner_id,
            asset: row.asset.clone(),
            amount: format_units(row.amount, scale),
            status: row.status.clone(),
        }
    }
}

/// Places the hold (`true`) or finds the same one placed before (`false`). Not enough
/// available → [`Error::InsufficientFunds`]; the same id with other terms → 409.
#[tracing::instrument(skip_all, fields(order_id = %request.order_id))]
pub async fn place(
    pool: &PgPool,
    assets: &[Asset],
    fees: Fees,
    request: &HoldRequest,
) -> Result<(HoldView, bool)> {
    let scale_of = |code: &str, field: &str| {
        assets
            .iter()
            .find(|a| a.code == code)
            .map(|a| a.scale)
            .ok_or_else(|| Error::field(field, format!("unknown asset {code:?}")))
    };
    let base_scale = scale_of(&request.base_asset, "base_asset")?;
    let quote_scale = scale_of(&request.quote_asset, "quote_asset")?;
    if request.price <= 0 {
        return Err(Error::field("price", "must be positive"));
    }
    if request.quantity <= 0 {
        return Err(Error::field("quantity", "must be positive"));
    }
    if request.account_id == EXTERNAL || request.account_id == FEES {
        return Err(Error::field("account_id", "is a system account"));
    }
    let amount = ledger::hold_amount(
        request.side,
        request.price,
        request.quantity,
        base_scale,
        fees,
    )?;
    let (asset, scale) = match request.side {
        Side::Buy => (&request.quote_asset, quote_scale),
        Side::Sell => (&request.base_asset, base_scale),
    };
    let hold = NewHold {
        id: request.order_id,
        owner: request.account_id,
        asset: asset.clone(),
        side: request.side,
        symbol: request.symbol.clone(),
        price: request.price,
        quantity: request.quantity,
        amount,
    };
    let mut tx = pool.begin().await?;
    let (row, placed) = store::place_hold(&mut tx, &hold).await?;
    tx.commit().await?;
    if placed {
        metrics::counter!("settlement_holds_placed_total").increment(1);
    }
    Ok((HoldView::new(&row, scale), placed))
}

/// Releases a hold whose order never reached the book (orders failed after holding); a hold
/// that already posted something is left to the order's events.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn void(pool: &PgPool, id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    match store::release_hold(&mut tx, id, Some(0)).await? {
        store::Released::Unknown => return Err(Error::NotFound),
        store::Released::Unsettled { .. } => return Err(Error::HoldNotPending(id)),
        store::Released::Resolved { .. } | store::Released::AlreadyResolved => {}
    }
    tx.commit().await?;
    Ok(())
}
