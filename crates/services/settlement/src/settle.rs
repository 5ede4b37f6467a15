//! Settling what orders announces: trades by delivery versus payment, and the release of
//! what is left of a hold when its order ends.
//!
//! Runs as an [`events::Handler`] on the `orders` stream: each event's effect commits with its
//! inbox row in one transaction, so a redelivered event has no second effect and a crash
//! before the commit leaves nothing behind (REL-09).
//!
//! Set-based: [`Handler::handle`] only reads an event into the transaction's [`Deferred`]; the
//! batch is written in [`Handler::finish`] with one statement per kind of write — its trades
//! recorded, their transfers, their posts out of holds, their `TradeSettled` notices, the
//! holds of accepted orders marked, the holds of ended orders released — and the balances
//! last: summed per account and locked in the order the hold writer locks in too, so the
//! account rows every trade and every new order's hold touch are locked for one statement, not
//! for the whole batch. Trades are written before releases: an order's trades precede its end
//! on the stream, so a release sees every post of the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use contracts::Asset;
use contracts::Side;
use contracts::events::{
    Ending, Event, OrderAccepted, OrderCancelled, OrderCompleted, OrderEnded, OrderRejected,
    TradeExecuted, TradeSettled,
};
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::holds::HoldStatus;
use crate::ledger::{self, Delta, Deltas, Fees, Plan, Settlement, Trade};
use crate::store::{self, HoldChange, SettledTrade};

/// The orders stream's events settlement acts on; the consumer skips the rest unread.
pub const EVENT_TYPES: &[&str] = &[
    OrderAccepted::TYPE,
    TradeExecuted::TYPE,
    OrderCompleted::TYPE,
    OrderCancelled::TYPE,
    OrderRejected::TYPE,
];

pub struct Settler {
    fees: Fees,
    scales: Arc<HashMap<String, u32>>,
}

/// What a transaction's events leave to its end ([`Handler::finish`]), in stream order.
#[derive(Debug, Default)]
pub struct Deferred {
    trades: Vec<Settling>,
    /// Orders that reached the book (their holds are marked accepted).
    accepted: Vec<Uuid>,
    /// Orders that ended, and how.
    ended: Vec<OrderEnded>,
}

/// A trade read from its event, with what settling it moves.
#[derive(Debug)]
struct Settling {
    trade: Trade,
    symbol: String,
    settled: Settlement,
    executed_at: OffsetDateTime,
    /// `TradeSettled`, caused by the trade's event (its correlation and trace go on).
    notice: Envelope,
}

impl Settler {
    pub fn new(fees: Fees, assets: &[Asset]) -> Self {
        Self {
            fees,
            scales: Arc::new(assets.iter().map(|a| (a.code.clone(), a.scale)).collect()),
        }
    }

