//! What each account owns, as the pre-trade stage knows it (ADR 0023). No IO.
//!
//! Loaded once from settlement's snapshot (every customer balance and the outbox position it
//! includes), then kept current from settlement's stream: deposits, withdrawals and settled
//! trades. Each event carries its outbox position ([`events::Origin`]), a total order of
//! settlement's events that never changes; an event at or below the position the balances
//! already include changes nothing. So a restart (a new snapshot), a redelivery or a lost
//! broker's resend never counts money twice, and since settlement commits its events in
//! position order and the stream carries them in that order, nothing is skipped either.
//!
//! A balance here is the ledger's `available` (the ledger holds nothing for open orders since
//! slice 3b). What the pre-trade stage has promised out of a balance is its own to keep (ADR
//! 0023, slice 2b): **free = balance − what open orders have reserved − what executed trades
//! will debit once they settle.** A trade's debits leave its orders' reservations when it
//! executes (the orders stream) and leave the balance when it settles (settlement's stream), in
//! one step with the balance's movement, so free does not move when a trade settles. The two
//! streams are read by two consumers: a trade may settle here before it is seen to execute. It
//! then leaves a marker, and its execution only shrinks the reservations; in between, free is
//! too low, never too high.
//!
//! A check reserves here, or is refused `insufficient_funds`: these balances are the only
//! funds check an order has (slice 3b). What is committed survives a restart (slice 2c): the
//! orders consumer keeps each open order's remaining reservation on its `open_orders` row, and
//! both consumers keep the trades seen on one stream and not yet the other
//! (`unsettled_trades`); on start they come back through [`Funds::adopt`] and
//! [`Funds::restore`].
//!
//! Because orders are funded from this copy and not from the ledger, the copy is checked
//! against the ledger while the platform runs ([`Funds::compare`], ADR 0023 "Risk's view
//! reconciled"): the movements applied since a recent position are kept, so a snapshot of the
//! ledger taken at any of those positions can be rolled forward to where these balances are
//! and compared balance by balance.

use std::collections::{HashMap, VecDeque};

use contracts::events::{FundsDeposited, FundsWithdrawn, TradeSettled};
use contracts::funds::BalanceSnapshot;
use uuid::Uuid;

/// A change that would take a balance out of 64-bit minor units: the event is refused whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the balance does not fit 64-bit minor units")]
pub struct Overflow;

/// One account's balance of one asset moving by `delta` minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub account: Uuid,
    pub asset: String,
    pub delta: i64,
}

impl Movement {
    fn new(account: Uuid, asset: &str, delta: i64) -> Self {
        Self {
            account,
            asset: asset.to_owned(),
            delta,
        }
    }

    pub fn deposited(event: &FundsDeposited) -> Vec<Self> {
        vec![Self::new(event.account_id, &event.asset, event.amount)]
    }

    pub fn withdrawn(event: &FundsWithdrawn) -> Result<Vec<Self>, Overflow> {
        let delta = event.amount.checked_neg().ok_or(Overflow)?;
        Ok(vec![Self::new(event.account_id, &event.asset, delta)])
    }

    /// Delivery versus payment as settlement booked it: the buyer pays the notional and their
    /// fee in the quote asset and receives the base quantity; the seller delivers the base and
    /// receives the notional less their fee.
    pub fn settled(trade: &TradeSettled) -> Result<Vec<Self>, Overflow> {
        let paid = trade
            .notional
            .checked_add(trade.buyer_fee)
            .and_then(i64::checked_neg)
            .ok_or(Overflow)?;
        let received = trade
            .notional
            .checked_sub(trade.seller_fee)
            .ok_or(Overflow)?;
        let delivered = trade.quantity.checked_neg().ok_or(Overflow)?;
        Ok(vec![
            Self::new(trade.buyer_account_id, &trade.quote_asset, paid),
            Self::new(trade.buyer_account_id, &trade.base_asset, trade.quantity),
            Self::new(trade.seller_account_id, &trade.base_asset, delivered),
            Self::new(trade.seller_account_id, &trade.quote_asset, received),
        ])
    }
}

/// What an order has reserved, in its hold asset (quote for a buy, base for a sell): minor
/// units of that asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub asset: String,
    pub amount: i64,
}

/// What an open order still has reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    account: Uuid,
    asset: String,
    remaining: i64,
}

