//! A subscriber's check of what the `trades:{symbol}` channel promises (docs/stream.md): the
//! gateway numbers a channel's messages consecutively and never skips one for a client (it
//! closes the connection instead), so a running session sees every trade, each once.
//!
//! The tape keeps the trade ids it received; once the run is over, every trade the run's own
//! orders took part in must be on it — unless the server closed the connection, which the
//! protocol allows and the report shows, and the subscriber could not catch up. A subscriber
//! that connects again numbers the new connection from its start and reads the trades it
//! missed from the REST API (docs/stream.md, "Reconnecting"); those may come again on the new
//! stream, so a trade twice is a broken promise only within one connection.

use std::collections::HashSet;

use serde_json::Value;
use uuid::Uuid;

use super::{Consecutive, Findings};

/// What one subscriber received on a trades channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TradeTape {
    numbering: Consecutive,
    /// Every trade id received, on any connection or caught up.
    pub trades: HashSet<Uuid>,
    /// The trades received on this connection.
    this_connection: HashSet<Uuid>,
    /// The last trade received, on the stream or caught up: where catching up starts.
    pub last: Option<Uuid>,
    /// Trades that came only from catching up.
    pub caught_up: u64,
    /// Messages that broke the promise.
    pub broken: Findings,
}

impl TradeTape {
    /// Takes one server message of a `trades:` channel (`{channel, type, sequence, data}`).
    pub fn observe(&mut self, message: &Value) {
        let sequence = message["sequence"].as_u64();
        let id = message["data"]["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok());
        let (Some("trade"), Some(sequence), Some(id)) = (message["type"].as_str(), sequence, id)
        else {
            return self.broken.note("not a numbered trade", message);
        };
        if let Err(last) = self.numbering.take(sequence) {
            self.broken
                .note(&format!("skipped or repeated after {last}"), message);
        }
        if !self.this_connection.insert(id) {
            self.broken.note("a trade received twice", message);
        }
        self.trades.insert(id);
        self.last = Some(id);
    }

    /// A new connection: numbered from its start, and its own trades each once.
    pub fn reconnected(&mut self) {
        self.numbering = Consecutive::default();
        self.this_connection.clear();
    }

    /// The trades missed while disconnected, oldest first, as the REST API lists them.
    pub fn caught_up(&mut self, missed: &[Uuid]) {
        for id in missed {
            if self.trades.insert(*id) {
                self.caught_up += 1;
            }
        }
        if let Some(newest) = missed.last() {
            self.last = Some(*newest);
        }
    }

    /// Whether every trade of `expected` is on the tape.
    pub fn has_all(&self, expected: &HashSet<Uuid>) -> bool {
        self.trades.len() >= expected.len() && expected.iter().all(|id| self.trades.contains(id))
    }

    /// How many trades of `expected` are not on the tape.
    pub fn missing(&self, expected: &HashSet<Uuid>) -> usize {
        expected
            .iter()
            .filter(|id| !self.trades.contains(id))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn trade(sequence: u64, id: Uuid) -> Value {
        json!({"channel": "trades:T", "type": "trade", "sequence": sequence,
               "data": {"id": id, "price": "1.00", "quantity": "1"}})
    }

    fn tape(messages: &[Value]) -> TradeTape {
        super::super::after(messages, TradeTape::observe)
    }

    #[test]
    fn consecutive_trades_each_once_keep_the_promise() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let seen = tape(&[trade(7, a), trade(8, b)]);
        assert!(seen.broken.is_empty(), "{:?}", seen.broken);
        assert!(seen.has_all(&HashSet::from([a, b])));
        let c = Uuid::now_v7();
        assert!(!seen.has_all(&HashSet::from([a, c])));
        assert_eq!(seen.missing(&HashSet::from([a, c])), 1);
    }

    #[test]
    fn a_skipped_sequence_or_a_trade_twice_breaks_the_promise() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let skipped = tape(&[trade(7, a), trade(9, b)]);
        assert_eq!(skipped.broken.len(), 1, "{:?}", skipped.broken);
        assert!(
            skipped
                .broken
                .first()
                .is_some_and(|b| b.starts_with("skipped or repeated after 7"))
        );

        let twice = tape(&[trade(7, a), trade(8, a)]);
        assert_eq!(twice.broken.len(), 1, "{:?}", twice.broken);
        assert!(
            twice
                .broken
                .first()
                .is_some_and(|b| b.starts_with("a trade received twice"))
        );

        let unnumbered = json!({"channel": "trades:T", "type": "trade", "data": {"id": a}});
        assert_eq!(tape(&[unnumbered]).broken.len(), 1);
    }

    #[test]
    fn a_new_connection_numbers_from_its_start_and_may_repeat_what_was_caught_up() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut seen = tape(&[trade(7, a)]);
        seen.reconnected();
        seen.caught_up(&[b, c]);
        assert_eq!(seen.last, Some(c));
        assert_eq!(seen.caught_up, 2);
        // The new stream starts at 1 and delivers `c` again: both allowed.
        seen.observe(&trade(1, c));
        assert!(seen.broken.is_empty(), "{:?}", seen.broken);
        assert!(seen.has_all(&HashSet::from([a, b, c])));
        // Twice on one connection is still a broken promise.
        seen.observe(&trade(2, c));
        assert_eq!(seen.broken.len(), 1, "{:?}", seen.broken);
    }
}
