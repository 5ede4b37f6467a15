//! The order book.
//!
//! Layout, chosen for the hot path:
//! - every resting order lives in one slab (`Vec<Slot>` plus a free list) and is linked into
//!   its price level's FIFO queue by slab index, so a cancel unlinks in O(1);
//! - each side keeps its levels in a `Vec` sorted so the *best* price is the last element:
//!   matching pops from the end, and new levels near the top insert with a short shift;
//! - an id → slot hash map (FxHash: ids are not attacker-controlled hash keys here, they are
//!   UUIDv7s minted by the orders service) finds orders to cancel.

use rustc_hash::FxHashMap;

use crate::command::{Command, NewOrder};
use crate::event::{CancelReason, Emitted, Event, RejectReason};
use crate::types::{AccountId, OrderId, OrderKind, SelfTradePrevention, Side, TimeInForce};

const NIL: u32 = u32::MAX;

/// A resting order, as a snapshot (recovery, market data, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: i64,
    pub remaining: u64,
    /// The book sequence at which it started resting: time priority.
    pub arrival: u64,
}

/// Aggregated depth at one price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Level {
    pub price: i64,
    pub quantity: u64,
    pub orders: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    order: RestingOrder,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct PriceLevel {
    price: i64,
    quantity: u64,
    orders: u32,
    head: u32,
    tail: u32,
}

/// One side of the book. `levels` is sorted so the best price is last.
#[derive(Clone, Debug, Default)]
struct Ladder {
    levels: Vec<PriceLevel>,
}

impl Ladder {
    /// Position of `price` (found or insertion point) for this side's ordering.
    fn search(&self, side: Side, price: i64) -> Result<usize, usize> {
        match side {
            // Bids ascending: the highest bid is last.
            Side::Buy => self.levels.binary_search_by(|l| l.price.cmp(&price)),
            // Asks descending: the lowest ask is last.
            Side::Sell => self.levels.binary_search_by(|l| price.cmp(&l.price)),
        }
    }

