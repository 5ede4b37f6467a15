//! The orders-stream consumer: open orders, fills, positions and last prices, projected into
//! risk's tables with each event's inbox row, then into memory once committed (REL-09).
//! A fill that takes a position beyond its limit emits `RiskLimitBreached` (TRD-12).
//!
//! Set-based, as settlement's consumer (ADR 0015): [`Handler::handle`] only reads an event into
//! the transaction's [`Deferred`]; [`Handler::finish`] loads the open orders and positions the
//! batch touches (positions locked, in key order), applies the events to them in memory in
//! stream order, and writes each table with one statement — instead of ~3 statements per order
//! and ~7 per trade.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use contracts::checks::RiskStart;
use contracts::events::{
    Event, OrderAccepted, OrderCancelled, OrderCompleted, OrderRejected, RiskLimitBreached,
    StreamMarked, TradeExecuted,
};
use contracts::fees::Fees;
use contracts::funds::RiskFence;
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::book::{Book, Change};
use crate::funds::{Debit, Held};
use crate::positions::{Position, Side};
use crate::store::{self, OpenOrder, PositionKey, PositionRow, TradeDebits};

pub const EVENT_TYPES: &[&str] = &[
    OrderAccepted::TYPE,
    TradeExecuted::TYPE,
    OrderCompleted::TYPE,
    OrderCancelled::TYPE,
    OrderRejected::TYPE,
    StreamMarked::TYPE,
];

pub struct Projector {
    book: Arc<Mutex<Book>>,
    scales: HashMap<String, u32>,
    /// What each side of a fill pays, as settlement books it.
    fees: Fees,
    /// What each event being applied changed, kept until its transaction commits.
    pending: Mutex<HashMap<Uuid, Vec<Change>>>,
}

/// A transaction's events, read and not yet written, in stream order.
#[derive(Debug, Default)]
pub struct Deferred {
    events: Vec<Read>,
}

#[derive(Debug)]
enum Read {
    Accepted {
        event: Uuid,
        order: OpenOrder,
    },
    Ended {
        event: Uuid,
        order: Uuid,
    },
    Trade(Box<Trade>),
    /// A mark some start of risk asked orders for; nothing to write.
    Mark {
        event: Uuid,
        mark: Uuid,
    },
}

#[derive(Debug)]
struct Trade {
    /// The event, which a breach notice is caused by.
    cause: Envelope,
    executed: TradeExecuted,
    base_scale: u32,
    taker_side: Side,
    /// What each side pays once it settles, the buyer's first.
    debits: [Debit; 2],
}

impl Projector {
    pub fn new(book: Arc<Mutex<Book>>, assets: &[contracts::Asset], fees: Fees) -> Self {
        Self {
            book,
            scales: assets.iter().map(|a| (a.code.clone(), a.scale)).collect(),
            fees,
            pending: Mutex::default(),
        }
    }

    /// What an accepted order's funds reserve (ADR 0023): at its limit or protection price,
    /// in the asset it pays with, as its check reserved. None for a market order accepted
    /// before events carried its protection price (it reserved nothing), or one that overflows
    /// (its check refused it).
    fn reservation(&self, accepted: &OrderAccepted) -> Option<Held> {
        let price = accepted.price.or(accepted.protection_price)?;
        let base_scale = *self.scales.get(&accepted.base_asset)?;
        let amount = contracts::fees::hold_amount(
            accepted.side,
            price,
            accepted.quantity,
            base_scale,
            self.fees,
        )?;
        let asset = match accepted.side {
            Side::Buy => &accepted.quote_asset,
            Side::Sell => &accepted.base_asset,
        };
        Some(Held {
            asset: asset.clone(),
            amount,
        })
    }