/// What one side of a trade pays once it settles, as settlement books it: the buyer the
/// notional and their fee in the quote asset, the seller the quantity in the base asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debit {
    /// The order it is paid out of.
    pub order: Uuid,
    pub account: Uuid,
    pub asset: String,
    pub amount: i64,
}

/// A trade between its execution and its settlement, whichever was seen first.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trade {
    /// Executed, not yet settled: its debits are committed.
    Executed(Vec<Debit>),
    /// Settled before its execution was seen: the balances already paid.
    SettledFirst,
}

/// Not enough free funds for a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Short {
    pub free: i64,
}

/// How far this process's orders consumer has read (ADR 0023, "Catching up before deciding").
/// What orders committed before risk started may still be on its way: an order accepted then
/// reserves nothing here until its `OrderAccepted` is read. So risk asks orders for a mark on
/// the orders stream at start, and decides on funds only once it has read that mark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrdersCatchUp {
    /// No mark asked for yet.
    #[default]
    NotStarted,
    /// Orders was asked to write this mark; not read yet.
    Awaiting(Uuid),
    /// The mark was read: every order event committed before it has been applied.
    Reached,
}

/// Balances per (account, asset), how far into settlement's history they go, and what the
/// pre-trade stage has committed out of them.
#[derive(Debug, Default)]
pub struct Funds {
    /// The newest settlement event the balances include; `None` until the snapshot is in.
    position: Option<i64>,
    catch_up: OrdersCatchUp,
    balances: HashMap<(Uuid, String), i64>,
    /// Per open order.
    reservations: HashMap<Uuid, Reservation>,
    /// Per trade executed and not yet settled, or settled before it was seen to execute.
    trades: HashMap<Uuid, Trade>,
    /// Per (account, asset): reservations plus the debits of unsettled trades.
    committed: HashMap<(Uuid, String), i64>,
    /// The latest movements applied, for comparing with a snapshot of the ledger.
    journal: Journal,
}

/// How many of the latest settlement events' movements are kept for [`Funds::compare`]. A
/// comparison needs those after the snapshot's position only — the events settlement
/// committed while its snapshot travelled here, normally a few hundred — so this many is
/// enough at thousands of trades a second, in about a megabyte or two.
pub const JOURNAL_EVENTS: usize = 16_384;

/// The movements of the latest events applied, oldest first.
#[derive(Debug, Default)]
struct Journal {
    /// The position the oldest kept event was applied on top of: every event applied after
    /// it is kept. `None` until the snapshot is in.
    since: Option<i64>,
    events: VecDeque<(i64, Vec<Movement>)>,
}

impl Journal {
    fn restart(&mut self, position: i64) {
        self.since = Some(position);
        self.events.clear();
    }

    fn record(&mut self, position: i64, movements: &[Movement]) {
        self.events.push_back((position, movements.to_vec()));
        if self.events.len() > JOURNAL_EVENTS
            && let Some((dropped, _)) = self.events.pop_front()
        {
            self.since = Some(dropped);
        }
    }
}

/// What comparing these balances with a snapshot of the ledger found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// These balances do not include every event the snapshot does yet (or are not loaded):
    /// compare again once they have caught up.
    Behind {
        included: Option<i64>,
    },
    /// The events between the snapshot and these balances are no longer all kept: take a
    /// newer snapshot.
    Outrun {
        kept_since: i64,
    },
    Compared(Compared),
}

/// A comparison made: every balance either side has, the snapshot's rolled forward to the
/// position these balances include.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compared {
    /// The position the ledger's snapshot included.
    pub ledger_position: i64,
    /// The position these balances include (at or after the snapshot's).
    pub risk_position: i64,
    /// How many (account, asset) balances were compared.
    pub balances: usize,
    /// Every balance that differs, by account and asset.
    pub mismatches: Vec<Mismatch>,
}

/// A balance the ledger and the pre-trade stage disagree on, in minor units of the asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub account: Uuid,
    pub asset: String,
    /// The ledger's balance, rolled forward to the position risk's includes.
    pub ledger: i128,
    pub risk: i64,
}

impl Funds {
    /// Replaces everything with settlement's snapshot.
    pub fn load(&mut self, snapshot: BalanceSnapshot) {
        self.balances = snapshot
            .balances
            .into_iter()
            .map(|b| ((b.account_id, b.asset), b.balance))
            .collect();
        self.position = Some(snapshot.position);
        self.journal.restart(snapshot.position);
        self.report_deciding();
    }

