//! A subscriber's check of what the `book:{symbol}` channel promises (docs/stream.md): a
//! snapshot first, then updates whose `data.previous_sequence` is the sequence the client
//! holds, and a sequence that only ever moves forward.
//!
//! Book updates are published at most once (ADR 0010), so an update may be missing: the next
//! one then names a later `previous_sequence` than the one held. That is a *gap*, which the
//! protocol lets a client detect and repair with a fresh snapshot; the run counts gaps and
//! reports them. An update that does not move the book forward — a sequence at or below the
//! one held, or a `previous_sequence` before it — is never allowed: a client applying it would
//! show an older book as the newest. That is a violation, and so is an update before any
//! snapshot.

use serde_json::Value;

use super::Findings;

/// What one subscriber saw on a book channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookChain {
    /// The sequence the subscriber holds: the snapshot's, then each update's.
    held: Option<u64>,
    pub updates: u64,
    /// Updates that followed a later sequence than the one held (allowed: at most once).
    pub gaps: u64,
    /// Messages that broke the promise.
    pub broken: Findings,
}

impl BookChain {
    /// Takes one server message of a `book:` channel (`{channel, type, sequence, data}`).
    pub fn observe(&mut self, message: &Value) {
        let sequence = message["sequence"].as_u64();
        match (message["type"].as_str(), sequence) {
            (Some("snapshot"), Some(sequence)) => self.held = Some(sequence),
            (Some("update"), Some(sequence)) => {
                self.updates += 1;
                let previous = message["data"]["previous_sequence"].as_u64();
                match (self.held, previous) {
                    (None, _) => self.broken.note("an update before the snapshot", message),
                    (_, None) => self
                        .broken
                        .note("an update without previous_sequence", message),
                    (Some(held), Some(previous)) if sequence <= held || previous < held => {
                        self.broken.note(&format!("went back from {held}"), message);
                    }
                    (Some(_), Some(previous)) if previous >= sequence => {
                        self.broken
                            .note("previous_sequence not before sequence", message);
                    }
                    (Some(held), Some(previous)) => {
                        if previous > held {
                            self.gaps += 1;
                        }
                        self.held = Some(sequence);
                    }
                }
            }
            _ => self.broken.note("not a snapshot or an update", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn snapshot(sequence: u64) -> Value {
        json!({"channel": "book:T", "type": "snapshot", "sequence": sequence, "data": {}})
    }

    fn update(previous: u64, sequence: u64) -> Value {
        json!({"channel": "book:T", "type": "update", "sequence": sequence,
               "data": {"previous_sequence": previous}})
    }

    fn seen(messages: &[Value]) -> BookChain {
        super::super::after(messages, BookChain::observe)
    }

    #[test]
    fn updates_that_chain_on_from_the_snapshot_keep_the_promise() {
        let chain = seen(&[snapshot(4), update(4, 7), update(7, 8)]);
        assert_eq!((chain.updates, chain.gaps), (2, 0));
        assert!(chain.broken.is_empty(), "{:?}", chain.broken);
    }

    #[test]
    fn a_missing_update_is_a_gap_not_a_violation() {
        let chain = seen(&[snapshot(4), update(4, 7), update(9, 12), update(12, 13)]);
        assert_eq!((chain.updates, chain.gaps), (3, 1));
        assert!(chain.broken.is_empty(), "{:?}", chain.broken);
    }

    #[test]
    fn a_sequence_that_goes_back_or_repeats_breaks_the_promise() {
        let back = seen(&[snapshot(4), update(4, 7), update(2, 5)]);
        assert_eq!(back.broken.len(), 1, "{:?}", back.broken);
        assert!(
            back.broken
                .first()
                .is_some_and(|b| b.starts_with("went back from 7"))
        );

        let repeated = seen(&[snapshot(4), update(4, 7), update(4, 7)]);
        assert_eq!(repeated.broken.len(), 1, "{:?}", repeated.broken);

        // A later sequence that claims to follow an older one: the book was rebuilt from
        // behind what the client already holds.
        let rebuilt_behind = seen(&[snapshot(4), update(4, 7), update(5, 9)]);
        assert_eq!(
            rebuilt_behind.broken.len(),
            1,
            "{:?}",
            rebuilt_behind.broken
        );
    }

    #[test]
    fn an_update_before_the_snapshot_or_a_malformed_one_breaks_the_promise() {
        assert_eq!(seen(&[update(0, 1)]).broken.len(), 1);
        assert_eq!(seen(&[snapshot(4), update(6, 6)]).broken.len(), 1);
        let unnumbered = json!({"channel": "book:T", "type": "update", "data": {}});
        assert_eq!(seen(&[snapshot(4), unnumbered]).broken.len(), 1);
    }
}
