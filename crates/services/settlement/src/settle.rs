//! Settling what orders announces: trades by delivery versus payment, and the release of
//! what is left of a hold when its order ends.
//!
//! Runs as an [`events::Handler`] on the `orders` stream: each event's effect commits with its
//! inbox row in one transaction, so a redelivered event has no second effect and a crash
//! before the commit leaves nothing behind (REL-09).
//!
//! A batch's balance changes are summed per account and written last, right before its commit
//! ([`Handler::finish`]): the account rows that every trade and every new order's hold touch
//! are locked for one statement, not for the whole batch, and in the order the hold writer
//! locks them too.

use std::collections::HashMap;
use std::sync::Arc;

use contracts::Asset;
use contracts::events::{OrderAccepted, OrderEnded, TradeExecuted};
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;
use crate::ledger::{self, Deltas, Fees, Trade};
use crate::store::{self, Released, SettledTrade};

/// The orders stream's events settlement acts on; the consumer skips the rest unread.
pub const EVENT_TYPES: &[&str] = &[
    "OrderAccepted",
    "TradeExecuted",
    "OrderCompleted",
    "OrderCancelled",
    "OrderRejected",
];

pub struct Settler {
    fees: Fees,
    scales: Arc<HashMap<String, u32>>,
}

impl Settler {
    pub fn new(fees: Fees, assets: &[Asset]) -> Self {
        Self {
            fees,
            scales: Arc::new(assets.iter().map(|a| (a.code.clone(), a.scale)).collect()),
        }
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        deferred: &mut Deferred,
    ) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            "TradeExecuted" => self.trade(tx, event, &mut deferred.balances).await,
            // The order behind a hold reached the book (reconciliation looks for holds whose
            // order never did).
            "OrderAccepted" => {
                let accepted: OrderAccepted = event.payload_as()?;
                deferred.accepted.push(accepted.order_id);
                Ok(())
            }
            // An ended order releases what is left of its hold: everything filled
            // (completed), all but `remaining` (cancelled) or nothing (rejected after its hold).
            ended @ ("OrderCompleted" | "OrderCancelled" | "OrderRejected") => {
                let payload: OrderEnded = event.payload_as()?;
                let fill = match ended {
                    "OrderCompleted" => Fill::All,
                    "OrderCancelled" => Fill::AllBut(payload.remaining.unwrap_or(0)),
                    _ => Fill::None,
                };
                match payload.order_id {
                    Some(order) => release(tx, order, fill, &mut deferred.balances).await,
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    async fn trade(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        deltas: &mut Deltas,
    ) -> Result<(), HandlerError> {
        let executed: TradeExecuted = event.payload_as()?;
        let base_scale = *self.scales.get(&executed.base_asset).ok_or_else(|| {
            HandlerError::permanent(format!("unknown asset {}", executed.base_asset))
        })?;
        let buyer_is_taker = executed.taker_side == "buy";
        let (buyer, buy_order, seller, sell_order) = if buyer_is_taker {
            (
                executed.taker_account_id,
                executed.taker_order_id,
                executed.maker_account_id,
                executed.maker_order_id,
            )
        } else {
            (
                executed.maker_account_id,
                executed.maker_order_id,
                executed.taker_account_id,
                executed.taker_order_id,
            )
        };
        let trade = Trade {
            id: executed.trade_id,
            base_asset: executed.base_asset,
            quote_asset: executed.quote_asset,
            base_scale,
            price: executed.price,
            quantity: executed.quantity,
            buyer,
            seller,
            buy_order,
            sell_order,
            buyer_is_taker,
        };
        let settled = ledger::settle(&trade, self.fees).map_err(HandlerError::permanent)?;
        let fresh = store::record_settled(
            &mut *tx,
            &SettledTrade {
                trade: &trade,
                symbol: &executed.symbol,
                notional: settled.notional,
                buyer_fee: settled.buyer_fee,
                seller_fee: settled.seller_fee,
                executed_at: event.occurred_at,
            },
        )
        .await?;
        if !fresh {
            // Settled already (the inbox is per consumer; this guards the ledger itself).
            return Ok(());
        }
        store::write_plan(&mut *tx, &settled.plan, None, deltas)
            .await
            .map_err(|e| match e {
                Error::HoldNotPending(hold) => HandlerError::permanent(format!(
                    "trade {} posts to hold {hold}, which is not pending",
                    trade.id
                )),
                other => other.into(),
            })?;
        let notice = Envelope::new(
            crate::SERVICE,
            "TradeSettled",
            1,
            trade.id.to_string(),
            0,
            serde_json::json!({
                "trade_id": trade.id, "symbol": executed.symbol,
                "buyer_account_id": trade.buyer, "seller_account_id": trade.seller,
                "base_asset": trade.base_asset, "quote_asset": trade.quote_asset,
                "price": trade.price, "quantity": trade.quantity, "notional": settled.notional,
                "buyer_fee": settled.buyer_fee, "seller_fee": settled.seller_fee,
                "fee_asset": trade.quote_asset,
            }),
        )
        .caused_by(event);
        events::outbox::append(&mut *tx, crate::STREAM, &notice).await?;
        let finality = (OffsetDateTime::now_utc() - event.occurred_at).as_seconds_f64();
        metrics::histogram!("settlement_finality_seconds").record(finality.max(0.0));
        metrics::counter!("settlement_trades_settled_total").increment(1);
        Ok(())
    }
}

impl Handler for Settler {
    type Deferred = Deferred;

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.apply(tx, event, deferred))
    }

    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        deferred: Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            store::mark_accepted(&mut *tx, &deferred.accepted).await?;
            // Last: the account rows stay locked from here to the commit only.
            Ok(store::post_deltas(tx, &deferred.balances).await?)
        })
    }

    fn wants(&self, event_type: &str) -> bool {
        EVENT_TYPES.contains(&event_type)
    }
}