    /// Reads an event into the batch; nothing is written yet.
    fn read(&self, event: &Envelope, deferred: &mut Deferred) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            TradeExecuted::TYPE => deferred.trades.push(self.trade(event)?),
            // The order behind a hold reached the book (reconciliation looks for holds whose
            // order never did).
            OrderAccepted::TYPE => {
                let accepted: OrderAccepted = event.decode()?;
                deferred.accepted.push(accepted.order_id);
            }
            // An ended order releases what is left of its hold.
            OrderCompleted::TYPE => {
                let ended = OrderEnded::from(event.decode::<OrderCompleted>()?);
                deferred.ended.push(ended);
            }
            OrderCancelled::TYPE => {
                let ended = OrderEnded::from(event.decode::<OrderCancelled>()?);
                deferred.ended.push(ended);
            }
            OrderRejected::TYPE => {
                if let Some(ended) = event.decode::<OrderRejected>()?.ended() {
                    deferred.ended.push(ended);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn trade(&self, event: &Envelope) -> Result<Settling, HandlerError> {
        let executed: TradeExecuted = event.decode()?;
        let base_scale = *self.scales.get(&executed.base_asset).ok_or_else(|| {
            HandlerError::permanent(format!("unknown asset {}", executed.base_asset))
        })?;
        let buyer_is_taker = executed.taker_side == Side::Buy;
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
        let notice = Envelope::of(
            crate::SERVICE,
            trade.id.to_string(),
            0,
            &TradeSettled {
                trade_id: trade.id,
                symbol: executed.symbol.clone(),
                buyer_account_id: trade.buyer,
                seller_account_id: trade.seller,
                base_asset: trade.base_asset.clone(),
                quote_asset: trade.quote_asset.clone(),
                price: trade.price,
                quantity: trade.quantity,
                notional: settled.notional,
                buyer_fee: settled.buyer_fee,
                seller_fee: settled.seller_fee,
                fee_asset: trade.quote_asset.clone(),
            },
        )?
        .caused_by(event);
        Ok(Settling {
            trade,
            symbol: executed.symbol,
            settled,
            executed_at: event.occurred_at,
            notice,
        })
    }

    /// Writes the batch: trades and their transfers, then every hold it touches (once
    /// each), then the balances.
    async fn write(&self, tx: &mut PgConnection, batch: Deferred) -> Result<(), HandlerError> {
        let mut balances = Deltas::default();
        let (settled, plan) = settle_trades(&mut *tx, &batch.trades, &mut balances).await?;
        write_holds(
            &mut *tx,
            &plan,
            &batch.accepted,
            &batch.ended,
            &mut balances,
        )
        .await?;
        // Last: the account rows stay locked from here to the commit only.
        store::post_deltas(&mut *tx, &balances).await?;
        let now = OffsetDateTime::now_utc();
        for trade in &settled {
            let finality = (now - trade.executed_at).as_seconds_f64();
            metrics::histogram!("settlement_finality_seconds").record(finality.max(0.0));
        }
        metrics::counter!("settlement_trades_settled_total").increment(settled.len() as u64);
        Ok(())
    }
}

impl Handler for Settler {
    type Deferred = Deferred;

    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        event: &'a Envelope,
        deferred: &'a mut Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(std::future::ready(self.read(event, deferred)))
    }

    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        deferred: Deferred,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.write(tx, deferred))
    }

    fn wants(&self, event_type: &str) -> bool {
        EVENT_TYPES.contains(&event_type)
    }
}

/// Records the batch's trades and moves the money of those not settled before: one plan for
/// all of them, their notices in one append. Returns the trades settled now and their plan,
/// whose posts out of holds [`write_holds`] writes.
async fn settle_trades<'t>(
    tx: &mut PgConnection,
    trades: &'t [Settling],
    balances: &mut Deltas,
) -> Result<(Vec<&'t Settling>, Plan), HandlerError> {
    let records: Vec<SettledTrade<'_>> = trades
        .iter()
        .map(|t| SettledTrade {
            trade: &t.trade,
            symbol: &t.symbol,
            notional: t.settled.notional,
            buyer_fee: t.settled.buyer_fee,
            seller_fee: t.settled.seller_fee,
            executed_at: t.executed_at,
        })
        .collect();
    // Recorded now, each once (the settled_trades key guards the ledger itself; the inbox is
    // per consumer).
    let mut fresh = store::record_settled(&mut *tx, &records).await?;
    let settling: Vec<&Settling> = trades
        .iter()
        .filter(|t| fresh.remove(&t.trade.id))
        .collect();
    let mut plan = Plan::default();
    for trade in &settling {
        plan.merge(&trade.settled.plan)
            .map_err(HandlerError::permanent)?;
    }
    store::write_plan(&mut *tx, &plan, None, balances).await?;
    let notices: Vec<Envelope> = settling.iter().map(|t| t.notice.clone()).collect();
    events::outbox::append_all(&mut *tx, crate::STREAM, &notices).await?;
    Ok((settling, plan))
}

