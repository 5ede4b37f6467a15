//! A subscriber's check of the `orders` channel (docs/stream.md): its own account's orders
//! only — every other account's are never sent to it — numbered by the gateway without a
//! skip, each fill once.
//!
//! Once the run is over, [`crate::invariants`] compares what arrived with the trader's orders
//! as the REST API lists them: no order named here may be another account's, and every order
//! the trader placed must have been announced (`order_accepted`), every fill of its orders and
//! every order's end (`order_completed` for a filled one, `order_cancelled` for a cancelled
//! one) must have arrived — on a stream subscribed before the first order and not closed by
//! the server.

use std::collections::HashSet;

use serde_json::Value;
use uuid::Uuid;

use super::{Consecutive, Findings};

/// What one subscriber received on its `orders` channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnOrders {
    numbering: Consecutive,
    /// Orders announced as accepted.
    pub accepted: HashSet<Uuid>,
    /// Every order a message named, a rejection's aside: a rejected order may never have been
    /// stored, so the REST API would not list it.
    pub named: HashSet<Uuid>,
    /// Every fill received: (order, trade).
    pub fills: HashSet<(Uuid, Uuid)>,
    /// Orders announced as filled completely.
    pub completed: HashSet<Uuid>,
    /// Orders announced as cancelled (by their owner, or the rest of an IOC, FOK or market
    /// order).
    pub cancelled: HashSet<Uuid>,
    /// Messages that broke the promise.
    pub broken: Findings,
}

impl OwnOrders {
    /// A new connection, numbered from its start. What was missed while disconnected is not
    /// caught up here, so the run does not expect every message of a reconnected stream.
    pub fn reconnected(&mut self) {
        self.numbering = Consecutive::default();
    }

    /// Takes one server message of the `orders` channel (`{channel, type, sequence, data}`).
    pub fn observe(&mut self, message: &Value) {
        let Some(sequence) = message["sequence"].as_u64() else {
            return self.broken.note("an unnumbered message", message);
        };
        if let Err(last) = self.numbering.take(sequence) {
            self.broken
                .note(&format!("skipped or repeated after {last}"), message);
        }
        let id = |field: &str| {
            message["data"][field]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
        };
        match (message["type"].as_str(), id("order_id")) {
            // Its `order_id` may be null, or an order refused before it was stored.
            (Some("order_rejected"), _) => {}
            (Some("fill"), Some(order)) => {
                self.named.insert(order);
                match id("trade_id") {
                    Some(trade) if self.fills.insert((order, trade)) => {}
                    Some(_) => self.broken.note("a fill received twice", message),
                    None => self.broken.note("a fill without its trade", message),
                }
            }
            (Some("order_accepted"), Some(order)) => {
                self.named.insert(order);
                self.accepted.insert(order);
            }
            (Some(kind @ ("order_completed" | "order_cancelled")), Some(order)) => {
                self.named.insert(order);
                let ended = if kind == "order_completed" {
                    &mut self.completed
                } else {
                    &mut self.cancelled
                };
                if !ended.insert(order) {
                    self.broken.note("an order's end received twice", message);
                }
            }
            _ => self.broken.note("not an order message", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(sequence: u64, kind: &str, data: Value) -> Value {
        json!({"channel": "orders", "type": kind, "sequence": sequence, "data": data})
    }

    fn seen(messages: &[Value]) -> OwnOrders {
        super::super::after(messages, OwnOrders::observe)
    }

    #[test]
    fn an_orders_life_is_recorded_once_and_a_rejection_names_nothing() {
        let (order, trade) = (Uuid::now_v7(), Uuid::now_v7());
        let own = seen(&[
            message(3, "order_accepted", json!({"order_id": order})),
            message(
                4,
                "fill",
                json!({"order_id": order, "trade_id": trade, "liquidity": "taker"}),
            ),
            message(5, "order_completed", json!({"order_id": order})),
            message(
                6,
                "order_rejected",
                json!({"order_id": null, "reason": "x"}),
            ),
            message(
                7,
                "order_rejected",
                json!({"order_id": Uuid::now_v7(), "reason": "x"}),
            ),
        ]);
        assert!(own.broken.is_empty(), "{:?}", own.broken);
        assert_eq!(own.accepted, HashSet::from([order]));
        assert_eq!(own.named, HashSet::from([order]));
        assert_eq!(own.fills, HashSet::from([(order, trade)]));
        assert_eq!(own.completed, HashSet::from([order]));
        assert!(own.cancelled.is_empty());
    }

    #[test]
    fn an_order_that_ends_twice_breaks_the_promise() {
        let order = Uuid::now_v7();
        let cancelled = |sequence| message(sequence, "order_cancelled", json!({"order_id": order}));
        let twice = seen(&[cancelled(1), cancelled(2)]);
        assert_eq!(twice.cancelled, HashSet::from([order]));
        assert_eq!(twice.broken.len(), 1, "{:?}", twice.broken);
    }

    #[test]
    fn a_skipped_sequence_or_a_fill_twice_breaks_the_promise() {
        let (order, trade) = (Uuid::now_v7(), Uuid::now_v7());
        let fill = |sequence| {
            message(
                sequence,
                "fill",
                json!({"order_id": order, "trade_id": trade}),
            )
        };
        let twice = seen(&[fill(1), fill(2)]);
        assert_eq!(twice.broken.len(), 1, "{:?}", twice.broken);
        assert!(
            twice
                .broken
                .first()
                .is_some_and(|b| b.starts_with("a fill received twice"))
        );

        let skipped = seen(&[
            message(1, "order_accepted", json!({"order_id": order})),
            fill(3),
        ]);
        assert_eq!(skipped.broken.len(), 1, "{:?}", skipped.broken);
    }
}
