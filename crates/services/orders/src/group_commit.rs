//! The writes of one group commit, gathered in memory and written set-based.
//!
//! A matching task runs a batch of commands against its book and records here what each did:
//! new order rows (in their final state for this batch), fills and status changes of orders
//! already stored, trades, outbox events and idempotency answers. [`BatchWrites::flush`] then
//! writes them with a fixed handful of statements, however many orders the batch holds — the
//! database cost of a batch no longer grows by nine round trips per order (docs/performance.md).
//!
//! A placed order's answer is built here from memory, as it stood right after its own command,
//! which is exactly what a read inside the transaction would have returned.

use std::collections::HashMap;

use matching::{CancelReason, Emitted, Event};
use time::OffsetDateTime;
use uuid::Uuid;

use contracts::events::{
    OrderAccepted, OrderCancelled, OrderCompleted, OrderRejected, TradeExecuted,
};
use contracts::fees::Fees;

use crate::engine::Answer;
use crate::error::{Error, Result};
use crate::instruments::{Instrument, PRODUCER, STREAM};
use crate::order_entry::{OrderStatus, OrderType, ValidOrder, platform_side};
use crate::store::{self, FillRow, MatchedRows, OrderChange, OrderRow, TradeInsert};
use crate::view::OrderView;
use service_kit::idempotency::{self, Claim};

/// An order created in this batch, in its latest state.
struct Created {
    row: OrderRow,
    /// Σ price × quantity of its fills (exceeds 64 bits in general).
    notional: i128,
}

/// Everything one batch will write.
pub struct BatchWrites<'a> {
    instrument: &'a Instrument,
    /// For the fees on the fills of the answers.
    fees: Fees,
    /// One timestamp per batch, at the database's precision (microseconds), so an answer built
    /// from memory equals what a later read returns.
    now: OffsetDateTime,
    created: Vec<Created>,
    created_at: HashMap<Uuid, usize>,
    changed: Vec<OrderChange>,
    changed_at: HashMap<Uuid, usize>,
    trades: Vec<TradeInsert>,
    outbox: Vec<events::Envelope>,
    answers: Vec<(Claim, Answer)>,
}