    /// What each side of the trade will pay once it settles (ADR 0023): the buyer the notional
    /// and their fee, the seller the quantity. The buyer's first.
    fn debits(&self, t: &TradeExecuted, base_scale: u32) -> Result<[Debit; 2], HandlerError> {
        let (buy, sell) = match t.taker_side {
            Side::Buy => (
                (t.taker_order_id, t.taker_account_id),
                (t.maker_order_id, t.maker_account_id),
            ),
            Side::Sell => (
                (t.maker_order_id, t.maker_account_id),
                (t.taker_order_id, t.taker_account_id),
            ),
        };
        let buyer_is_maker = t.taker_side == Side::Sell;
        let paid = contracts::fees::notional(t.price, t.quantity, base_scale)
            .and_then(|notional| contracts::fees::buyer_pays(notional, buyer_is_maker, self.fees))
            .ok_or_else(|| HandlerError::permanent(format!("trade {} overflows", t.trade_id)))?;
        Ok([
            Debit {
                order: buy.0,
                account: buy.1,
                asset: t.quote_asset.clone(),
                amount: paid,
            },
            Debit {
                order: sell.0,
                account: sell.1,
                asset: t.base_asset.clone(),
                amount: t.quantity,
            },
        ])
    }

    fn read(&self, event: &Envelope, deferred: &mut Deferred) -> Result<(), HandlerError> {
        let read = match event.event_type.as_str() {
            OrderAccepted::TYPE => {
                let accepted: OrderAccepted = event.decode()?;
                let reserved = self.reservation(&accepted);
                Read::Accepted {
                    event: event.id,
                    order: OpenOrder {
                        order: accepted.order_id,
                        account: accepted.account_id,
                        side: accepted.side,
                        symbol: accepted.symbol,
                        remaining: accepted.quantity,
                        reserved,
                    },
                }
            }
            OrderCompleted::TYPE => Read::Ended {
                event: event.id,
                order: event.decode::<OrderCompleted>()?.order_id,
            },
            OrderCancelled::TYPE => Read::Ended {
                event: event.id,
                order: event.decode::<OrderCancelled>()?.order_id,
            },
            // A request refused before its order had an id ended nothing.
            OrderRejected::TYPE => match event.decode::<OrderRejected>()?.order_id {
                Some(order) => Read::Ended {
                    event: event.id,
                    order,
                },
                None => return Ok(()),
            },
            StreamMarked::TYPE => Read::Mark {
                event: event.id,
                mark: event.decode::<StreamMarked>()?.mark_id,
            },
            TradeExecuted::TYPE => {
                let executed: TradeExecuted = event.decode()?;
                let base_scale = *self.scales.get(&executed.base_asset).ok_or_else(|| {
                    HandlerError::permanent(format!("unknown asset {}", executed.base_asset))
                })?;
                let taker_side = executed.taker_side;
                let debits = self.debits(&executed, base_scale)?;
                Read::Trade(Box::new(Trade {
                    cause: event.clone(),
                    executed,
                    base_scale,
                    taker_side,
                    debits,
                }))
            }
            _ => return Ok(()),
        };
        deferred.events.push(read);
        Ok(())
    }