/// Everything the batch does to holds, in stream order — the trades' posts, the orders that
/// reached the book, the orders that ended — worked out in memory on the locked rows and
/// written with one statement, each hold once.
///
/// An ended order's hold is released only once every trade of the order has settled. If one
/// has not (its event failed and waits for a retry), this fails too and is retried later, so
/// a hold is never released under a trade that still has to post from it.
async fn write_holds(
    tx: &mut PgConnection,
    plan: &Plan,
    accepted: &[Uuid],
    ended: &[OrderEnded],
    balances: &mut Deltas,
) -> Result<(), HandlerError> {
    let mut ids: Vec<Uuid> = plan.hold_posts.keys().copied().collect();
    ids.extend(accepted);
    ids.extend(ended.iter().map(|e| e.order_id));
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    if !ended.is_empty() {
        // Before looking: a hold being placed for an ending order right now is then either
        // seen here or refused there, never neither.
        let orders: Vec<Uuid> = ended.iter().map(|e| e.order_id).collect();
        store::lock_order_holds(&mut *tx, &orders).await?;
    }
    let mut holds = store::holds_for_update(&mut *tx, &ids).await?;
    // The holds the batch changes (in id order, the order they were locked in), and whether
    // each one's order reached the book.
    let mut changed: BTreeMap<Uuid, bool> = BTreeMap::new();
    for (id, (posted, filled)) in &plan.hold_posts {
        let hold = holds
            .get_mut(id)
            .filter(|hold| hold.status == HoldStatus::Pending)
            .ok_or_else(|| {
                HandlerError::permanent(format!("a trade posts to hold {id}, which is not pending"))
            })?;
        hold.posted = hold.posted.checked_add(*posted).ok_or_else(overflow)?;
        hold.filled = hold.filled.checked_add(*filled).ok_or_else(overflow)?;
        changed.entry(*id).or_default();
    }
    // The order behind a hold reached the book (reconciliation looks for holds whose order
    // never did); an order without a hold has nothing to record.
    for id in accepted {
        if holds
            .get(id)
            .is_some_and(|hold| hold.status == HoldStatus::Pending)
        {
            changed.insert(*id, true);
        }
    }
    let mut unheld = Vec::new();
    for &OrderEnded {
        order_id: order,
        how,
        ..
    } in ended
    {
        let Some(hold) = holds.get_mut(&order) else {
            // Nothing held yet — a late hold request may still be on its way (orders gave up
            // on the order when the call timed out): it must find the order released.
            unheld.push(order);
            continue;
        };
        if hold.status != HoldStatus::Pending {
            continue; // Resolved before (a redelivered or late event, or twice in the batch).
        }
        // Base units the order traded: everything (completed), all but what was left
        // (cancelled), nothing (rejected after its hold).
        let expected = match how {
            Ending::Completed => hold.quantity,
            Ending::Cancelled { remaining } => {
                hold.quantity.checked_sub(remaining).ok_or_else(overflow)?
            }
            Ending::Rejected => 0,
        };
        if hold.filled != expected {
            // Permanent as it stands, but only until the trade settles: the entry is tried
            // again (a few times) before it is dead-lettered.
            return Err(HandlerError::permanent(format!(
                "order {order} ended with {expected} filled but {} has settled; retrying later",
                hold.filled
            )));
        }
        let rest = hold.amount - hold.posted;
        let status = HoldStatus::resolved(hold.posted);
        balances
            .add(
                hold.owner_id,
                &hold.asset,
                Delta {
                    available: rest,
                    held: -rest,
                },
            )
            .map_err(HandlerError::permanent)?;
        metrics::counter!("settlement_holds_resolved_total", "status" => status.as_str())
            .increment(1);
        hold.released = rest;
        hold.status = status;
        changed.entry(order).or_default();
    }
    let changes: Vec<HoldChange> = changed
        .iter()
        .filter_map(|(id, accepted)| holds.get(id).map(|hold| (hold, *accepted)))
        .map(|(hold, accepted)| HoldChange {
            id: hold.id,
            posted: hold.posted,
            filled: hold.filled,
            released: hold.released,
            status: hold.status,
            accepted,
        })
        .collect();
    store::write_holds(&mut *tx, &changes).await?;
    store::remember_released(&mut *tx, &unheld).await?;
    Ok(())
}

fn overflow() -> HandlerError {
    HandlerError::permanent(crate::ledger::Overflow)
}
