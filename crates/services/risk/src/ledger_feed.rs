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
//! [`store::trades_settled`]), so a restart knows which trades' debits are still committed.
//!
//! [`store::trades_settled`]: crate::store::trades_settled
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

pub const EVENT_TYPES: &[&str] = &[
    FundsDeposited::TYPE,
    FundsWithdrawn::TYPE,
    TradeSettled::TYPE,
];

/// What an event does to balances, and the trade it settles if it settles one.
fn movements(event: &Envelope) -> Result<(Vec<Movement>, Option<Uuid>), HandlerError> {
    let overflow = |e: crate::funds::Overflow| HandlerError::permanent(e.to_string());
    Ok(match event.event_type.as_str() {
        FundsDeposited::TYPE => (Movement::deposited(&event.decode()?), None),
        FundsWithdrawn::TYPE => (
            Movement::withdrawn(&event.decode()?).map_err(overflow)?,
            None,
        ),
        TradeSettled::TYPE => {
            let settled: TradeSettled = event.decode()?;
            let movements = Movement::settled(&settled).map_err(overflow)?;
            (movements, Some(settled.trade_id))
        }
        _ => (Vec::new(), None),
    })
}

pub struct LedgerFeed {
    book: Arc<Mutex<Book>>,
}

impl LedgerFeed {
    pub fn new(book: Arc<Mutex<Book>>) -> Self {
        Self { book }
    }
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
    /// The trades the transaction's events settle.
    type Deferred = Vec<Uuid>;

    /// Checks that the event reads (one that does not is dead-lettered, not skipped) and
    /// notes the trade it settles.
    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        event: &'a Envelope,
        settled: &'a mut Vec<Uuid>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let (_, trade) = movements(event)?;
            if let (Some(trade), Some(_)) = (trade, position(event)) {
                settled.push(trade);
            }
            Ok(())
        })
    }

    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        mut settled: Vec<Uuid>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            settled.sort_unstable();
            settled.dedup();
            crate::store::trades_settled(tx, &settled).await?;
            Ok(())
        })
    }

    fn wants(&self, event_type: &str) -> bool {
        EVENT_TYPES.contains(&event_type)
    }

    fn committed(&self, event: &Envelope) {
        let Some(position) = position(event) else {
            metrics::counter!("risk_funds_events_skipped_total", "reason" => "no_position")
                .increment(1);
            return;
        };
        let applied = movements(event)
            .map_err(|e| e.to_string())
            .and_then(|(movements, trade)| {
                let mut book = self
                    .book
                    .lock()
                    .map_err(|_| "the book's lock is poisoned")?;
                let funds = book.funds_mut();
                match trade {
                    // The balances move and the trade's debits go in one step.
                    Some(trade) => funds.settled(position, trade, &movements),
                    None => funds.apply(position, &movements),
                }
                .map_err(|e| e.to_string())
            });
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
    consumer
        .run(Arc::new(LedgerFeed::new(book)), shutdown)
        .await;
}

async fn fetch_snapshot(settlement: &resilience::Upstream) -> Result<BalanceSnapshot, String> {
    let response = settlement
        .send(resilience::Call::get("/internal/v1/balances"))
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("settlement answered {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}
