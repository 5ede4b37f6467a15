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
use crate::ledger::{self, Deltas, EXTERNAL, FEES, Fees, Side};
use crate::store::{self, HoldRow, NewHold};
use tokio::sync::{mpsc, oneshot};

/// Where a hold is in its life: `pending` while its order may still trade, then resolved
/// exactly once — `posted` (something traded out of it) or `voided` (nothing did). Stored as
/// text; the table's check constraint allows these three and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
}

impl HoldStatus {
    /// How a hold resolves when its order ends having posted `posted` out of it.
    pub fn resolved(posted: i64) -> Self {
        if posted > 0 {
            HoldStatus::Posted
        } else {
            HoldStatus::Voided
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
        }
    }
}

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
    pub status: HoldStatus,
}

impl HoldView {
    fn new(row: &HoldRow, scale: u32) -> Self {
        Self {
            id: row.id,
            account_id: row.owner_id,
            asset: row.asset.clone(),
            amount: format_units(row.amount, scale),
            status: row.status,
        }
    }
}

/// Most holds wait for a batch at most this big.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(HoldRow, bool)>>;

/// The hold writer: one task places the holds that arrive together in one transaction (group
/// commit), so a busy account's row is locked and its WAL flushed once per batch rather than
/// once per order — the reason orders' hot path is not bound by one fsync per order.
#[derive(Clone)]
pub struct Holds {
    jobs: mpsc::Sender<(NewHold, Reply)>,
}

impl Holds {
    /// The writer runs until the last `Holds` is dropped (the server has drained), so a
    /// shutdown never fails a hold that was already asked for. Settlement cannot place holds
    /// without it, and its queue cannot be handed to another: it is essential.
    pub fn start(pool: PgPool, tasks: &service_kit::Supervisor) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        tasks.spawn_essential("hold writer", |_| write_holds(pool, receiver));
        Self { jobs }
    }

    async fn place(&self, hold: NewHold) -> Result<(HoldRow, bool)> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((hold, reply))
            .await
            .map_err(|_| Error::Internal("the hold writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the hold writer dropped a hold".to_owned()))?
    }
}

async fn write_holds(pool: PgPool, mut jobs: mpsc::Receiver<(NewHold, Reply)>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("settlement_hold_batch_size").record(batch.len() as f64);
        let holds: Vec<NewHold> = batch.iter().map(|(h, _)| h.clone()).collect();
        match store::place_holds(&pool, &holds).await {
            Ok(rows) => {
                for ((_, reply), row) in batch.into_iter().zip(rows) {
                    let _ = reply.send(Ok((row, true)));
                }
            }
            // Someone is short, or a retry: each gets its own transaction and answer.
            Err(_) => {
                for (hold, reply) in batch {
                    let _ = reply.send(place_one(&pool, &hold).await);
                }
            }
        }
    }
}

async fn place_one(pool: &PgPool, hold: &NewHold) -> Result<(HoldRow, bool)> {
    let mut tx = pool.begin().await?;
    let placed = store::place_hold(&mut tx, hold).await?;
    tx.commit().await?;
    Ok(placed)
}

/// Places the hold (`true`) or finds the same one placed before (`false`). Not enough
/// available → [`Error::InsufficientFunds`]; the same id with other terms → 409.
#[tracing::instrument(skip_all, fields(order_id = %request.order_id))]
pub async fn place(
    holds: &Holds,
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
    let (row, placed) = holds.place(hold).await?;
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
    store::lock_order_holds(&mut tx, &[id]).await?;
    let mut deltas = Deltas::default();
    match store::release_hold(&mut tx, id, Some(0), &mut deltas).await? {
        store::Released::Unknown => {
            // The hold may still be on its way: it must find the order released.
            store::remember_released(&mut tx, &[id]).await?;
            tx.commit().await?;
            return Err(Error::NotFound);
        }
        store::Released::Unsettled { .. } => return Err(Error::HoldNotPending(id)),
        store::Released::Resolved { .. } | store::Released::AlreadyResolved => {}
    }
    store::post_deltas(&mut tx, &deltas).await?;
    tx.commit().await?;
    Ok(())
}
