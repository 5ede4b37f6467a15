//! Settling the trades orders announces, by delivery versus payment.
//!
//! Runs as an [`events::Handler`] on the `orders` stream: each event's effect commits with its
//! inbox row in one transaction, so a redelivered event has no second effect and a crash
//! before the commit leaves nothing behind (REL-09).
//!
//! Set-based: [`Handler::handle`] only reads an event into the transaction's [`Deferred`]; the
//! batch is written in [`Handler::finish`] with one statement per kind of write — its trades
//! recorded, their transfers, their `TradeSettled` notices — and the balances last: summed per
//! account and locked in (owner, asset) order, so the account rows every trade touches are
//! locked for one statement, not for the whole batch.
//!
//! Only `TradeExecuted` is read. Since ADR 0023 slice 3b the ledger holds nothing for open
//! orders: risk reserved what a trade takes before its order could match, so an order's
//! acceptance and end move no money here, and those events are acknowledged unread. The
//! ledger's non-negative balances are the backstop: a trade it cannot post fails and, after its
//! retries, is dead-lettered (and alerted on).

use std::collections::HashMap;
use std::sync::Arc;

use contracts::Asset;
use contracts::Side;
use contracts::events::{Event, TradeExecuted, TradeSettled};
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ledger::{self, Deltas, Fees, Plan, Settlement, Trade};
use crate::store::{self, SettledTrade};

/// The orders stream's events settlement acts on; the consumer skips the rest unread.
pub const EVENT_TYPES: &[&str] = &[TradeExecuted::TYPE];

pub struct Settler {
    fees: Fees,
    scales: Arc<HashMap<String, u32>>,
}

/// What a transaction's events leave to its end ([`Handler::finish`]), in stream order.
#[derive(Debug, Default)]
pub struct Deferred {
    trades: Vec<Settling>,
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
        if event.event_type == TradeExecuted::TYPE {
            deferred.trades.push(self.trade(event)?);
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

    /// Writes the batch: trades and their transfers, then the balances.
    async fn write(&self, tx: &mut PgConnection, batch: Deferred) -> Result<(), HandlerError> {
        let mut balances = Deltas::default();
        let settled = settle_trades(&mut *tx, &batch.trades, &mut balances).await?;
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
/// all of them, their notices in one append. Returns the trades settled now.
async fn settle_trades<'t>(
    tx: &mut PgConnection,
    trades: &'t [Settling],
    balances: &mut Deltas,
) -> Result<Vec<&'t Settling>, HandlerError> {
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
        plan.merge(&trade.settled.plan);
    }
    store::write_plan(&mut *tx, &plan, None, balances).await?;
    let notices: Vec<Envelope> = settling.iter().map(|t| t.notice.clone()).collect();
    events::outbox::append_all(&mut *tx, crate::STREAM, &notices).await?;
    Ok(settling)
}
