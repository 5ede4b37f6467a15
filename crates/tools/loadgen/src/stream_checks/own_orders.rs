//! A subscriber's check of the `orders` channel (docs/stream.md): its own account's orders
//! only — every other account's are never sent to it — numbered by the gateway without a
//! skip, each fill once.
//!
//! Once the run is over, [`crate::invariants`] compares what arrived with the trader's orders
//! as the REST API lists them: no order named here may be another account's, and every order
//! the trader placed must have been announced (`order_accepted`), every fill of its orders and
//! every order's end (`order_completed` for a filled one, `order_cancelled` for a cancelled
//! one) must have arrived — on a stream subscribed before the first order, or caught up from
//! the REST API after the subscriber connected again (docs/stream.md, "Reconnecting").

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
    /// Acceptances, fills and ends that came only from catching up.
    pub caught_up: u64,
    /// The fills and ends received on this connection: each must come once on it.
    this_connection: HashSet<(Uuid, Option<Uuid>)>,
}

impl OwnOrders {
    /// A new connection, numbered from its start.
    pub fn reconnected(&mut self) {
        self.numbering = Consecutive::default();
        self.this_connection.clear();
    }

    /// What was missed while disconnected, from the trader's orders as `GET /v1/orders` lists
    /// them (each with its status and fills). The new stream may send some of it again.
    pub fn caught_up(&mut self, orders: &[Value]) {
        let id = |value: &Value| value.as_str().and_then(|id| Uuid::parse_str(id).ok());
        let mut gained = 0;
        let mut count = |new: bool| gained += u64::from(new);
        for order in orders {
            let Some(order_id) = id(&order["id"]) else {
                continue;
            };
            self.named.insert(order_id);
            match order["status"].as_str() {
                Some("rejected") => {}
                status => {
                    count(self.accepted.insert(order_id));
                    match status {
                        Some("filled") => count(self.completed.insert(order_id)),
                        Some("cancelled") => count(self.cancelled.insert(order_id)),
                        _ => {}
                    }
                }
            }
            for fill in order["fills"].as_array().into_iter().flatten() {
                if let Some(trade) = id(&fill["trade_id"]) {
                    count(self.fills.insert((order_id, trade)));
                }
            }
        }
        self.caught_up += gained;
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
                    Some(trade) if self.this_connection.insert((order, Some(trade))) => {
                        self.fills.insert((order, trade));
                    }
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
                ended.insert(order);
                if !self.this_connection.insert((order, None)) {
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
    fn what_was_caught_up_counts_and_may_come_again_on_the_new_connection() {
        let (filled, trade, open, rejected) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let mut own = seen(&[message(9, "order_accepted", json!({"order_id": filled}))]);
        own.reconnected();
        own.caught_up(&[
            json!({"id": filled, "status": "filled", "fills": [{"trade_id": trade}]}),
            json!({"id": open, "status": "open", "fills": []}),
            json!({"id": rejected, "status": "rejected", "fills": []}),
        ]);
        assert_eq!(own.accepted, HashSet::from([filled, open]));
        assert_eq!(own.fills, HashSet::from([(filled, trade)]));
        assert_eq!(own.completed, HashSet::from([filled]));
        assert_eq!(
            own.caught_up, 3,
            "the open order, the fill and the end: the rest was known"
        );
        // The new stream, numbered from 1, sends the fill and the end again: allowed once.
        let fill = json!({"order_id": filled, "trade_id": trade});
        let end = json!({"order_id": filled});
        own.observe(&message(1, "fill", fill.clone()));
        own.observe(&message(2, "order_completed", end.clone()));
        assert!(own.broken.is_empty(), "{:?}", own.broken);
        own.observe(&message(3, "fill", fill));
        own.observe(&message(4, "order_completed", end));
        assert_eq!(own.broken.len(), 2, "{:?}", own.broken);
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
