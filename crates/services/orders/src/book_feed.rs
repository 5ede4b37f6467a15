//! The book feed (TRD-09): after each batch that changed a book, its top levels with the
//! sequence it ends at and the sequence it follows, published as `BookUpdated` on the `market`
//! stream — what the gateway's WebSocket `book:{symbol}` channel forwards.
//!
//! Market data is a view of the book, not a state change another service must learn of, so it
//! skips the outbox: the matching task hands the update to a publisher task and moves on (no
//! extra write on the matching path), and the publisher sends it straight to Redis, at most
//! once. A lost update is not lost data: each names the sequence it follows, so a client that
//! sees a break in the chain takes a new snapshot (ADR 0010).

use contracts::events::BookUpdated;
use contracts::format_units;
use matching::{Book, Level};
use redis::aio::ConnectionManager;
use service_kit::redis::KeyPrefix;
use service_kit::{Shutdown, Supervisor};
use tokio::sync::mpsc;

use crate::instruments::Instrument;

/// The logical stream (`<prefix>.market`).
pub const STREAM: &str = "market";
/// Levels per side in each update (and in a WebSocket snapshot).
pub const DEPTH: usize = 20;
/// Updates kept on the stream: readers only want the recent past.
const RETAINED: usize = 10_000;
/// Updates waiting for the publisher; beyond, new ones are dropped (and counted).
const QUEUE: usize = 4_096;

/// Levels in the instrument's decimal units, as the API shows them.
pub fn levels(instrument: &Instrument, levels: &[Level]) -> Vec<[String; 2]> {
    levels
        .iter()
        .map(|l| {
            [
                format_units(l.price * instrument.tick_size, instrument.quote.scale),
                format_units(
                    i64::try_from(l.quantity).unwrap_or(i64::MAX) * instrument.lot_size,
                    instrument.base.scale,
                ),
            ]
        })
        .collect()
}

/// The matching tasks' handle on the publisher.
#[derive(Clone)]
pub struct BookFeed {
    updates: mpsc::Sender<BookUpdated>,
}

impl BookFeed {
    /// Starts the publisher; it stops with the service. It owns the queue's receiving end,
    /// so it cannot be started again: essential.
    pub fn spawn(redis: ConnectionManager, keys: KeyPrefix, tasks: &Supervisor) -> Self {
        let (updates, receiver) = mpsc::channel(QUEUE);
        tasks.spawn_essential("book feed", |stop| publish(redis, keys, receiver, stop));
        Self { updates }
    }

    /// Offers the book's state after a batch that moved it from `previous` to its current
    /// sequence. Never waits: a full queue drops the update (clients see the gap).
    pub fn offer(&self, instrument: &Instrument, book: &Book, previous: u64) {
        let (bids, asks) = book.depth(DEPTH);
        let update = BookUpdated {
            symbol: instrument.symbol.clone(),
            sequence: book.sequence(),
            previous_sequence: previous,
            bids: levels(instrument, &bids),
            asks: levels(instrument, &asks),
        };
        if self.updates.try_send(update).is_err() {
            metrics::counter!("orders_book_feed_dropped_total").increment(1);
        }
    }
}

async fn publish(
    redis: ConnectionManager,
    keys: KeyPrefix,
    mut updates: mpsc::Receiver<BookUpdated>,
    shutdown: Shutdown,
) {
    loop {
        let update = tokio::select! {
            () = shutdown.triggered() => return,
            update = updates.recv() => match update {
                Some(update) => update,
                None => return,
            },
        };
        let published = async {
            let event = events::Envelope::of(
                crate::SERVICE,
                update.symbol.clone(),
                i64::try_from(update.sequence).unwrap_or(i64::MAX),
                &update,
            )?;
            events::direct::publish_trimmed(&redis, &keys, STREAM, &event, Some(RETAINED)).await
        };
        if let Err(err) = published.await {
            metrics::counter!("orders_book_feed_dropped_total").increment(1);
            tracing::warn!(symbol = %update.symbol, error = %err, "book update not published");
        }
    }
}