    /// Applies the batch to what it touches, in memory and in stream order, then writes it.
    async fn write(&self, tx: &mut PgConnection, batch: Deferred) -> Result<(), HandlerError> {
        let mut touched_orders = Vec::new();
        let mut touched_positions: Vec<PositionKey> = Vec::new();
        for read in &batch.events {
            match read {
                Read::Accepted { order, .. } => touched_orders.push(order.order),
                Read::Ended { order, .. } => touched_orders.push(*order),
                Read::Mark { .. } => {}
                Read::Trade(trade) => {
                    let t = &trade.executed;
                    touched_orders.extend([t.maker_order_id, t.taker_order_id]);
                    touched_positions.extend([
                        (t.maker_account_id, t.symbol.clone()),
                        (t.taker_account_id, t.symbol.clone()),
                    ]);
                }
            }
        }
        touched_positions.sort();
        touched_positions.dedup();
        // An acceptance delivered after its order's end (a redelivery, a replayed dead letter)
        // must not open it again: its funds would stay committed for good.
        let accepted: Vec<Uuid> = batch
            .events
            .iter()
            .filter_map(|read| match read {
                Read::Accepted { order, .. } => Some(order.order),
                _ => None,
            })
            .collect();
        let mut ended_so_far = store::ended_among(&mut *tx, &accepted).await?;
        let mut ending: Vec<Uuid> = Vec::new();
        let stored = store::open_orders(&mut *tx, &touched_orders).await?;
        let stored_ids: HashSet<Uuid> = stored.iter().map(|o| o.order).collect();
        let mut open: HashMap<Uuid, OpenOrder> = stored.into_iter().map(|o| (o.order, o)).collect();
        let mut positions = store::positions_for_update(&mut *tx, &touched_positions).await?;

        let mut changed: HashSet<Uuid> = HashSet::new();
        let mut ended: Vec<Uuid> = Vec::new();
        let mut assets: HashMap<&str, (&str, &str)> = HashMap::new();
        let mut last_prices: HashMap<&str, i64> = HashMap::new();
        let mut breaches: Vec<Envelope> = Vec::new();
        let mut changes: Vec<(Uuid, Vec<Change>)> = Vec::with_capacity(batch.events.len());
        let mut executed: HashSet<Uuid> = HashSet::new();
        let mut executed_rows: Vec<TradeDebits<'_>> = Vec::new();
        for read in &batch.events {
            match read {
                Read::Accepted { event, order } if ended_so_far.contains(&order.order) => {
                    metrics::counter!("risk_late_acceptances_total").increment(1);
                    tracing::warn!(order = %order.order, "an order's acceptance arrived after its end; it stays ended");
                    changes.push((*event, Vec::new()));
                }
                Read::Accepted { event, order } => {
                    // Known already (a copy of the event): it stays as it is.
                    if let Entry::Vacant(new) = open.entry(order.order) {
                        new.insert(order.clone());
                        changed.insert(order.order);
                    }
                    changes.push((
                        *event,
                        vec![Change::Opened {
                            order: order.order,
                            account: order.account,
                            symbol: order.symbol.clone(),
                            side: order.side,
                            remaining: order.remaining,
                            reserved: order.reserved.clone(),
                        }],
                    ));
                }
                // Read in memory once the batch commits, after every event before it.
                Read::Mark { event, mark } => {
                    changes.push((*event, vec![Change::MarkRead { mark: *mark }]));
                }
                Read::Ended { event, order } => {
                    ended_so_far.insert(*order);
                    ending.push(*order);
                    if open.remove(order).is_some() && stored_ids.contains(order) {
                        ended.push(*order);
                    }
                    changed.remove(order);
                    changes.push((*event, vec![Change::Ended { order: *order }]));
                }
                Read::Trade(trade) => {
                    let t = &trade.executed;
                    let mut effects = Vec::new();
                    let maker_side = match trade.taker_side {
                        Side::Buy => Side::Sell,
                        Side::Sell => Side::Buy,
                    };
                    for (order, account, side) in [
                        (t.maker_order_id, t.maker_account_id, maker_side),
                        (t.taker_order_id, t.taker_account_id, trade.taker_side),
                    ] {
                        if let Some(open) = open.get_mut(&order) {
                            open.remaining = (open.remaining - t.quantity).max(0);
                            // Its debit leaves the reservation, as in memory (`Funds::executed`).
                            if let (Some(held), Some(debit)) = (
                                open.reserved.as_mut(),
                                trade.debits.iter().find(|d| d.order == order),
                            ) {
                                held.amount -= debit.amount.min(held.amount).max(0);
                            }
                            changed.insert(order);
                            effects.push(Change::Remaining {
                                order,
                                remaining: open.remaining,
                            });
                        }
                        let position = positions.entry((account, t.symbol.clone())).or_default();
                        *position = position.fill(side, t.price, t.quantity, trade.base_scale);
                        if let Some(breach) = self.breach(trade, account, *position)? {
                            breaches.push(breach);
                        }
                        effects.push(Change::Position {
                            account,
                            symbol: t.symbol.clone(),
                            position: *position,
                        });
                    }
                    if executed.insert(t.trade_id) {
                        let [buyer, seller] = &trade.debits;
                        executed_rows.push(TradeDebits {
                            trade: t.trade_id,
                            buyer,
                            seller,
                        });
                    }
                    effects.push(Change::Executed {
                        trade: t.trade_id,
                        debits: trade.debits.to_vec(),
                    });
                    assets.insert(&t.symbol, (&t.base_asset, &t.quote_asset));
                    last_prices.insert(&t.symbol, t.price);
                    effects.push(Change::LastPrice {
                        symbol: t.symbol.clone(),
                        price: t.price,
                    });
                    changes.push((trade.cause.id, effects));
                }
            }
        }

        store::end_orders(&mut *tx, &ended).await?;
        store::record_ended(&mut *tx, &ending).await?;
        let still_open: Vec<&OpenOrder> = changed.iter().filter_map(|o| open.get(o)).collect();
        store::put_open_orders(&mut *tx, &still_open).await?;
        let rows: Vec<PositionRow<'_>> = touched_positions
            .iter()
            .filter_map(|key| {
                let (base_asset, quote_asset) = *assets.get(key.1.as_str())?;
                Some(PositionRow {
                    account: key.0,
                    symbol: &key.1,
                    base_asset,
                    quote_asset,
                    position: *positions.get(key)?,
                })
            })
            .collect();
        store::put_positions(&mut *tx, &rows).await?;
        store::put_last_prices(&mut *tx, &last_prices).await?;
        store::trades_executed(&mut *tx, &executed_rows).await?;
        events::outbox::append_all(&mut *tx, crate::STREAM, &breaches).await?;
        if let Ok(mut pending) = self.pending.lock() {
            pending.extend(changes);
        }
        Ok(())
    }