    /// `risk_funds_deciding`: 1 once funds decide, 0 before (set to 0 at start).
    fn report_deciding(&self) {
        metrics::gauge!("risk_funds_deciding").set(if self.deciding() { 1.0 } else { 0.0 });
    }

    /// The newest settlement event included; `None` before the snapshot is loaded.
    pub fn position(&self) -> Option<i64> {
        self.position
    }

    /// Whether funds may decide: settlement's balances are in, and everything orders committed
    /// before this process asked for its mark has been read.
    pub fn deciding(&self) -> bool {
        self.position.is_some() && self.catch_up == OrdersCatchUp::Reached
    }

    pub fn catch_up(&self) -> OrdersCatchUp {
        self.catch_up
    }

    /// Waits for `mark` (to be asked for right after): a mark read later is the one that counts.
    pub fn await_mark(&mut self, mark: Uuid) {
        if self.catch_up != OrdersCatchUp::Reached {
            self.catch_up = OrdersCatchUp::Awaiting(mark);
        }
    }

    /// A mark was read on the orders stream; `true` when it was the one awaited.
    pub fn mark_read(&mut self, mark: Uuid) -> bool {
        let awaited = self.catch_up == OrdersCatchUp::Awaiting(mark);
        if awaited {
            self.catch_up = OrdersCatchUp::Reached;
            self.report_deciding();
        }
        awaited
    }