impl<'a> BatchWrites<'a> {
    pub fn new(instrument: &'a Instrument, fees: Fees) -> Self {
        let now = OffsetDateTime::now_utc();
        let now = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now);
        Self {
            instrument,
            fees,
            now,
            created: Vec::new(),
            created_at: HashMap::new(),
            changed: Vec::new(),
            changed_at: HashMap::new(),
            trades: Vec::new(),
            outbox: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Records a placed order and what the book did with it; returns the client's answer.
    /// Call it inside the request's context: its events carry the request's trace.
    pub fn place(
        &mut self,
        order: &ValidOrder,
        claim: &Claim,
        emitted: &[Emitted],
    ) -> Result<Answer> {
        let taker = order.id;
        let rejection = emitted.iter().find_map(|e| match e.event {
            Event::Rejected { reason, .. } => Some(reason),
            _ => None,
        });
        self.created_at.insert(taker, self.created.len());
        self.created.push(Created {
            row: OrderRow {
                id: taker,
                account_id: order.account,
                client_order_id: order.client_order_id.clone(),
                symbol: order.symbol.clone(),
                side: platform_side(order.side),
                order_type: match order.order_type {
                    OrderType::Limit => "limit",
                    OrderType::Market => "market",
                }
                .to_owned(),
                price: order.price,
                quantity: order.quantity,
                filled_quantity: 0,
                average_price: None,
                status: if rejection.is_some() {
                    OrderStatus::Rejected
                } else {
                    OrderStatus::Open
                },
                time_in_force: match order.time_in_force {
                    matching::TimeInForce::Gtc => "gtc",
                    matching::TimeInForce::Ioc => "ioc",
                    matching::TimeInForce::Fok => "fok",
                }
                .to_owned(),
                post_only: order.post_only,
                book_sequence: None,
                created_at: self.now,
                updated_at: self.now,
            },
            notional: 0,
        });
        let first_sequence = emitted.first().map_or(0, |e| e.sequence);
        if rejection.is_none() {
            self.outbox.push(event(
                taker,
                first_sequence,
                &OrderAccepted {
                    order_id: taker,
                    account_id: order.account,
                    symbol: order.symbol.clone(),
                    base_asset: self.instrument.base.code.clone(),
                    quote_asset: self.instrument.quote.code.clone(),
                    side: platform_side(order.side),
                    price: order.price,
                    quantity: order.quantity,
                    protection_price: order.protection,
                },
            )?);
        }
        let mut fills = Vec::new();
        for e in emitted {
            if let Some(fill) = self.apply(e)?
                && fill.taker == taker
            {
                fills.push(fill.row);
            }
        }
        let answer = match rejection {
            None => {
                let row = &self.created[self.created.len() - 1].row;
                Answer {
                    status: 201,
                    body: serde_json::to_string(&OrderView::new(
                        row,
                        &fills,
                        self.instrument,
                        self.fees,
                    ))
                    .map_err(|e| Error::Internal(e.to_string()))?,
                }
            }
            Some(reason) => {
                self.outbox.push(event(
                    taker,
                    first_sequence,
                    &OrderRejected {
                        order_id: Some(taker),
                        account_id: order.account,
                        symbol: order.symbol.clone(),
                        reason: format!("{reason:?}"),
                    },
                )?);
                let (code, detail) = crate::view::rejection_problem(reason);
                Answer {
                    status: 422,
                    body: problem_body(service_kit::http::Problem::unprocessable(code, detail))?,
                }
            }
        };
        self.answers.push((claim.clone(), answer.clone()));
        Ok(answer)
    }

    /// Records book events that answer nothing themselves (cancels, mass cancels).
    pub fn book_events(&mut self, emitted: &[Emitted]) -> Result<()> {
        for e in emitted {
            self.apply(e)?;
        }
        Ok(())
    }

    /// Writes everything recorded, in the caller's transaction, while `epoch` is still the
    /// symbol's ([`Error::NotOwner`] otherwise, with nothing written), with `sequence`, the
    /// book's after the batch, as the symbol's last (`store::last_sequence`). An order whose client
    /// order id its account already used fails the whole batch with
    /// [`Error::ClientOrderIdTaken`], one whose idempotency key is taken with
    /// [`Error::IdempotencyKeyTaken`]; the matching task then replays the batch job by job to
    /// find it.
    pub async fn flush(
        self,
        tx: &mut sqlx::PgConnection,
        epoch: i64,
        sequence: u64,
        risk_start: Option<contracts::checks::RiskStart>,
    ) -> Result<()> {
        let (rows, notionals): (Vec<OrderRow>, Vec<i128>) = self
            .created
            .into_iter()
            .map(|c| (c.row, c.notional))
            .unzip();
        store::write_matched(
            &mut *tx,
            &MatchedRows {
                symbol: &self.instrument.symbol,
                epoch,
                created: &rows,
                notionals: &notionals,
                changed: &self.changed,
                trades: &self.trades,
                now: self.now,
                sequence: i64::try_from(sequence).unwrap_or(i64::MAX),
                risk_start,
            },
        )
        .await?;
        events::outbox::append_all(&mut *tx, STREAM, &self.outbox).await?;
        // The orders' claims, written only now with their answers (no statement of their own
        // per order before matching).
        match idempotency::record_all(&mut *tx, &self.answers).await? {
            idempotency::Recorded::All => Ok(()),
            idempotency::Recorded::KeyTaken => Err(Error::IdempotencyKeyTaken),
        }
    }

    /// Applies one book event to the recorded state; a trade returns the taker's fill.
    fn apply(&mut self, emitted: &Emitted) -> Result<Option<TakerFill>> {
        let instrument = self.instrument;
        match emitted.event {
            Event::Trade {
                maker,
                maker_account,
                taker,
                taker_account,
                taker_side,
                price,
                quantity,
                maker_remaining,
                taker_remaining,
            } => {
                let price = price * instrument.tick_size;
                let quantity = i64::try_from(quantity).unwrap_or(i64::MAX) * instrument.lot_size;
                let (maker, taker) = (Uuid::from_u128(maker.0), Uuid::from_u128(taker.0));
                let (maker_account, taker_account) = (
                    Uuid::from_u128(maker_account.0),
                    Uuid::from_u128(taker_account.0),
                );
                let trade_id = Uuid::now_v7();
                self.fill(maker, price, quantity, maker_remaining);
                self.fill(taker, price, quantity, taker_remaining);
                self.trades.push(TradeInsert {
                    id: trade_id,
                    price,
                    quantity,
                    maker_order_id: maker,
                    taker_order_id: taker,
                    maker_account,
                    taker_account,
                    taker_side: platform_side(taker_side),
                    sequence: i64::try_from(emitted.sequence).unwrap_or(i64::MAX),
                });
                let mut executed = event(
                    trade_id,
                    emitted.sequence,
                    &TradeExecuted {
                        trade_id,
                        symbol: instrument.symbol.clone(),
                        base_asset: instrument.base.code.clone(),
                        quote_asset: instrument.quote.code.clone(),
                        price,
                        quantity,
                        maker_order_id: maker,
                        taker_order_id: taker,
                        maker_account_id: maker_account,
                        taker_account_id: taker_account,
                        taker_side: platform_side(taker_side),
                    },
                )?;
                // The trade row's time: settlement records it, and reconciliation compares
                // both sides' trades by it.
                executed.occurred_at = self.now;
                self.outbox.push(executed);
                for (order, account, remaining) in [
                    (maker, maker_account, maker_remaining),
                    (taker, taker_account, taker_remaining),
                ] {
                    if remaining == 0 {
                        self.outbox.push(event(
                            order,
                            emitted.sequence,
                            &OrderCompleted {
                                order_id: order,
                                account_id: account,
                                symbol: instrument.symbol.clone(),
                            },
                        )?);
                    }
                }
                return Ok(Some(TakerFill {
                    taker,
                    row: FillRow {
                        trade_id,
                        price,
                        quantity,
                        liquidity: "taker".to_owned(),
                    },
                }));
            }
            Event::Cancelled {
                id,
                account,
                remaining,
                reason,
            } => {
                let id = Uuid::from_u128(id.0);
                self.set_status(id, OrderStatus::Cancelled);
                let remaining = i64::try_from(remaining).unwrap_or(i64::MAX) * instrument.lot_size;
                self.outbox.push(event(
                    id,
                    emitted.sequence,
                    &OrderCancelled {
                        order_id: id,
                        account_id: Uuid::from_u128(account.0),
                        symbol: instrument.symbol.clone(),
                        base_asset: instrument.base.code.clone(),
                        remaining,
                        reason: cancel_reason(reason).to_owned(),
                    },
                )?);
            }
            Event::Rested { id, .. } => {
                let sequence = i64::try_from(emitted.sequence).unwrap_or(i64::MAX);
                if let Some(&at) = self.created_at.get(&Uuid::from_u128(id.0)) {
                    self.created[at].row.book_sequence = Some(sequence);
                }
            }
            Event::Accepted { .. } | Event::Rejected { .. } => {}
        }
        Ok(None)
    }

    fn fill(&mut self, order: Uuid, price: i64, quantity: i64, remaining: u64) {
        let status = if remaining == 0 {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        let notional = i128::from(price) * i128::from(quantity);
        if let Some(&at) = self.created_at.get(&order) {
            let created = &mut self.created[at];
            created.notional += notional;
            created.row.filled_quantity += quantity;
            created.row.average_price =
                average_price(created.notional, created.row.filled_quantity);
            created.row.status = status;
        } else {
            let change = self.change(order);
            change.filled_quantity += quantity;
            change.filled_notional += notional;
            change.status = Some(status);
        }
    }

    fn set_status(&mut self, order: Uuid, status: OrderStatus) {
        if let Some(&at) = self.created_at.get(&order) {
            self.created[at].row.status = status;
        } else {
            self.change(order).status = Some(status);
        }
    }

    fn change(&mut self, order: Uuid) -> &mut OrderChange {
        let at = *self.changed_at.entry(order).or_insert_with(|| {
            self.changed.push(OrderChange {
                id: order,
                filled_quantity: 0,
                filled_notional: 0,
                status: None,
            });
            self.changed.len() - 1
        });
        &mut self.changed[at]
    }
}

struct TakerFill {
    taker: Uuid,
    row: FillRow,
}

/// The average fill price, rounded half up — the same integer arithmetic the database uses
/// when it reads the order back (`store`'s `average_price` column).
fn average_price(notional: i128, filled: i64) -> Option<i64> {
    let filled = i128::from(filled);
    (filled > 0)
        .then(|| (2 * notional + filled) / (2 * filled))
        .and_then(|average| i64::try_from(average).ok())
}

fn cancel_reason(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Requested => "requested",
        CancelReason::Unfilled => "unfilled",
        CancelReason::FillOrKill => "fill_or_kill",
        CancelReason::SelfTrade => "self_trade",
        CancelReason::MassCancel => "mass_cancel",
    }
}

fn event<E: contracts::events::Event>(
    aggregate: Uuid,
    sequence: u64,
    payload: &E,
) -> Result<events::Envelope> {
    Ok(events::Envelope::of(
        PRODUCER,
        aggregate.to_string(),
        i64::try_from(sequence).unwrap_or(i64::MAX),
        payload,
    )?)
}

/// The JSON of a problem as the client receives it (request id included).
pub fn problem_body(problem: service_kit::http::Problem) -> Result<String> {
    problem.body().map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::average_price;

    #[test]
    fn average_price_rounds_half_up_like_the_database() {
        assert_eq!(average_price(0, 0), None);
        // 2 @ 100 + 1 @ 101 = 301 / 3 = 100.33 → 100
        assert_eq!(average_price(301, 3), Some(100));
        // 1 @ 100 + 1 @ 101 = 100.5 → 101
        assert_eq!(average_price(201, 2), Some(101));
        // beyond 64 bits in the notional, still exact
        let big = i128::from(i64::MAX) * 3;
        assert_eq!(average_price(big, 3), Some(i64::MAX));
    }
}