    /// Fills are never refused after the fact, but a position beyond its limit (limits
    /// lowered, or open orders that all filled) is reported.
    fn breach(
        &self,
        trade: &Trade,
        account: Uuid,
        position: Position,
    ) -> Result<Option<Envelope>, HandlerError> {
        let limits = self
            .book
            .lock()
            .map_err(|_| HandlerError::permanent("risk book poisoned"))?
            .limits_of(account);
        let Some(limits) = limits else {
            return Ok(None);
        };
        if !limits
            .max_position
            .exceeded_by(i128::from(position.net).abs(), trade.base_scale)
        {
            return Ok(None);
        }
        let t = &trade.executed;
        metrics::counter!("risk_limit_breaches_total", "limit" => "max_position").increment(1);
        let breach = RiskLimitBreached {
            account_id: account,
            symbol: t.symbol.clone(),
            limit: "max_position".to_owned(),
            max_position: limits.max_position.to_string(),
            net_quantity: contracts::format_units(position.net, trade.base_scale),
            trade_id: t.trade_id,
        };
        Ok(Some(
            Envelope::of(crate::SERVICE, account.to_string(), 0, &breach)?.caused_by(&trade.cause),
        ))
    }
}

impl Handler for Projector {
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

    fn committed(&self, event: &Envelope) {
        let changes = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&event.id));
        if let (Some(changes), Ok(mut book)) = (changes, self.book.lock()) {
            for change in changes {
                book.apply(change);
            }
        }
    }
}

