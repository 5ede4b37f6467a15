//! What each WebSocket subscriber checks of the stream's promises (docs/stream.md) while the
//! run goes on; [`crate::invariants`] judges what they found once it is over.
//!
//! - [`book_chain`]: `book:{symbol}` — a snapshot, then updates chaining on from it, never back.
//! - [`trade_tape`]: `trades:{symbol}` — numbered without a skip, each trade once.
//! - [`own_orders`]: `orders` — numbered without a skip, each fill once, and only the
//!   subscriber's own account's orders.

mod book_chain;
mod own_orders;
mod trade_tape;

use serde_json::Value;

pub use book_chain::BookChain;
pub use own_orders::OwnOrders;
pub use trade_tape::TradeTape;

/// What one WebSocket subscriber received.
#[derive(Clone, Debug, Default)]
pub struct Subscriber {
    /// The server confirmed the subscription: every trade after this must arrive.
    pub subscribed: bool,
    /// Text messages of any channel.
    pub messages: u64,
    pub book: BookChain,
    pub trades: TradeTape,
    pub own_orders: OwnOrders,
    /// The stream closed for good (code and reason): the server closed it, which the protocol
    /// allows — a client too slow for its queue, an expired token — and the subscriber could
    /// not connect again and catch up. Messages may be missing after it.
    pub closed: Option<String>,
    /// Each time the stream closed and the subscriber connected again and caught up on the
    /// trades it missed (docs/stream.md, "Reconnecting"): why it closed.
    pub reconnects: Vec<String>,
}

impl Subscriber {
    /// A new connection: its channels are numbered from their start, and the book begins
    /// again with a snapshot.
    pub fn connected_again(&mut self) {
        self.trades.reconnected();
        self.own_orders.reconnected();
    }

    /// Takes one text message from the server.
    pub fn observe(&mut self, text: &str) {
        self.messages += 1;
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let channel = message["channel"].as_str().unwrap_or_default();
        if channel.starts_with("book:") {
            self.book.observe(&message);
        } else if channel.starts_with("trades:") {
            self.trades.observe(&message);
        } else if channel == "orders" {
            self.own_orders.observe(&message);
        } else if message["type"] == "subscribed" {
            self.subscribed = true;
        }
    }
}

/// The first few messages that broke a promise, each with what was wrong: the first ones say
/// what went wrong, and a broken run must not fill the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings(Vec<String>);

impl Findings {
    const KEPT: usize = 5;

    fn note(&mut self, what: &str, message: &Value) {
        if self.0.len() < Self::KEPT {
            self.0.push(format!("{what}: {message}"));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }
}

/// A channel the gateway numbers itself: each message one past the last (docs/stream.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Consecutive {
    last: Option<u64>,
}

impl Consecutive {
    /// Takes the next sequence; the last one when `sequence` does not follow it.
    fn take(&mut self, sequence: u64) -> Result<(), u64> {
        let last = self.last.replace(sequence);
        match last {
            Some(last) if Some(sequence) != last.checked_add(1) => Err(last),
            _ => Ok(()),
        }
    }
}

/// A check after it has taken `messages` in turn.
#[cfg(test)]
fn after<T: Default>(messages: &[Value], observe: impl Fn(&mut T, &Value)) -> T {
    let mut check = T::default();
    for message in messages {
        observe(&mut check, message);
    }
    check
}
