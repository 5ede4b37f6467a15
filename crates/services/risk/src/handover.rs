//! Handing over to the next process (ADR 0023, "A handover").
//!
//! Risk runs as one process, replaced on each deploy (ADR 0018). An order a process passed
//! can still be on its way to the book when the process stops, and what its check reserved
//! lives only in that process's memory until the order's acceptance is read. So a start that
//! cannot tell waits out the bound on checks (twice `BOURSE_RISK_CHECK_VALID_FOR_MS`) before
//! its funds decide, and orders are refused meanwhile. A process stopped gracefully spares the
//! next one that wait: it passes no more checks, keeps its orders consumer reading until every
//! order it passed has been read (or can no longer be booked), and records that it handed
//! over. The next start then decides as soon as it has read its own mark.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use service_kit::Shutdown;
use sqlx::PgPool;

use crate::book::Book;
use crate::store;

/// How often the drain looks at the book again. It runs once, at shutdown, for as long as the
/// relay and the consumer take to carry the last acceptances: milliseconds.
const LOOK_AGAIN_EVERY: Duration = Duration::from_millis(10);

pub struct Handover {
    pub pool: PgPool,
    pub book: Arc<Mutex<Book>>,
    /// This process's start, which the handover is recorded against.
    pub start: store::Start,
    /// How long after its check an order may still be booked: twice the bound, as a start
    /// waits (ADR 0023, "Checks the previous process answered").
    pub booked_within: Duration,
    /// The longest the drain may take, so that the rest of the shutdown fits in its grace
    /// period. A drain cut short records no handover.
    pub longest: Duration,
    /// Stops the orders consumer, which reads on while the drain lasts.
    pub orders_read_until: Shutdown,
}

impl Handover {
    /// Waits for `shutdown`, then hands over: stops passing checks, drains, stops the orders
    /// consumer, and records the handover if nothing this process passed can still arrive.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        shutdown.triggered().await;
        let drained = self.drain().await;
        self.orders_read_until.trigger();
        // A process that never decided on funds passed nothing, but the one before it may
        // have, and this one's wait for it was cut short: the next start waits as it did.
        let deciding = self.book.lock().is_ok_and(|book| book.funds().deciding());
        if !drained {
            tracing::warn!(
                "orders this process passed may still reach the book; the next start waits out the bound on checks"
            );
        } else if !deciding {
            tracing::info!(
                "funds never decided in this process; the next start waits out the bound on checks"
            );
        } else {
            match store::record_handover(&self.pool, &self.start).await {
                Ok(true) => tracing::info!("handed over: the next start need not wait"),
                Ok(false) => tracing::warn!(
                    "a later start has taken the record; no handover recorded for this one"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    "handover not recorded; the next start waits out the bound on checks"
                ),
            }
        }
    }

    /// Stops the book passing checks, then waits until no order it passed can still reach the
    /// book unread, or [`Handover::longest`]; `false` if it gave up.
    async fn drain(&self) -> bool {
        let give_up = Instant::now() + self.longest;
        loop {
            let awaiting = match self.book.lock() {
                Ok(mut book) => {
                    book.hand_over();
                    book.awaits_acceptances(Instant::now(), self.booked_within)
                }
                Err(_) => {
                    tracing::error!("the book's lock is poisoned; no handover");
                    return false;
                }
            };
            if !awaiting {
                return true;
            }
            if Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(LOOK_AGAIN_EVERY).await;
        }
    }
}