/// Asks orders for a mark on the orders stream; funds decide once the orders consumer reads
/// it ([`crate::funds::OrdersCatchUp`]).
///
/// First as a fence for this start (`POST /internal/v1/risk-fences`): orders shuts every
/// earlier start's checks out of its books, then writes the mark, so nothing an earlier
/// process passed can be booked unread and there is nothing to wait for. Where orders cannot
/// fence yet (an orders replica of an earlier release is live, or this orders predates the
/// fence), or the fence does not suffice (`fence_suffices` false: the start before this one
/// was of a release whose verdicts carried no number), a plain mark, asked for only from
/// `unfenced_from` on: that outlasts the checks a previous process answered (orders books no
/// order whose check is older than the bound).
///
/// Supervised: when orders does not answer (it may start after risk) the task ends, and the
/// supervisor runs it again after its backoff, with a new mark; once orders has written one,
/// it waits for shutdown.
pub async fn catch_up_with_orders(
    orders: resilience::Upstream,
    book: Arc<Mutex<Book>>,
    start: RiskStart,
    fence_suffices: bool,
    unfenced_from: tokio::time::Instant,
    shutdown: service_kit::Shutdown,
) {
    if fence_suffices {
        let fenced = ask_for_a_fence(&orders, &book, start).await;
        match fenced {
            Fenced::Marked => {
                shutdown.triggered().await;
                return;
            }
            Fenced::Unsupported => {}
            // Asked again after the supervisor's backoff, with a new mark.
            Fenced::Failed => return,
        }
    }
    if tokio::time::Instant::now() < unfenced_from {
        tracing::info!(
            "an earlier start's checks may still reach the book; waiting them out before asking for the mark"
        );
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep_until(unfenced_from) => {}
        }
    }
    let Some(mark) = await_new_mark(&book) else {
        shutdown.triggered().await;
        return;
    };
    let body = serde_json::json!({ "mark_id": mark }).to_string();
    // A repeated mark is read twice; the second changes nothing.
    let call = resilience::Call::post_json("/internal/v1/stream-marks", body).idempotent(true);
    match orders.send(call).await {
        Ok(response) if response.status().is_success() => {
            tracing::info!(%mark, "orders wrote this start's mark; funds decide once it is read");
            shutdown.triggered().await;
        }
        Ok(response) => {
            tracing::warn!(%mark, status = %response.status(), "orders did not write the mark")
        }
        Err(error) => tracing::warn!(%mark, %error, "orders is not answering for the mark"),
    }
}

/// What asking orders for a fence came to.
enum Fenced {
    /// Fenced and marked, or a mark was read already: funds decide once it is read.
    Marked,
    /// This orders cannot fence (409, or 404 from a release before it): nothing written.
    Unsupported,
    /// No usable answer.
    Failed,
}

/// Asks orders to fence off every start before `start` and write a mark behind the fence.
async fn ask_for_a_fence(
    orders: &resilience::Upstream,
    book: &Mutex<Book>,
    start: RiskStart,
) -> Fenced {
    let Some(mark) = await_new_mark(book) else {
        // Reached already: an earlier attempt's mark was written and read, its answer lost.
        return Fenced::Marked;
    };
    let fence = RiskFence {
        mark_id: mark,
        start,
    };
    let Ok(body) = serde_json::to_string(&fence) else {
        tracing::error!("the fence request could not be written");
        return Fenced::Failed;
    };
    // A repeated fence raises nothing and writes a second mark, which is read and ignored.
    let call = resilience::Call::post_json("/internal/v1/risk-fences", body).idempotent(true);
    match orders.send(call).await {
        Ok(response) if response.status().is_success() => {
            tracing::info!(%mark, start = start.0, "orders fenced off earlier starts' checks and wrote this start's mark; funds decide once it is read");
            Fenced::Marked
        }
        Ok(response)
            if matches!(
                response.status(),
                reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::CONFLICT
            ) =>
        {
            tracing::info!(status = %response.status(), "orders cannot fence off earlier starts' checks yet; asking for a plain mark");
            Fenced::Unsupported
        }
        Ok(response) => {
            tracing::warn!(%mark, status = %response.status(), "orders did not fence");
            Fenced::Failed
        }
        Err(error) => {
            tracing::warn!(%mark, %error, "orders is not answering for the fence");
            Fenced::Failed
        }
    }
}

/// A new mark for the orders consumer to wait for, set before it is asked for (the consumer
/// may read it before orders' answer arrives); `None` once a mark has been read.
fn await_new_mark(book: &Mutex<Book>) -> Option<Uuid> {
    let mark = Uuid::now_v7();
    match book.lock() {
        Ok(mut book) => {
            book.funds_mut().await_mark(mark);
            (book.funds().catch_up() != crate::funds::OrdersCatchUp::Reached).then_some(mark)
        }
        Err(_) => {
            tracing::error!("the book's lock is poisoned; funds will not decide");
            None
        }
    }
}