    fn best(&self) -> Option<&PriceLevel> {
        self.levels.last()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Book {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: FxHashMap<OrderId, u32>,
    bids: Ladder,
    asks: Ladder,
    sequence: u64,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number of the last event emitted (0 before any).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn best_bid(&self) -> Option<i64> {
        self.bids.best().map(|l| l.price)
    }

    pub fn best_ask(&self) -> Option<i64> {
        self.asks.best().map(|l| l.price)
    }

    /// Resting orders, all of them.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn order(&self, id: OrderId) -> Option<RestingOrder> {
        self.index
            .get(&id)
            .map(|&slot| self.slots[slot as usize].order)
    }

    /// Up to `depth` levels per side, best first.
    pub fn depth(&self, depth: usize) -> (Vec<Level>, Vec<Level>) {
        let view = |ladder: &Ladder| {
            ladder
                .levels
                .iter()
                .rev()
                .take(depth)
                .map(|l| Level {
                    price: l.price,
                    quantity: l.quantity,
                    orders: l.orders,
                })
                .collect()
        };
        (view(&self.bids), view(&self.asks))
    }

    /// Every resting order in time priority (arrival) order.
    pub fn resting_orders(&self) -> Vec<RestingOrder> {
        let mut orders: Vec<RestingOrder> = self
            .index
            .values()
            .map(|&slot| self.slots[slot as usize].order)
            .collect();
        orders.sort_by_key(|o| o.arrival);
        orders
    }

    /// Puts an order back on the book without matching, keeping its original arrival, so a
    /// book rebuilt from storage has the same time priority it had before (REL-16). Orders must
    /// be restored in arrival order; the book's sequence continues after the highest one.
    pub fn restore(&mut self, order: RestingOrder) -> Result<(), RejectReason> {
        if order.remaining == 0 {
            return Err(RejectReason::ZeroQuantity);
        }
        if self.index.contains_key(&order.id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        self.rest(order);
        self.sequence = self.sequence.max(order.arrival);
        Ok(())
    }

    /// Continues numbering after `sequence` (recovery: the last sequence the service stored).
    pub fn resume_sequence(&mut self, sequence: u64) {
        self.sequence = self.sequence.max(sequence);
    }

    /// Executes one command, appending its events to `out`.
    pub fn execute(&mut self, command: Command, out: &mut Vec<Emitted>) {
        match command {
            Command::Place(order) => self.place(order, out),
            Command::Cancel { id, account } => self.cancel(id, account, out),
            Command::CancelAccount { account } => self.cancel_where(|o| o.account == account, out),
            Command::CancelAll => self.cancel_where(|_| true, out),
        }
    }

    fn emit(&mut self, out: &mut Vec<Emitted>, event: Event) {
        self.sequence += 1;
        out.push(Emitted {
            sequence: self.sequence,
            event,
        });
    }

    fn place(&mut self, order: NewOrder, out: &mut Vec<Emitted>) {
        if let OrderKind::Limit { price } = order.kind
            && price > 0
            && order.quantity > 0
            && order.time_in_force == TimeInForce::Gtc
            && !self.crosses(order.side, price)
        {
            // The common case: a limit order that cannot trade rests at once, and one hash
            // operation both refuses a duplicate id and indexes the order.
            return self.rest_passive(order, price, out);
        }
        if let Some(reason) = self.rejection(&order) {
            self.emit(
                out,
                Event::Rejected {
                    id: order.id,
                    reason,
                },
            );
            return;
        }
        self.emit(
            out,
            Event::Accepted {
                id: order.id,
                account: order.account,
            },
        );
        if order.time_in_force == TimeInForce::Fok && self.fillable(&order) < order.quantity {
            // All or nothing: not one resting order is touched.
            self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining: order.quantity,
                    reason: CancelReason::FillOrKill,
                },
            );
            return;
        }
        let (remaining, stopped_by_self_trade) = self.take(&order, out);
        if remaining == 0 {
            return;
        }
        match (order.kind, order.time_in_force, stopped_by_self_trade) {
            (_, _, true) => self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining,
                    reason: CancelReason::SelfTrade,
                },
            ),
            (OrderKind::Limit { price }, TimeInForce::Gtc, false) => {
                self.sequence += 1;
                let arrival = self.sequence;
                self.rest(RestingOrder {
                    id: order.id,
                    account: order.account,
                    side: order.side,
                    price,
                    remaining,
                    arrival,
                });
                out.push(Emitted {
                    sequence: arrival,
                    event: Event::Rested {
                        id: order.id,
                        price,
                        remaining,
                    },
                });
            }
            _ => self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining,
                    reason: CancelReason::Unfilled,
                },
            ),
        }
    }

    /// Rests a GTC limit order known not to cross, emitting what [`Book::place`] would.
    fn rest_passive(&mut self, order: NewOrder, price: i64, out: &mut Vec<Emitted>) {
        let std::collections::hash_map::Entry::Vacant(entry) = self.index.entry(order.id) else {
            self.emit(
                out,
                Event::Rejected {
                    id: order.id,
                    reason: RejectReason::DuplicateOrderId,
                },
            );
            return;
        };
        let arrival = self.sequence + 2;
        let resting = RestingOrder {
            id: order.id,
            account: order.account,
            side: order.side,
            price,
            remaining: order.quantity,
            arrival,
        };
        let index = allocate(&mut self.slots, &mut self.free, resting);
        entry.insert(index);
        let ladder = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        link(&mut self.slots, ladder, index);
        self.sequence = arrival;
        out.push(Emitted {
            sequence: arrival - 1,
            event: Event::Accepted {
                id: order.id,
                account: order.account,
            },
        });
        out.push(Emitted {
            sequence: arrival,
            event: Event::Rested {
                id: order.id,
                price,
                remaining: order.quantity,
            },
        });
    }

    fn rejection(&self, order: &NewOrder) -> Option<RejectReason> {
        if order.quantity == 0 {
            return Some(RejectReason::ZeroQuantity);
        }
        if self.index.contains_key(&order.id) {
            return Some(RejectReason::DuplicateOrderId);
        }
        match order.kind {
            OrderKind::Limit { price } if price <= 0 => Some(RejectReason::InvalidPrice),
            OrderKind::Market if order.post_only => Some(RejectReason::PostOnlyMarket),
            OrderKind::Limit { price } if order.post_only && self.crosses(order.side, price) => {
                Some(RejectReason::PostOnlyWouldTake)
            }
            _ => None,
        }
    }

    /// Whether a limit order at `price` on `side` would trade with the best opposite order.
    fn crosses(&self, side: Side, price: i64) -> bool {
        match side {
            Side::Buy => self.best_ask().is_some_and(|ask| price >= ask),
            Side::Sell => self.best_bid().is_some_and(|bid| price <= bid),
        }
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn acceptable(order: &NewOrder, level_price: i64) -> bool {
        match (order.kind, order.side) {
            (OrderKind::Market, _) => true,
            (OrderKind::Limit { price }, Side::Buy) => level_price <= price,
            (OrderKind::Limit { price }, Side::Sell) => level_price >= price,
        }
    }

    /// How much of `order` could fill right now, with self-trade prevention applied as
    /// [`Book::take`] would (used by FOK before anything is touched).
    fn fillable(&self, order: &NewOrder) -> u64 {
        let mut total = 0u64;
        for level in self.ladder(order.side.opposite()).levels.iter().rev() {
            if !Self::acceptable(order, level.price) {
                break;
            }
            let mut cursor = level.head;
            while cursor != NIL {
                let slot = &self.slots[cursor as usize];
                if slot.order.account == order.account {
                    match order.self_trade {
                        SelfTradePrevention::CancelMaker => {}
                        SelfTradePrevention::CancelTaker | SelfTradePrevention::CancelBoth => {
                            return total;
                        }
                    }
                } else {
                    total = total.saturating_add(slot.order.remaining);
                    if total >= order.quantity {
                        return total;
                    }
                }
                cursor = slot.next;
            }
        }
        total
    }

    /// Matches `order` against the opposite side. Returns what is left of it and whether
    /// self-trade prevention stopped it.
    fn take(&mut self, order: &NewOrder, out: &mut Vec<Emitted>) -> (u64, bool) {
        let maker_side = order.side.opposite();
        let mut remaining = order.quantity;
        while remaining > 0 {
            let Some(level) = self.ladder(maker_side).best().copied() else {
                break;
            };
            if !Self::acceptable(order, level.price) {
                break;
            }
            let head = level.head;
            let maker = self.slots[head as usize].order;
            if maker.account == order.account {
                match order.self_trade {
                    SelfTradePrevention::CancelTaker => return (remaining, true),
                    SelfTradePrevention::CancelMaker | SelfTradePrevention::CancelBoth => {
                        self.remove(head);
                        self.emit(
                            out,
                            Event::Cancelled {
                                id: maker.id,
                                account: maker.account,
                                remaining: maker.remaining,
                                reason: CancelReason::SelfTrade,
                            },
                        );
                        if order.self_trade == SelfTradePrevention::CancelBoth {
                            return (remaining, true);
                        }
                        continue;
                    }
                }
            }
            let quantity = remaining.min(maker.remaining);
            remaining -= quantity;
            let maker_remaining = maker.remaining - quantity;
            if maker_remaining == 0 {
                self.pop_best_head(maker_side);
            } else {
                self.slots[head as usize].order.remaining = maker_remaining;
                if let Some(best) = self.ladder_mut(maker_side).levels.last_mut() {
                    best.quantity -= quantity;
                }
            }
            self.emit(
                out,
                Event::Trade {
                    maker: maker.id,
                    maker_account: maker.account,
                    taker: order.id,
                    taker_account: order.account,
                    taker_side: order.side,
                    price: maker.price,
                    quantity,
                    maker_remaining,
                    taker_remaining: remaining,
                },
            );
        }
        (remaining, false)
    }

    /// Appends `order` to the tail of its price level (creating the level if needed).
    fn rest(&mut self, order: RestingOrder) {
        let index = allocate(&mut self.slots, &mut self.free, order);
        self.index.insert(order.id, index);
        let ladder = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        link(&mut self.slots, ladder, index);
    }

    /// Removes the order in `index` from the book (index, level and slab).
    fn remove(&mut self, index: u32) {
        let id = self.slots[index as usize].order.id;
        self.index.remove(&id);
        self.unlink(index);
    }

    /// Removes the first order of `side`'s best level: a filled maker. The level is the last
    /// of its ladder, so no search is needed.
    fn pop_best_head(&mut self, side: Side) {
        let levels = &self.ladder(side).levels;
        let Some(position) = levels.len().checked_sub(1) else {
            return;
        };
        let index = levels[position].head;
        let id = self.slots[index as usize].order.id;
        self.index.remove(&id);
        self.unlink_at(index, position);
    }

    /// Unlinks the order in `index` from its level and frees the slot (the id index is the
    /// caller's business).
    fn unlink(&mut self, index: u32) {
        let order = self.slots[index as usize].order;
        match self.ladder(order.side).search(order.side, order.price) {
            Ok(position) => self.unlink_at(index, position),
            // Unreachable while the book is consistent; the slot is still recycled.
            Err(_) => self.free.push(index),
        }
    }

    /// [`Book::unlink`] for an order whose level is at `position` of its ladder.
    fn unlink_at(&mut self, index: u32, position: usize) {
        let Slot { order, prev, next } = self.slots[index as usize];
        if prev != NIL {
            self.slots[prev as usize].next = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        let ladder = self.ladder_mut(order.side);
        let level = &mut ladder.levels[position];
        if level.head == index {
            level.head = next;
        }
        if level.tail == index {
            level.tail = prev;
        }
        level.quantity -= order.remaining;
        level.orders -= 1;
        if level.orders == 0 {
            // The best level is the last one: removing it shifts nothing.
            ladder.levels.remove(position);
        }
        self.free.push(index);
    }

    fn cancel(&mut self, id: OrderId, account: AccountId, out: &mut Vec<Emitted>) {
        // One hash operation on the common path; someone else's order is put back.
        match self.index.remove(&id) {
            Some(index) if self.slots[index as usize].order.account == account => {
                let order = self.slots[index as usize].order;
                self.unlink(index);
                self.emit(
                    out,
                    Event::Cancelled {
                        id,
                        account,
                        remaining: order.remaining,
                        reason: CancelReason::Requested,
                    },
                );
            }
            // Someone else's order looks exactly like a missing one.
            other => {
                if let Some(index) = other {
                    self.index.insert(id, index);
                }
                self.emit(
                    out,
                    Event::Rejected {
                        id,
                        reason: RejectReason::UnknownOrder,
                    },
                );
            }
        }
    }

    fn cancel_where(&mut self, matches: impl Fn(&RestingOrder) -> bool, out: &mut Vec<Emitted>) {
        let mut doomed: Vec<(u64, u32)> = self
            .index
            .values()
            .map(|&index| (self.slots[index as usize].order, index))
            .filter(|(order, _)| matches(order))
            .map(|(order, index)| (order.arrival, index))
            .collect();
        // Deterministic order of events: time priority, not hash-map order.
        doomed.sort_unstable();
        for (_, index) in doomed {
            let order = self.slots[index as usize].order;
            self.remove(index);
            self.emit(
                out,
                Event::Cancelled {
                    id: order.id,
                    account: order.account,
                    remaining: order.remaining,
                    reason: CancelReason::MassCancel,
                },
            );
        }
    }
}

fn allocate(slots: &mut Vec<Slot>, free: &mut Vec<u32>, order: RestingOrder) -> u32 {
    let slot = Slot {
        order,
        prev: NIL,
        next: NIL,
    };
    match free.pop() {
        Some(index) => {
            slots[index as usize] = slot;
            index
        }
        None => {
            slots.push(slot);
            u32::try_from(slots.len() - 1).unwrap_or(NIL)
        }
    }
}

/// Links the order in `index` at the tail of its price level in `ladder`.
fn link(slots: &mut [Slot], ladder: &mut Ladder, index: u32) {
    let order = slots[index as usize].order;
    match ladder.search(order.side, order.price) {
        Ok(position) => {
            let level = &mut ladder.levels[position];
            let tail = level.tail;
            level.tail = index;
            level.quantity += order.remaining;
            level.orders += 1;
            slots[tail as usize].next = index;
            slots[index as usize].prev = tail;
        }
        Err(position) => ladder.levels.insert(
            position,
            PriceLevel {
                price: order.price,
                quantity: order.remaining,
                orders: 1,
                head: index,
                tail: index,
            },
        ),
    }
}
