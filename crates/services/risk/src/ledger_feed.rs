//! Following settlement's ledger (ADR 0023): its balance snapshot first, then its stream.
//!
//! [`load_and_follow`] asks settlement for every balance and the outbox position they include
//! (the task supervisor runs it again until settlement answers), loads them into the book's
//! [`Funds`], and only then starts consuming the `settlement` stream. Every event consumed from
//! then on was committed after the snapshot was read or is at or below its position, so
//! [`Funds::apply`] sorts them by position alone; a `TradeSettled` also ends the debits its
//! trade committed ([`Funds::settled`]).
//!
//! Balances are not written to risk's tables: memory loads a new snapshot on every start. What
//! is written, with the consumer's inbox rows, is which trades settled (`unsettled_trades`,
//! [`store::trades_settled`]) and which withdrawals were booked ([`store::end_withdrawals`]),
//! so a restart knows what is still committed.
//!
//! [`store::trades_settled`]: crate::store::trades_settled
//! [`store::end_withdrawals`]: crate::store::end_withdrawals
//!
//! [`Funds`]: crate::funds::Funds
//! [`Funds::apply`]: crate::funds::Funds::apply
//! [`Funds::settled`]: crate::funds::Funds::settled

use std::sync::{Arc, Mutex};

use contracts::events::{Event, FundsDeposited, FundsWithdrawn, TradeSettled};
use contracts::funds::BalanceSnapshot;
use events::{Consumer, Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use service_kit::Shutdown;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::book::Book;
use crate::funds::Movement;

/// The stream settlement announces balance changes on.
pub const STREAM: &str = "settlement";
/// Whose outbox positions the stream's entries carry.
const OUTBOX: &str = "settlement";

/// What else an event ends, beyond moving balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    /// The debits of the trade it settles.
    Trade(Uuid),
    /// What the withdrawal it books reserved (ADR 0023 slice 4).
    Withdrawal(Uuid),
    Nothing,
}

/// What an event does to balances, and what else it ends.
fn movements(event: &Envelope) -> Result<(Vec<Movement>, Ends), HandlerError> {
    let overflow = |e: crate::funds::Overflow| HandlerError::permanent(e.to_string());
    Ok(match event.event_type.as_str() {
        FundsDeposited::TYPE => (Movement::deposited(&event.decode()?), Ends::Nothing),
        FundsWithdrawn::TYPE => {
            let withdrawn: FundsWithdrawn = event.decode()?;
            let movements = Movement::withdrawn(&withdrawn).map_err(overflow)?;
            (movements, Ends::Withdrawal(withdrawn.transfer_id))
        }
        TradeSettled::TYPE => {
            let settled: TradeSettled = event.decode()?;
            let movements = Movement::settled(&settled).map_err(overflow)?;
            (movements, Ends::Trade(settled.trade_id))
        }
        _ => (Vec::new(), Ends::Nothing),
    })
}

/// What a transaction's events end, written at its end.
#[derive(Debug, Default)]
pub struct Ended {
    trades: Vec<Uuid>,
    withdrawals: Vec<Uuid>,
}

/// The newest of settlement's positions the balances include, announced each time it moves:
/// what risk's reconciliation waits on before it compares ([`crate::reconciliation`]).
pub type Positions = Arc<tokio::sync::watch::Sender<Option<i64>>>;

pub struct LedgerFeed {
    book: Arc<Mutex<Book>>,
    positions: Option<Positions>,
}

impl LedgerFeed {
    pub fn new(book: Arc<Mutex<Book>>) -> Self {
        Self {
            book,
            positions: None,
        }
    }

    /// Announces on `positions` the position the balances include after each event.
    pub fn announcing(self, positions: Positions) -> Self {
        Self {
            positions: Some(positions),
            ..self
        }
    }
}

/// Raises the announced position to `position` (never lowers it).
fn announce(positions: &Positions, position: i64) {
    positions.send_if_modified(|announced| {
        let raised = announced.is_none_or(|a| a < position);
        if raised {
            *announced = Some(position);
        }
        raised
    });
}