/// What a transaction's events leave to its end ([`Handler::finish`]): one statement each for
/// the whole batch instead of one per event.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Balance changes, summed per account.
    balances: Deltas,
    /// Orders that reached the book (their holds are marked accepted).
    accepted: Vec<Uuid>,
}

/// How much of an ended order traded, in base units.
enum Fill {
    All,
    AllBut(i64),
    None,
}

/// Releases the rest of an ended order's hold — once every trade of the order has settled.
/// If one has not (its event failed and waits for a retry), this fails too and is retried
/// later, so the hold is never released under a trade that still has to post from it.
async fn release(
    tx: &mut PgConnection,
    order: Uuid,
    fill: Fill,
    deltas: &mut Deltas,
) -> Result<(), HandlerError> {
    // Before looking: a hold being placed for this order right now is then either seen here or
    // refused there, never neither.
    store::lock_order_holds(&mut *tx, &[order]).await?;
    let hold = store::hold_by_id(&mut *tx, order).await?;
    let Some(hold) = hold else {
        // Nothing held yet — a late hold request may still be on its way (orders gave up on
        // the order when the call timed out): it must find the order released.
        store::remember_released(&mut *tx, order).await?;
        return Ok(());
    };
    let expected = match fill {
        Fill::All => hold.quantity,
        Fill::AllBut(remaining) => hold.quantity - remaining,
        Fill::None => 0,
    };
    match store::release_hold(&mut *tx, order, Some(expected), deltas).await? {
        Released::Resolved { amount, status } => {
            tracing::debug!(%order, amount, %status, "hold resolved");
            metrics::counter!("settlement_holds_resolved_total", "status" => status).increment(1);
            Ok(())
        }
        Released::AlreadyResolved | Released::Unknown => Ok(()),
        // Permanent as it stands, but only until the trade settles: the entry is tried again
        // (a few times) before it is dead-lettered.
        Released::Unsettled { filled, expected } => Err(HandlerError::permanent(format!(
            "order {order} ended with {expected} filled but {filled} has settled; retrying later"
        ))),
    }
}