    pub fn balance(&self, account: Uuid, asset: &str) -> i64 {
        self.balances
            .get(&(account, asset.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The account's balances and what is committed out of them, by asset: every asset with
    /// either not zero.
    pub fn of_account(&self, account: Uuid) -> Vec<(String, i64, i64)> {
        let mut assets: Vec<&String> = self
            .balances
            .iter()
            .filter(|(_, balance)| **balance != 0)
            .map(|(key, _)| key)
            .chain(self.committed.keys())
            .filter(|(owner, _)| *owner == account)
            .map(|(_, asset)| asset)
            .collect();
        assets.sort();
        assets.dedup();
        assets
            .into_iter()
            .map(|asset| {
                let (balance, committed) =
                    (self.balance(account, asset), self.committed(account, asset));
                (asset.clone(), balance, committed)
            })
            .collect()
    }

    /// Applies the event at `position`: `Ok(true)` when it moved the balances, `Ok(false)`
    /// when they already include it (or the snapshot is not in yet: it will include it).
    /// All of the event's movements or none.
    pub fn apply(&mut self, position: i64, movements: &[Movement]) -> Result<bool, Overflow> {
        match self.position {
            Some(included) if position > included => {}
            _ => return Ok(false),
        }
        let mut next: Vec<((Uuid, String), i64)> = Vec::with_capacity(movements.len());
        for movement in movements {
            let key = (movement.account, movement.asset.clone());
            let current = next
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map_or_else(|| self.balance(key.0, &key.1), |(_, v)| *v);
            next.push((key, current.checked_add(movement.delta).ok_or(Overflow)?));
        }
        self.balances.extend(next);
        self.position = Some(position);
        self.journal.record(position, movements);
        Ok(true)
    }

    /// Compares these balances with `ledger`, a snapshot of settlement's: the snapshot's
    /// balances plus every movement applied here after its position must be these balances,
    /// every one of them (a balance either side lacks is zero). Exact, however busy the
    /// platform: nothing has to stand still for it.
    pub fn compare(&self, ledger: &BalanceSnapshot) -> Comparison {
        let included = match self.position {
            Some(included) if included >= ledger.position => included,
            included => return Comparison::Behind { included },
        };
        match self.journal.since {
            Some(since) if since <= ledger.position => {}
            since => {
                return Comparison::Outrun {
                    kept_since: since.unwrap_or(included),
                };
            }
        }
        let mut expected: HashMap<(Uuid, &str), i128> = HashMap::new();
        for balance in &ledger.balances {
            *expected
                .entry((balance.account_id, balance.asset.as_str()))
                .or_default() += i128::from(balance.balance);
        }
        let after_snapshot = self
            .journal
            .events
            .iter()
            .filter(|(position, _)| *position > ledger.position);
        for (_, movements) in after_snapshot {
            for movement in movements {
                *expected
                    .entry((movement.account, movement.asset.as_str()))
                    .or_default() += i128::from(movement.delta);
            }
        }
        let mut compared = 0;
        let mut mismatches = Vec::new();
        for ((account, asset), ledger_balance) in &expected {
            let risk = self.balance(*account, asset);
            if *ledger_balance == 0 && risk == 0 {
                continue;
            }
            compared += 1;
            if *ledger_balance != i128::from(risk) {
                mismatches.push(Mismatch {
                    account: *account,
                    asset: (*asset).to_owned(),
                    ledger: *ledger_balance,
                    risk,
                });
            }
        }
        // Balances only this side has: the ledger's is zero.
        for ((account, asset), risk) in &self.balances {
            if *risk != 0 && !expected.contains_key(&(*account, asset.as_str())) {
                compared += 1;
                mismatches.push(Mismatch {
                    account: *account,
                    asset: asset.clone(),
                    ledger: 0,
                    risk: *risk,
                });
            }
        }
        mismatches.sort_by(|a, b| (a.account, &a.asset).cmp(&(b.account, &b.asset)));
        Comparison::Compared(Compared {
            ledger_position: ledger.position,
            risk_position: included,
            balances: compared,
            mismatches,
        })
    }

    /// What is committed out of the balance: reservations and unsettled debits.
    pub fn committed(&self, account: Uuid, asset: &str) -> i64 {
        self.committed
            .get(&(account, asset.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// What a new reservation may take: the balance less what is committed.
    pub fn free(&self, account: Uuid, asset: &str) -> i64 {
        self.balance(account, asset)
            .saturating_sub(self.committed(account, asset))
    }

    fn commit(&mut self, account: Uuid, asset: &str, change: i64) {
        let committed = self
            .committed
            .entry((account, asset.to_owned()))
            .or_default();
        *committed = committed.saturating_add(change);
        if *committed == 0 {
            self.committed.remove(&(account, asset.to_owned()));
        }
    }

    /// Reserves `amount` of `asset` for `order`, or says how much is free. Asked again for the
    /// same order (a retried check), it holds what it reserved the first time.
    pub fn reserve(
        &mut self,
        order: Uuid,
        account: Uuid,
        asset: &str,
        amount: i64,
    ) -> Result<(), Short> {
        if self.reservations.contains_key(&order) {
            return Ok(());
        }
        let free = self.free(account, asset);
        if amount > free {
            return Err(Short { free });
        }
        self.commit(account, asset, amount);
        self.reservations.insert(
            order,
            Reservation {
                account,
                asset: asset.to_owned(),
                remaining: amount,
            },
        );
        Ok(())
    }

    /// Takes in a reservation the orders stream says an accepted order holds (or, on start,
    /// what its `open_orders` row says is left of it), without asking whether it is free: the
    /// order is in the book already. An order the check reserved for keeps that reservation.
    pub fn adopt(&mut self, order: Uuid, account: Uuid, held: &Held) {
        if self.reservations.contains_key(&order) || held.amount <= 0 {
            return;
        }
        self.commit(account, &held.asset, held.amount);
        self.reservations.insert(
            order,
            Reservation {
                account,
                asset: held.asset.clone(),
                remaining: held.amount,
            },
        );
    }

    /// On start, a trade from `unsettled_trades`: its debits (`Some`) are still committed, or
    /// (`None`) it settled before its execution was seen. Unlike [`Self::executed`], nothing
    /// is taken out of reservations: the stored ones are what is left after its fills.
    pub fn restore(&mut self, trade: Uuid, debits: Option<Vec<Debit>>) {
        if self.trades.contains_key(&trade) {
            return;
        }
        match debits {
            Some(debits) => {
                for debit in &debits {
                    self.commit(debit.account, &debit.asset, debit.amount);
                }
                self.trades.insert(trade, Trade::Executed(debits));
            }
            None => {
                self.trades.insert(trade, Trade::SettledFirst);
            }
        }
    }

    /// What `order` still has reserved.
    pub fn reserved(&self, order: Uuid) -> i64 {
        self.reservations.get(&order).map_or(0, |r| r.remaining)
    }

    /// The order ended (or its reservation lapsed): what it still had reserved is free again.
    pub fn release(&mut self, order: Uuid) {
        if let Some(r) = self.reservations.remove(&order) {
            self.commit(r.account, &r.asset, -r.remaining);
        }
    }

    /// Takes up to `amount` out of the order's reservation; returns what it took.
    fn take(&mut self, order: Uuid, amount: i64) -> i64 {
        let Some(reservation) = self.reservations.get_mut(&order) else {
            return 0;
        };
        let taken = amount.min(reservation.remaining).max(0);
        reservation.remaining -= taken;
        let (account, asset) = (reservation.account, reservation.asset.clone());
        self.commit(account, &asset, -taken);
        taken
    }

    /// A trade executed: each debit leaves its order's reservation and stays committed until
    /// the trade settles — unless it settled already, and the balances paid it.
    pub fn executed(&mut self, trade: Uuid, debits: Vec<Debit>) {
        match self.trades.remove(&trade) {
            Some(Trade::SettledFirst) => {
                for debit in &debits {
                    self.take(debit.order, debit.amount);
                }
            }
            Some(executed @ Trade::Executed(_)) => {
                // Seen before (a redelivery): it is committed once.
                self.trades.insert(trade, executed);
            }
            None => {
                for debit in &debits {
                    self.take(debit.order, debit.amount);
                    self.commit(debit.account, &debit.asset, debit.amount);
                }
                self.trades.insert(trade, Trade::Executed(debits));
            }
        }
    }

    /// A withdrawal booked at `position`: the balance moves and what it reserved goes, in one
    /// step, so free does not move. Its reservation goes even when the balances already
    /// included it (a snapshot taken after it was booked).
    pub fn withdrawn(
        &mut self,
        position: i64,
        withdrawal: Uuid,
        movements: &[Movement],
    ) -> Result<bool, Overflow> {
        let moved = self.apply(position, movements)?;
        self.release(withdrawal);
        Ok(moved)
    }

    /// A trade settled at `position`: its movements reach the balances (once: see
    /// [`Self::apply`]) and its debits stop being committed, in one step, so what is free does
    /// not move. Its debits go even when the balances already included the trade (a snapshot
    /// taken after it settled): they were committed by its execution all the same.
    pub fn settled(
        &mut self,
        position: i64,
        trade: Uuid,
        movements: &[Movement],
    ) -> Result<bool, Overflow> {
        let moved = self.apply(position, movements)?;
        match self.trades.remove(&trade) {
            Some(Trade::Executed(debits)) => {
                for debit in debits {
                    self.commit(debit.account, &debit.asset, -debit.amount);
                }
            }
            Some(Trade::SettledFirst) | None => {
                self.trades.insert(trade, Trade::SettledFirst);
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use contracts::funds::AccountBalance;

    use super::*;

    fn snapshot(position: i64, balances: &[(Uuid, &str, i64)]) -> BalanceSnapshot {
        BalanceSnapshot {
            position,
            balances: balances
                .iter()
                .map(|(account_id, asset, balance)| AccountBalance {
                    account_id: *account_id,
                    asset: (*asset).to_owned(),
                    balance: *balance,
                })
                .collect(),
        }
    }

    fn deposit(account: Uuid, asset: &str, amount: i64) -> Vec<Movement> {
        Movement::deposited(&FundsDeposited {
            transfer_id: Uuid::now_v7(),
            account_id: account,
            asset: asset.to_owned(),
            amount,
        })
    }

    #[test]
    fn events_the_snapshot_includes_are_not_counted_again_and_later_ones_are() {
        let alice = Uuid::now_v7();
        let mut funds = Funds::default();
        assert!(
            !funds.apply(1, &deposit(alice, "USD", 5)).unwrap(),
            "nothing moves before the snapshot: it will include what came before it"
        );
        funds.load(snapshot(10, &[(alice, "USD", 100)]));

        assert!(!funds.apply(9, &deposit(alice, "USD", 5)).unwrap());
        assert!(!funds.apply(10, &deposit(alice, "USD", 5)).unwrap());
        assert_eq!(funds.balance(alice, "USD"), 100);

        assert!(funds.apply(12, &deposit(alice, "USD", 5)).unwrap());
        assert!(
            !funds.apply(12, &deposit(alice, "USD", 5)).unwrap(),
            "a resend of the same position"
        );
        assert_eq!(funds.balance(alice, "USD"), 105);
        assert_eq!(funds.position(), Some(12));
    }

    /// Minor units of one USD (scale 2).
    const DOLLAR: i64 = 100;

    #[test]
    fn a_settled_trade_moves_both_sides_and_both_fees_as_settlement_booked_them() {
        let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
        let mut funds = Funds::default();
        funds.load(snapshot(
            0,
            &[
                (buyer, "USD", 40_000 * DOLLAR),
                (seller, "BTC", 100_000_000),
            ],
        ));
        let trade = TradeSettled {
            trade_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            buyer_account_id: buyer,
            seller_account_id: seller,
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: 30_000 * DOLLAR,
            quantity: 100_000_000,
            notional: 30_000 * DOLLAR,
            buyer_fee: 60 * DOLLAR,
            seller_fee: 30 * DOLLAR,
            fee_asset: "USD".to_owned(),
        };
        assert!(funds.apply(1, &Movement::settled(&trade).unwrap()).unwrap());
        assert_eq!(
            funds.balance(buyer, "USD"),
            40_000 * DOLLAR - 30_000 * DOLLAR - 60 * DOLLAR
        );
        assert_eq!(funds.balance(buyer, "BTC"), 100_000_000);
        assert_eq!(funds.balance(seller, "BTC"), 0);
        assert_eq!(funds.balance(seller, "USD"), 30_000 * DOLLAR - 30 * DOLLAR);
        assert_eq!(
            funds.of_account(seller),
            vec![("USD".to_owned(), 29_970 * DOLLAR, 0)]
        );
    }

    fn settled_trade(trade: Uuid, buyer: Uuid, seller: Uuid, fee: i64) -> Vec<Movement> {
        Movement::settled(&TradeSettled {
            trade_id: trade,
            symbol: "BTC-USD".to_owned(),
            buyer_account_id: buyer,
            seller_account_id: seller,
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: 100 * DOLLAR,
            quantity: 50,
            notional: 50 * DOLLAR,
            buyer_fee: fee,
            seller_fee: 0,
            fee_asset: "USD".to_owned(),
        })
        .unwrap()
    }

    fn debits(buy: (Uuid, Uuid), sell: (Uuid, Uuid), fee: i64) -> Vec<Debit> {
        vec![
            Debit {
                order: buy.0,
                account: buy.1,
                asset: "USD".to_owned(),
                amount: 50 * DOLLAR + fee,
            },
            Debit {
                order: sell.0,
                account: sell.1,
                asset: "BTC".to_owned(),
                amount: 50,
            },
        ]
    }

    /// A buy reserving 100 USD and a sell reserving 100 BTC units, half of each filled, both
    /// ended: whichever stream is ahead, free never exceeds what the ledger will leave, and at
    /// rest it is exactly the balance.
    #[test]
    fn free_is_exact_at_rest_and_never_too_high_whichever_stream_is_ahead() {
        for settled_first in [false, true] {
            let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
            let (buy, sell, trade) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
            let fee = 10;
            let mut funds = Funds::default();
            funds.load(snapshot(
                5,
                &[(buyer, "USD", 150 * DOLLAR), (seller, "BTC", 120)],
            ));
            funds.reserve(buy, buyer, "USD", 100 * DOLLAR + 20).unwrap();
            funds.reserve(sell, seller, "BTC", 100).unwrap();
            assert_eq!(funds.free(buyer, "USD"), 50 * DOLLAR - 20);
            assert_eq!(
                funds.reserve(Uuid::now_v7(), seller, "BTC", 21),
                Err(Short { free: 20 }),
                "a reservation beyond what is free is refused"
            );
            assert_eq!(
                funds.reserve(sell, seller, "BTC", 100),
                Ok(()),
                "a retried check holds its first reservation, not a second"
            );
            assert_eq!(funds.free(seller, "BTC"), 20);

            let movements = settled_trade(trade, buyer, seller, fee);
            // What the buyer may spend once everything is settled and released.
            let at_rest = 150 * DOLLAR - 50 * DOLLAR - fee;
            if settled_first {
                assert!(funds.settled(6, trade, &movements).unwrap());
                assert!(
                    funds.free(buyer, "USD") <= at_rest,
                    "settled but not yet seen to execute: too low if anything"
                );
                funds.executed(trade, debits((buy, buyer), (sell, seller), fee));
            } else {
                funds.executed(trade, debits((buy, buyer), (sell, seller), fee));
                funds.executed(trade, debits((buy, buyer), (sell, seller), fee));
                assert_eq!(
                    funds.free(buyer, "USD"),
                    50 * DOLLAR - 20,
                    "execution moves the debit from the reservation, once"
                );
                assert!(funds.settled(6, trade, &movements).unwrap());
            }
            assert_eq!(funds.reserved(buy), 50 * DOLLAR + 20 - fee);
            assert_eq!(funds.free(buyer, "USD"), 50 * DOLLAR - 20);
            funds.release(buy);
            funds.release(sell);
            assert_eq!(funds.free(buyer, "USD"), at_rest, "{settled_first}");
            assert_eq!(funds.free(buyer, "USD"), funds.balance(buyer, "USD"));
            assert_eq!(funds.free(seller, "BTC"), 70);
            assert_eq!(funds.committed(seller, "BTC"), 0);
            assert_eq!(funds.balance(seller, "USD"), 50 * DOLLAR);
        }
    }

    /// A restart: the snapshot already holds a trade that settled while risk was away, and
    /// its settlement is given again. The balance does not move twice; the debit its
    /// execution committed is no longer committed.
    #[test]
    fn a_settlement_the_snapshot_holds_still_ends_its_trades_debits() {
        let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
        let (buy, sell, trade) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut funds = Funds::default();
        funds.load(snapshot(9, &[(buyer, "USD", 100 * DOLLAR)]));
        funds.reserve(buy, buyer, "USD", 60 * DOLLAR).unwrap();
        funds.executed(trade, debits((buy, buyer), (sell, seller), 0));
        // The snapshot is taken again after the trade settled (position 10)…
        funds.load(snapshot(
            10,
            &[(buyer, "USD", 50 * DOLLAR), (buyer, "BTC", 50)],
        ));
        assert_eq!(
            funds.free(buyer, "USD"),
            50 * DOLLAR - 60 * DOLLAR,
            "too low until…"
        );
        // …and the settlement arrives at or below it.
        let movements = settled_trade(trade, buyer, seller, 0);
        assert!(!funds.settled(10, trade, &movements).unwrap());
        assert_eq!(funds.balance(buyer, "USD"), 50 * DOLLAR);
        assert_eq!(funds.free(buyer, "USD"), 40 * DOLLAR);
        funds.release(buy);
        assert_eq!(funds.free(buyer, "USD"), 50 * DOLLAR);
    }

    /// A restart between a trade's execution and its settlement: the new `Funds` is given
    /// what the tables kept (the order's reservation net of the fill, the trade's debits) and
    /// commits exactly what the old one did, and ends exactly where it would have.
    #[test]
    fn what_the_tables_kept_commits_after_a_restart_what_memory_had() {
        let (buyer, seller) = (Uuid::now_v7(), Uuid::now_v7());
        let (buy, sell, trade) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let balances = [(buyer, "USD", 150 * DOLLAR), (seller, "BTC", 120)];
        let mut before = Funds::default();
        before.load(snapshot(5, &balances));
        before.reserve(buy, buyer, "USD", 100 * DOLLAR).unwrap();
        before.executed(trade, debits((buy, buyer), (sell, seller), 0));

        let mut after = Funds::default();
        after.adopt(
            buy,
            buyer,
            &Held {
                asset: "USD".to_owned(),
                amount: before.reserved(buy),
            },
        );
        after.restore(trade, Some(debits((buy, buyer), (sell, seller), 0)));
        after.load(snapshot(5, &balances));
        assert_eq!(after.committed(buyer, "USD"), 100 * DOLLAR);
        assert_eq!(after.committed(seller, "BTC"), 50, "the seller's debit too");
        assert_eq!(after.free(buyer, "USD"), before.free(buyer, "USD"));
        after.adopt(
            buy,
            buyer,
            &Held {
                asset: "USD".to_owned(),
                amount: 100 * DOLLAR,
            },
        );
        assert_eq!(
            after.reserved(buy),
            50 * DOLLAR,
            "a reservation already held is not taken in again"
        );

        let movements = settled_trade(trade, buyer, seller, 0);
        for funds in [&mut before, &mut after] {
            assert!(funds.settled(6, trade, &movements).unwrap());
            funds.release(buy);
            assert_eq!(funds.free(buyer, "USD"), 100 * DOLLAR);
            assert_eq!(funds.free(seller, "BTC"), 70);
        }

        // A trade that settled first is restored as such: its execution only shrinks the
        // reservation it comes out of.
        let (late, order) = (Uuid::now_v7(), Uuid::now_v7());
        after.reserve(order, buyer, "USD", 60 * DOLLAR).unwrap();
        after.restore(late, None);
        after.executed(late, debits((order, buyer), (sell, seller), 0));
        assert_eq!(after.committed(buyer, "USD"), 10 * DOLLAR);
    }

    #[test]
    fn an_event_that_would_overflow_moves_nothing() {
        let alice = Uuid::now_v7();
        let mut funds = Funds::default();
        funds.load(snapshot(0, &[(alice, "USD", i64::MAX - 1)]));
        let both = [
            Movement::new(alice, "BTC", 7),
            Movement::new(alice, "USD", 2),
        ];
        assert_eq!(funds.apply(1, &both), Err(Overflow));
        assert_eq!(funds.balance(alice, "BTC"), 0, "not half of it");
        assert_eq!(funds.position(), Some(0), "and not marked as included");
    }

    fn compared(comparison: Comparison) -> Compared {
        match comparison {
            Comparison::Compared(compared) => compared,
            other => panic!("expected a comparison, got {other:?}"),
        }
    }

    #[test]
    fn a_ledger_snapshot_from_before_later_events_rolls_forward_to_the_same_balances() {
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut funds = Funds::default();
        funds.load(snapshot(10, &[(alice, "USD", 100)]));
        funds.apply(11, &deposit(alice, "USD", 50)).unwrap();
        funds.apply(12, &deposit(bob, "BTC", 5)).unwrap();

        // Settlement's snapshot was taken between the two deposits.
        let found = compared(funds.compare(&snapshot(11, &[(alice, "USD", 150)])));

        assert_eq!(found.mismatches, vec![]);
        assert_eq!(found.balances, 2, "alice's USD and bob's BTC");
        assert_eq!((found.ledger_position, found.risk_position), (11, 12));
    }

    #[test]
    fn a_balance_either_side_has_differently_or_alone_is_a_mismatch() {
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut funds = Funds::default();
        funds.load(snapshot(10, &[(alice, "USD", 100)]));
        funds.apply(11, &deposit(alice, "BTC", 7)).unwrap();

        // The ledger has a cent more for alice, bob's EUR risk never heard of, and no BTC
        // deposit for alice.
        let found = compared(funds.compare(&snapshot(11, &[(alice, "USD", 101), (bob, "EUR", 3)])));

        let mut expected = vec![
            Mismatch {
                account: alice,
                asset: "BTC".into(),
                ledger: 0,
                risk: 7,
            },
            Mismatch {
                account: alice,
                asset: "USD".into(),
                ledger: 101,
                risk: 100,
            },
            Mismatch {
                account: bob,
                asset: "EUR".into(),
                ledger: 3,
                risk: 0,
            },
        ];
        expected.sort_by(|a, b| (a.account, &a.asset).cmp(&(b.account, &b.asset)));
        assert_eq!(found.mismatches, expected);
        assert_eq!(found.balances, 3);
    }

    #[test]
    fn balances_that_have_not_reached_the_snapshot_are_behind_not_wrong() {
        let alice = Uuid::now_v7();
        let mut funds = Funds::default();
        let ledger = snapshot(12, &[(alice, "USD", 150)]);
        assert_eq!(
            funds.compare(&ledger),
            Comparison::Behind { included: None }
        );

        funds.load(snapshot(10, &[(alice, "USD", 100)]));
        funds.apply(11, &deposit(alice, "USD", 50)).unwrap();
        assert_eq!(
            funds.compare(&ledger),
            Comparison::Behind { included: Some(11) }
        );
    }

    #[test]
    fn a_snapshot_older_than_the_kept_movements_cannot_be_compared() {
        let alice = Uuid::now_v7();
        let mut funds = Funds::default();
        funds.load(snapshot(0, &[]));
        let last = i64::try_from(JOURNAL_EVENTS).unwrap() + 1;
        for position in 1..=last {
            funds.apply(position, &deposit(alice, "USD", 1)).unwrap();
        }

        // The first deposit's movements are no longer kept: a snapshot from before it
        // cannot be rolled forward.
        assert_eq!(
            funds.compare(&snapshot(0, &[])),
            Comparison::Outrun { kept_since: 1 }
        );
        let found = compared(funds.compare(&snapshot(1, &[(alice, "USD", 1)])));
        assert_eq!(found.mismatches, vec![]);

        // A new snapshot (a restart) starts the kept movements again.
        funds.load(snapshot(last, &[(alice, "USD", last)]));
        let found = compared(funds.compare(&snapshot(last, &[(alice, "USD", last)])));
        assert_eq!((found.balances, found.mismatches.len()), (1, 0));
    }
}