/// Where an entry sits in settlement's outbox. An entry without one is a dead letter replayed
/// by hand: the original was delivered to this group, or came before the snapshot.
fn position(event: &Envelope) -> Option<i64> {
    event
        .origin
        .as_ref()
        .filter(|o| o.outbox == OUTBOX)
        .map(|o| o.position)
}

impl Handler for LedgerFeed {
    type Deferred = Ended;

    /// Checks that the event reads (one that does not is dead-lettered, not skipped) and
    /// notes the trade it settles or the withdrawal it books.
    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        event: &'a Envelope,
        ended: &'a mut Ended,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let (_, ends) = movements(event)?;
            if position(event).is_some() {
                match ends {
                    Ends::Trade(trade) => ended.trades.push(trade),
                    Ends::Withdrawal(withdrawal) => ended.withdrawals.push(withdrawal),
                    Ends::Nothing => {}
                }
            }
            Ok(())
        })
    }

    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        mut ended: Ended,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            ended.trades.sort_unstable();
            ended.trades.dedup();
            crate::store::trades_settled(&mut *tx, &ended.trades).await?;
            crate::store::end_withdrawals(tx, &ended.withdrawals).await?;
            Ok(())
        })
    }

    // Every event of settlement's stream, not only those that move balances (`movements`):
    // each one moves the position the balances include. Settlement's
    // snapshot names its newest event whatever its kind (a `ReconciliationFailed`, say), and
    // risk's reconciliation waits until the balances include that position — an event acked
    // unread would leave it waiting for the next deposit or trade.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    fn committed(&self, event: &Envelope) {
        let Some(position) = position(event) else {
            metrics::counter!("risk_funds_events_skipped_total", "reason" => "no_position")
                .increment(1);
            return;
        };
        let applied = movements(event)
            .map_err(|e| e.to_string())
            .and_then(|(movements, ends)| {
                let mut book = self
                    .book
                    .lock()
                    .map_err(|_| "the book's lock is poisoned")?;
                let funds = book.funds_mut();
                // The balances move and what the event ends goes, in one step.
                match ends {
                    Ends::Trade(trade) => funds.settled(position, trade, &movements),
                    Ends::Withdrawal(withdrawal) => {
                        funds.withdrawn(position, withdrawal, &movements)
                    }
                    Ends::Nothing => funds.apply(position, &movements),
                }
                .map_err(|e| e.to_string())
            });
        if applied.is_ok()
            && let Some(positions) = &self.positions
        {
            announce(positions, position);
        }
        match applied {
            Ok(true) => {}
            Ok(false) => {
                metrics::counter!("risk_funds_events_skipped_total", "reason" => "included")
                    .increment(1);
            }
            Err(error) => {
                tracing::error!(event_id = %event.id, position, %error,
                    "a settlement event could not be applied to balances");
            }
        }
    }
}

/// Loads settlement's snapshot into the book, then consumes its stream until `shutdown`. If
/// settlement does not answer (it may start after risk), it returns; the supervisor runs it
/// again after its backoff, as it does every task that ends.
pub async fn load_and_follow(
    settlement: resilience::Upstream,
    book: Arc<Mutex<Book>>,
    positions: Positions,
    consumer: Consumer,
    shutdown: Shutdown,
) {
    let snapshot = match fetch_snapshot(&settlement).await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::warn!(%error, "settlement's balances are not available");
            return;
        }
    };
    let (position, accounts) = (snapshot.position, snapshot.balances.len());
    match book.lock() {
        Ok(mut book) => book.funds_mut().load(snapshot),
        Err(_) => {
            tracing::error!("the book's lock is poisoned; balances not loaded");
            return;
        }
    }
    tracing::info!(position, accounts, "balances loaded from settlement");
    announce(&positions, position);
    let feed = LedgerFeed::new(book).announcing(positions);
    consumer.run(Arc::new(feed), shutdown).await;
}

pub(crate) async fn fetch_snapshot(
    settlement: &resilience::Upstream,
) -> Result<BalanceSnapshot, String> {
    let response = settlement
        .send(resilience::Call::get("/internal/v1/balances"))
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("settlement answered {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}
