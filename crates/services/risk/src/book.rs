//! The in-memory state checks are answered from, and the checks themselves (TRD-10, TRD-11).
//!
//! One `Book` behind one mutex: a check reads and reserves in the same critical section, so
//! thirty racing orders cannot all squeeze under one open-order or position limit. What it
//! knows comes from the database on start, then from the admin API (limits, kill switches) and
//! from the orders stream (open orders, fills, positions, last prices) after each commit.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use contracts::checks::{CheckRequest, CheckedOrderType, RiskCode};
use contracts::fees::Fees;

use crate::funds::{Debit, Funds, Held};
use crate::limits::Limits;
use crate::positions::{Position, Side};

/// An approved order not seen on the orders stream within this long was never stored (orders
/// crashed after the check, or could not announce its refusal): its reservation lapses.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// Why a check reserved no funds; each refuses the order.
enum Unreserved {
    /// Not enough free.
    Short { free: i64, asset: String },
    /// What the order could cost does not fit 64-bit minor units.
    Overflow,
    /// Risk cannot tell yet (balances not loaded, or the orders stream not read up to this
    /// start's mark), or the orders replica did not send the order's assets. The outcome's
    /// label; the order is refused for now (503), as while risk is away (ADR 0018).
    Undecided(&'static str),
}

/// Why an order was refused: its code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub code: RiskCode,
    pub detail: String,
    /// Not the order's fault: risk cannot decide on its funds right now (503, try again),
    /// rather than the order breaking a rule (422).
    pub undecided: bool,
}

fn breach(code: RiskCode, detail: impl Into<String>) -> Breach {
    Breach {
        code,
        detail: detail.into(),
        undecided: false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub id: Uuid,
    /// `global`, `account` or `symbol`.
    pub scope: String,
    /// The account id or symbol; none for global.
    pub target: Option<String>,
    pub reason: String,
}

impl KillSwitch {
    pub fn covers(&self, account: Uuid, symbol: &str) -> bool {
        match (self.scope.as_str(), self.target.as_deref()) {
            ("global", _) => true,
            ("account", Some(target)) => target == account.to_string(),
            ("symbol", Some(target)) => target == symbol,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct OpenOrder {
    account: Uuid,
    symbol: String,
    side: Side,
    remaining: i64,
    /// Set while only the check knows of it; cleared when `OrderAccepted` confirms it.
    reserved_at: Option<Instant>,
}

/// Per (account, symbol): the position and what open orders could add to it.
#[derive(Clone, Copy, Debug, Default)]
struct Exposure {
    position: Position,
    open_buy: i64,
    open_sell: i64,
}

/// A change the orders-stream consumer committed, applied to memory after the commit.
#[derive(Clone, Debug)]
pub enum Change {
    Opened {
        order: Uuid,
        account: Uuid,
        symbol: String,
        side: Side,
        remaining: i64,
        /// What its funds reserve (ADR 0023); none for an order accepted before it was known.
        reserved: Option<Held>,
    },
    Remaining {
        order: Uuid,
        remaining: i64,
    },
    Ended {
        order: Uuid,
    },
    Position {
        account: Uuid,
        symbol: String,
        position: Position,
    },
    LastPrice {
        symbol: String,
        price: i64,
    },
    /// A trade's debits, out of its orders' reservations until it settles.
    Executed {
        trade: Uuid,
        debits: Vec<Debit>,
    },
    /// A mark on the orders stream was read (`StreamMarked`).
    MarkRead {
        mark: Uuid,
    },
}

#[derive(Default)]
pub struct Book {
    defaults: Option<Limits>,
    limits: HashMap<Uuid, Limits>,
    kill_switches: Vec<KillSwitch>,
    open: HashMap<Uuid, OpenOrder>,
    open_count: HashMap<Uuid, u32>,
    exposure: HashMap<(Uuid, String), Exposure>,
    last_price: HashMap<String, i64>,
    /// Per account: the second being counted and how many orders passed in it.
    throttle: HashMap<Uuid, (u64, u32)>,
    /// Reservations in the order they were made, so lapsed ones are found from the front
    /// without scanning every open order.
    reservations: VecDeque<(Instant, Uuid)>,
    /// What each account owns, followed from settlement (ADR 0023): under the same lock as
    /// the checks, so a check can reserve against it atomically.
    funds: Funds,
    /// What fills cost and what reservations hold, as settlement books them.
    fees: Fees,
    /// This process is handing over to the next one: it passes no more checks.
    handing_over: bool,
}

impl Book {
    pub fn new(defaults: Limits) -> Self {
        Self {
            defaults: Some(defaults),
            ..Self::default()
        }
    }

    /// The fee schedule reservations are computed with (default: `Fees::DEFAULT`).
    pub fn with_fees(mut self, fees: Fees) -> Self {
        self.fees = fees;
        self
    }

    pub fn funds(&self) -> &Funds {
        &self.funds
    }

    pub fn funds_mut(&mut self) -> &mut Funds {
        &mut self.funds
    }

    pub fn limits_of(&self, account: Uuid) -> Option<Limits> {
        self.limits.get(&account).copied().or(self.defaults)
    }

    pub fn set_limits(&mut self, account: Uuid, limits: Limits) {
        self.limits.insert(account, limits);
    }

    pub fn activate(&mut self, switch: KillSwitch) {
        self.kill_switches.retain(|k| k.id != switch.id);
        self.kill_switches.push(switch);
    }

    pub fn release(&mut self, id: Uuid) {
        self.kill_switches.retain(|k| k.id != id);
    }

    pub fn kill_switches(&self) -> &[KillSwitch] {
        &self.kill_switches
    }

    pub fn position(&self, account: Uuid, symbol: &str) -> Position {
        self.exposure
            .get(&(account, symbol.to_owned()))
            .map(|e| e.position)
            .unwrap_or_default()
    }

    /// Checks the order and, if it passes, reserves its place among the account's open
    /// orders and exposure. `second` is the current Unix second (the throttle's window).
    pub fn check(&mut self, order: &CheckRequest, second: u64) -> Result<(), Breach> {
        if self.open.contains_key(&order.order_id) {
            // Asked again (a retried call): it passed and holds its reservation.
            return Ok(());
        }
        if self.handing_over {
            // What this process passes now the next one would not know of (ADR 0023).
            return Err(Breach {
                code: RiskCode::FundsLoading,
                detail: "risk is handing over to its next process; try again shortly".to_owned(),
                undecided: true,
            });
        }
        let Some(limits) = self.limits_of(order.account_id) else {
            return Err(breach(
                RiskCode::RiskUnconfigured,
                "no limits are configured",
            ));
        };
        if let Some(switch) = self
            .kill_switches
            .iter()
            .find(|k| k.covers(order.account_id, &order.symbol))
        {
            return Err(breach(
                RiskCode::KillSwitch,
                format!(
                    "trading is stopped ({} kill switch: {})",
                    switch.scope, switch.reason
                ),
            ));
        }
        if order.quantity <= 0 || order.price <= 0 {
            return Err(breach(
                RiskCode::InvalidOrder,
                "price and quantity must be positive",
            ));
        }
        if limits
            .max_order_quantity
            .exceeded_by(i128::from(order.quantity), order.base_scale)
        {
            return Err(breach(
                RiskCode::MaxOrderQuantity,
                format!("at most {} per order", limits.max_order_quantity),
            ));
        }
        let notional = i128::from(order.price) * i128::from(order.quantity);
        if limits
            .max_order_notional
            .exceeded_by(notional, order.base_scale + order.quote_scale)
        {
            return Err(breach(
                RiskCode::MaxOrderNotional,
                format!(
                    "at most {} of notional per order",
                    limits.max_order_notional
                ),
            ));
        }
        // The reference: the last trade, else the book's mid, else none (no collar).
        let reference = self.last_price.get(&order.symbol).copied().or(order.mid);
        if order.order_type == CheckedOrderType::Limit
            && let Some(reference) = reference
        {
            let band = i128::from(reference) * i128::from(limits.price_collar_bps) / 10_000;
            let (low, high) = (i128::from(reference) - band, i128::from(reference) + band);
            if !(low..=high).contains(&i128::from(order.price)) {
                return Err(breach(
                    RiskCode::PriceCollar,
                    format!(
                        "the price must be within {} bps of the reference price {reference}",
                        limits.price_collar_bps
                    ),
                ));
            }
        }
        let now = Instant::now();
        self.sweep(now);
        let open = self.open_count.get(&order.account_id).copied().unwrap_or(0);
        if open >= limits.max_open_orders {
            return Err(breach(
                RiskCode::MaxOpenOrders,
                format!("at most {} open orders", limits.max_open_orders),
            ));
        }
        let (window, passed) = self
            .throttle
            .get(&order.account_id)
            .copied()
            .unwrap_or((second, 0));
        let passed = if window == second { passed } else { 0 };
        if passed >= limits.max_orders_per_second {
            return Err(breach(
                RiskCode::MaxOrdersPerSecond,
                format!("at most {} orders per second", limits.max_orders_per_second),
            ));
        }
        let key = (order.account_id, order.symbol.clone());
        let exposure = self.exposure.get(&key).copied().unwrap_or_default();
        let net = i128::from(exposure.position.net);
        let worst = match order.side {
            Side::Buy => net + i128::from(exposure.open_buy) + i128::from(order.quantity),
            Side::Sell => net - i128::from(exposure.open_sell) - i128::from(order.quantity),
        };
        if limits
            .max_position
            .exceeded_by(worst.abs(), order.base_scale)
        {
            return Err(breach(
                RiskCode::MaxPosition,
                format!(
                    "the position could exceed {} with this order and your open orders",
                    limits.max_position
                ),
            ));
        }
        // Last, since it is the one check that takes something: the order's funds.
        self.reserve_funds(order)?;
        // Passed: count it and reserve its place until orders confirms or ends it.
        self.throttle.insert(order.account_id, (second, passed + 1));
        self.open_order(
            order.order_id,
            order.account_id,
            &order.symbol,
            order.side,
            order.quantity,
            Some(now),
        );
        self.reservations.push_back((now, order.order_id));
        Ok(())
    }

    /// Reserves what the order could cost or refuses it: `insufficient_funds`, or
    /// `amount_out_of_range` (422); `funds_loading` (503) while risk cannot decide. Nothing
    /// after this holds funds for the order (ADR 0023 slice 3b): the ledger posts its trades
    /// from the balance, so an order risk cannot fund does not trade.
    /// `risk_funds_reservations_total{outcome}` counts each outcome.
    fn reserve_funds(&mut self, order: &CheckRequest) -> Result<(), Breach> {
        let outcome = self.try_reserve_funds(order);
        let label = match &outcome {
            Ok(()) => "reserved",
            Err(Unreserved::Short { .. }) => "short",
            Err(Unreserved::Overflow) => "overflow",
            Err(Unreserved::Undecided(why)) => why,
        };
        metrics::counter!("risk_funds_reservations_total", "outcome" => label).increment(1);
        match outcome {
            Err(Unreserved::Short { free, asset }) => Err(breach(
                RiskCode::InsufficientFunds,
                format!(
                    "not enough free {asset}: {} free",
                    contracts::format_units(free.max(0), order.scale_of(&asset))
                ),
            )),
            Err(Unreserved::Overflow) => Err(breach(
                RiskCode::AmountOutOfRange,
                "what this order could cost is too large for the ledger",
            )),
            Err(Unreserved::Undecided(why)) => Err(Breach {
                code: RiskCode::FundsLoading,
                detail: format!("risk cannot decide on funds yet ({why}); try again shortly"),
                undecided: true,
            }),
            Ok(()) => Ok(()),
        }
    }

    fn try_reserve_funds(&mut self, order: &CheckRequest) -> Result<(), Unreserved> {
        let (Some(base), Some(quote)) = (&order.base_asset, &order.quote_asset) else {
            return Err(Unreserved::Undecided("no_assets"));
        };
        if !self.funds.deciding() {
            return Err(Unreserved::Undecided("not_loaded"));
        }
        let asset = match order.side {
            Side::Buy => quote,
            Side::Sell => base,
        };
        let amount = contracts::fees::hold_amount(
            order.side,
            order.price,
            order.quantity,
            order.base_scale,
            self.fees,
        )
        .ok_or(Unreserved::Overflow)?;
        self.funds
            .reserve(order.order_id, order.account_id, asset, amount)
            .map_err(|short| Unreserved::Short {
                free: short.free,
                asset: asset.clone(),
            })
    }

    /// Ends what checks reserved for orders never seen on the orders stream within
    /// [`RESERVATION_TTL`] of `now`. Every check sweeps first; so does a periodic task, so a
    /// lapse does not wait for the account's next order.
    pub fn sweep(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.reservations.front() {
            if now.saturating_duration_since(at) <= RESERVATION_TTL {
                break;
            }
            self.reservations.pop_front();
            // Still only reserved (never confirmed by `OrderAccepted`, never ended): it lapses.
            if self.open.get(&id).is_some_and(|o| o.reserved_at.is_some()) {
                self.end(id);
            }
        }
    }

    /// Passes no more checks, for good: this process is handing over to the next (ADR 0023,
    /// "A handover"). A check asked again keeps its answer; any other is refused for now, as
    /// while funds cannot decide.
    pub fn hand_over(&mut self) {
        self.handing_over = true;
    }

    /// Whether an order a check passed may still reach the book without its acceptance read
    /// here: a reservation neither confirmed by `OrderAccepted` nor ended, made less than
    /// `within` before `now`. Older ones cannot be booked any more (the bound on checks).
    pub fn awaits_acceptances(&self, now: Instant, within: Duration) -> bool {
        // Newest first: the reservations are in the order they were made.
        self.reservations
            .iter()
            .rev()
            .take_while(|(at, _)| now.saturating_duration_since(*at) < within)
            .any(|(_, id)| self.open.get(id).is_some_and(|o| o.reserved_at.is_some()))
    }

    fn open_order(
        &mut self,
        id: Uuid,
        account: Uuid,
        symbol: &str,
        side: Side,
        remaining: i64,
        reserved_at: Option<Instant>,
    ) {
        if let Some(existing) = self.open.get_mut(&id) {
            // The check's reservation, now confirmed.
            existing.reserved_at = reserved_at.and(existing.reserved_at);
            return;
        }
        self.open.insert(
            id,
            OpenOrder {
                account,
                symbol: symbol.to_owned(),
                side,
                remaining,
                reserved_at,
            },
        );
        *self.open_count.entry(account).or_default() += 1;
        self.add_open(account, symbol, side, remaining);
    }

    fn add_open(&mut self, account: Uuid, symbol: &str, side: Side, quantity: i64) {
        let exposure = self
            .exposure
            .entry((account, symbol.to_owned()))
            .or_default();
        match side {
            Side::Buy => exposure.open_buy += quantity,
            Side::Sell => exposure.open_sell += quantity,
        }
    }

    fn end(&mut self, id: Uuid) {
        self.funds.release(id);
        if let Some(order) = self.open.remove(&id) {
            if let Some(count) = self.open_count.get_mut(&order.account) {
                *count = count.saturating_sub(1);
            }
            self.add_open(order.account, &order.symbol, order.side, -order.remaining);
        }
    }

    /// Applies what the consumer committed.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Opened {
                order,
                account,
                symbol,
                side,
                remaining,
                reserved,
            } => {
                self.open_order(order, account, &symbol, side, remaining, None);
                if let Some(held) = reserved {
                    self.funds.adopt(order, account, &held);
                }
            }
            Change::Remaining { order, remaining } => {
                if let Some(open) = self.open.get_mut(&order) {
                    let delta = remaining - open.remaining;
                    open.remaining = remaining;
                    let (account, symbol, side) = (open.account, open.symbol.clone(), open.side);
                    self.add_open(account, &symbol, side, delta);
                }
            }
            Change::Ended { order } => self.end(order),
            Change::Position {
                account,
                symbol,
                position,
            } => {
                self.exposure.entry((account, symbol)).or_default().position = position;
            }
            Change::LastPrice { symbol, price } => {
                self.last_price.insert(symbol, price);
            }
            Change::Executed { trade, debits } => self.funds.executed(trade, debits),
            Change::MarkRead { mark } => {
                if self.funds.mark_read(mark) {
                    tracing::info!(%mark, "read every order event committed before this start: funds decide from now on");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitsBody;

    fn limits() -> Limits {
        LimitsBody {
            max_order_quantity: "2".into(),
            max_order_notional: "100000".into(),
            max_open_orders: 2,
            max_orders_per_second: 3,
            max_position: "3".into(),
            price_collar_bps: 1_000,
        }
        .validate()
        .unwrap()
    }

    fn order(account: Uuid, side: Side, price: i64, quantity: i64) -> CheckRequest {
        CheckRequest {
            order_id: Uuid::now_v7(),
            account_id: account,
            symbol: "BTC-USD".into(),
            side,
            order_type: CheckedOrderType::Limit,
            price,
            quantity,
            base_scale: 8,
            quote_scale: 2,
            base_asset: Some("BTC".into()),
            quote_asset: Some("USD".into()),
            mid: None,
        }
    }

    const BTC: i64 = 100_000_000;

    /// Balances loaded: `account` owns `cents` of USD.
    fn loaded(book: &mut Book, account: Uuid, cents: i64) {
        book.funds_mut().load(contracts::funds::BalanceSnapshot {
            position: 0,
            balances: vec![contracts::funds::AccountBalance {
                account_id: account,
                asset: "USD".into(),
                balance: cents,
            }],
        });
    }

    /// Funds deciding, with more USD and BTC than any limit lets `accounts` trade: for the
    /// tests of the other limits.
    fn plenty(book: &mut Book, accounts: &[Uuid]) {
        let balances = accounts
            .iter()
            .flat_map(|account| {
                ["USD", "BTC"].map(|asset| contracts::funds::AccountBalance {
                    account_id: *account,
                    asset: asset.into(),
                    balance: 1_000_000 * BTC,
                })
            })
            .collect();
        book.funds_mut().load(contracts::funds::BalanceSnapshot {
            position: 0,
            balances,
        });
        let mark = Uuid::now_v7();
        book.funds_mut().await_mark(mark);
        book.apply(Change::MarkRead { mark });
    }

    /// Balances loaded and the orders stream read up to this start's mark: funds decide.
    fn funded(book: &mut Book, account: Uuid, cents: i64) {
        loaded(book, account, cents);
        let mark = Uuid::now_v7();
        book.funds_mut().await_mark(mark);
        book.apply(Change::MarkRead { mark });
    }

    #[test]
    fn funds_decide_only_once_the_orders_stream_is_read_up_to_this_starts_mark() {
        let account = Uuid::now_v7();
        let mut book = Book::new(Limits {
            max_open_orders: 10,
            ..limits()
        });
        loaded(&mut book, account, 1_000_000);
        // 0.5 BTC at 30,000.00 is 15,000.00: more than the 10,000.00 the account has.
        let beyond = order(account, Side::Buy, 3_000_000, BTC / 2);
        let undecided = book.check(&beyond, 1).unwrap_err();
        assert_eq!(
            (undecided.code, undecided.undecided),
            (RiskCode::FundsLoading, true),
            "balances in, but orders committed before this start may still be unread: refused for now"
        );
        assert_eq!(book.funds().committed(account, "USD"), 0);

        let mark = Uuid::now_v7();
        book.funds_mut().await_mark(mark);
        book.apply(Change::MarkRead {
            mark: Uuid::now_v7(),
        });
        assert_eq!(
            book.funds().catch_up(),
            crate::funds::OrdersCatchUp::Awaiting(mark),
            "another start's mark proves nothing about this one"
        );
        assert!(!book.funds().deciding());

        book.apply(Change::MarkRead { mark });
        assert!(book.funds().deciding());
        let beyond = order(account, Side::Buy, 3_000_000, BTC / 2);
        let refused = book.check(&beyond, 1).unwrap_err();
        assert_eq!(refused.code, RiskCode::InsufficientFunds);
    }

    #[test]
    fn a_check_reserves_the_orders_worst_cost_until_it_ends_and_refuses_beyond_it() {
        let account = Uuid::now_v7();
        let mut book = Book::new(Limits {
            max_open_orders: 10,
            ..limits()
        })
        .with_fees(Fees::new(10, 20).unwrap());
        let unfunded = order(account, Side::Buy, 3_000_000, BTC / 100);
        let undecided = book.check(&unfunded, 1).unwrap_err();
        assert_eq!(
            (undecided.code, undecided.undecided),
            (RiskCode::FundsLoading, true),
            "balances not loaded yet: refused for now, nothing else decides (ADR 0023 slice 3b)"
        );
        assert_eq!(
            book.funds().committed(account, "USD"),
            0,
            "nothing loaded yet"
        );
        assert_eq!(
            book.open_count.get(&account),
            None,
            "and no place among open orders taken"
        );

        funded(&mut book, account, 1_000_000);
        // 0.01 BTC at 30,000.00 = 300.00, plus the highest fee (20 bps, 0.60), rounded up.
        let buy = order(account, Side::Buy, 3_000_000, BTC / 100);
        assert_eq!(book.check(&buy, 1), Ok(()));
        assert_eq!(book.funds().committed(account, "USD"), 30_060);
        assert_eq!(book.check(&buy, 1), Ok(()), "a retried check");
        assert_eq!(
            book.funds().committed(account, "USD"),
            30_060,
            "reserved once"
        );

        // 10,000.00 less 300.60 is free: 0.33 BTC at 30,000.00 (9,900.00 and 19.80) is not.
        let beyond = order(account, Side::Buy, 3_000_000, BTC / 100 * 33);
        let refused = book.check(&beyond, 1).unwrap_err();
        assert_eq!(refused.code, RiskCode::InsufficientFunds);
        assert_eq!(refused.detail, "not enough free USD: 9699.40 free");
        assert_eq!(
            book.funds().committed(account, "USD"),
            30_060,
            "a refused order reserves nothing"
        );
        assert_eq!(
            book.open_count.get(&account).copied(),
            Some(1),
            "the funded one, not the refused ones"
        );

        book.apply(Change::Ended {
            order: buy.order_id,
        });
        assert_eq!(book.funds().committed(account, "USD"), 0);
        assert_eq!(book.funds().free(account, "USD"), 1_000_000);
        assert_eq!(book.check(&beyond, 1), Ok(()), "once the first has ended");
    }

    #[test]
    fn a_reservation_whose_order_never_reached_the_book_lapses_and_comes_back_if_it_does() {
        let account = Uuid::now_v7();
        let mut book = Book::new(limits());
        funded(&mut book, account, 1_000_000);
        let buy = order(account, Side::Buy, 3_000_000, BTC / 100);
        assert_eq!(book.check(&buy, 1), Ok(()));
        let reserved = book.funds().committed(account, "USD");
        assert!(reserved > 0);

        let checked_at = Instant::now();
        book.sweep(checked_at);
        assert_eq!(book.funds().committed(account, "USD"), reserved, "not yet");
        book.sweep(checked_at + RESERVATION_TTL + Duration::from_secs(1));
        assert_eq!(book.funds().committed(account, "USD"), 0, "lapsed");
        assert_eq!(
            book.open_count.get(&account).copied().unwrap_or(0),
            0,
            "and its place among the open orders with it"
        );

        // Accepted after all (orders was slower than the lapse): the stream's reservation is
        // taken in, though no check asked for it again.
        book.apply(Change::Opened {
            order: buy.order_id,
            account,
            symbol: buy.symbol.clone(),
            side: Side::Buy,
            remaining: buy.quantity,
            reserved: Some(Held {
                asset: "USD".into(),
                amount: reserved,
            }),
        });
        assert_eq!(book.funds().committed(account, "USD"), reserved);
        assert_eq!(book.funds().reserved(buy.order_id), reserved);
    }

    #[test]
    fn a_book_handing_over_passes_nothing_new_and_knows_which_passed_orders_are_still_unread() {
        let account = Uuid::now_v7();
        let mut book = Book::new(limits());
        funded(&mut book, account, 1_000_000);
        let (first, second) = (
            order(account, Side::Buy, 3_000_000, BTC / 100),
            order(account, Side::Buy, 3_000_000, BTC / 100),
        );
        let bound = Duration::from_secs(10);
        assert!(!book.awaits_acceptances(Instant::now(), bound), "none yet");
        assert_eq!(book.check(&first, 1), Ok(()));
        assert_eq!(book.check(&second, 1), Ok(()));
        assert!(book.awaits_acceptances(Instant::now(), bound));

        book.hand_over();
        let refused = book.check(&order(account, Side::Buy, 3_000_000, 1), 1);
        let refused = refused.unwrap_err();
        assert_eq!(refused.code, RiskCode::FundsLoading);
        assert!(refused.undecided, "refused for now (503), not for good");
        assert_eq!(
            book.check(&first, 1),
            Ok(()),
            "a retried check keeps its answer"
        );

        // One accepted, one ended without reaching the book: nothing is left unread.
        book.apply(Change::Opened {
            order: first.order_id,
            account,
            symbol: first.symbol.clone(),
            side: Side::Buy,
            remaining: first.quantity,
            reserved: None,
        });
        assert!(
            book.awaits_acceptances(Instant::now(), bound),
            "the second still may come"
        );
        book.apply(Change::Ended {
            order: second.order_id,
        });
        assert!(!book.awaits_acceptances(Instant::now(), bound));

        // A reservation never confirmed counts only until the bound: its order can no longer
        // be booked after that.
        let mut book = Book::new(limits());
        funded(&mut book, account, 1_000_000);
        let before = Instant::now();
        assert_eq!(book.check(&first, 1), Ok(()));
        let after = Instant::now();
        let ms = Duration::from_millis(1);
        assert!(book.awaits_acceptances(before + bound - ms, bound));
        assert!(!book.awaits_acceptances(after + bound + ms, bound));
    }

    #[test]
    fn each_limit_refuses_with_its_code() {
        let alice = Uuid::now_v7();
        let mut book = Book::new(limits());
        plenty(&mut book, &[alice]);
        let code = |book: &mut Book, o: CheckRequest| book.check(&o, 1).err().map(|b| b.code);
        assert_eq!(
            code(&mut book, order(alice, Side::Buy, 3_000_000, 3 * BTC)),
            Some(RiskCode::MaxOrderQuantity)
        );
        assert_eq!(
            code(&mut book, order(alice, Side::Buy, 6_000_000, 2 * BTC)),
            Some(RiskCode::MaxOrderNotional)
        );
        // A last trade at 30,000.00 sets the collar to 27,000.00–33,000.00.
        book.apply(Change::LastPrice {
            symbol: "BTC-USD".into(),
            price: 3_000_000,
        });
        assert_eq!(
            code(&mut book, order(alice, Side::Buy, 3_300_001, BTC / 10)),
            Some(RiskCode::PriceCollar)
        );
        assert_eq!(
            code(&mut book, order(alice, Side::Sell, 2_699_999, BTC / 10)),
            Some(RiskCode::PriceCollar)
        );
        // Two open orders pass and reserve; the third is one too many.
        assert_eq!(
            code(&mut book, order(alice, Side::Buy, 3_000_000, 2 * BTC)),
            None
        );
        assert_eq!(
            code(&mut book, order(alice, Side::Sell, 3_000_000, BTC)),
            None
        );
        assert_eq!(
            code(&mut book, order(alice, Side::Buy, 3_000_000, BTC)),
            Some(RiskCode::MaxOpenOrders)
        );
    }

    #[test]
    fn before_the_first_trade_the_collar_centres_on_the_mid() {
        let alice = Uuid::now_v7();
        let mut book = Book::new(limits());
        plenty(&mut book, &[alice]);
        let at = |price: i64, mid: Option<i64>| CheckRequest {
            mid,
            ..order(alice, Side::Sell, price, BTC / 10)
        };
        // No trade and no mid: no collar.
        assert!(book.check(&at(9_000_000, None), 1).is_ok());
        // A mid of 30,000.00: 33,000.01 is outside, 33,000.00 inside.
        assert_eq!(
            book.check(&at(3_300_001, Some(3_000_000)), 1)
                .unwrap_err()
                .code,
            RiskCode::PriceCollar
        );
        assert!(book.check(&at(3_300_000, Some(3_000_000)), 1).is_ok());
        // Once it trades, the last price wins over the mid.
        book.apply(Change::LastPrice {
            symbol: "BTC-USD".into(),
            price: 2_000_000,
        });
        assert_eq!(
            book.check(&at(2_500_000, Some(3_000_000)), 2)
                .unwrap_err()
                .code,
            RiskCode::PriceCollar
        );
    }

    #[test]
    fn positions_include_open_orders_and_the_throttle_counts_per_second() {
        let bob = Uuid::now_v7();
        let mut book = Book::new(Limits {
            max_open_orders: 100,
            max_orders_per_second: 2,
            ..limits()
        });
        plenty(&mut book, &[bob]);
        book.apply(Change::Position {
            account: bob,
            symbol: "BTC-USD".into(),
            position: Position {
                net: 2 * BTC,
                average_price: 3_000_000,
                realized_pnl: 0,
            },
        });
        // Long 2; buying 1 more reaches 3 (fine), a further 0.5 would exceed 3.
        assert!(
            book.check(&order(bob, Side::Buy, 3_000_000, BTC), 7)
                .is_ok()
        );
        let refused = book
            .check(&order(bob, Side::Buy, 3_000_000, BTC / 2), 7)
            .unwrap_err();
        assert_eq!(refused.code, RiskCode::MaxPosition);
        // One passed in second 7 (the refused one does not count); one more fits, the next must
        // wait for second 8.
        assert!(
            book.check(&order(bob, Side::Sell, 3_000_000, BTC), 7)
                .is_ok()
        );
        let throttled = book
            .check(&order(bob, Side::Sell, 3_000_000, BTC), 7)
            .unwrap_err();
        assert_eq!(throttled.code, RiskCode::MaxOrdersPerSecond);
        assert!(
            book.check(&order(bob, Side::Sell, 3_000_000, BTC), 8)
                .is_ok()
        );
    }

    #[test]
    fn a_kill_switch_stops_its_scope_until_released() {
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut book = Book::new(limits());
        plenty(&mut book, &[alice, bob]);
        let switch = KillSwitch {
            id: Uuid::now_v7(),
            scope: "account".into(),
            target: Some(alice.to_string()),
            reason: "runaway algo".into(),
        };
        book.activate(switch.clone());
        assert_eq!(
            book.check(&order(alice, Side::Buy, 100, 1), 1)
                .unwrap_err()
                .code,
            RiskCode::KillSwitch
        );
        assert!(book.check(&order(bob, Side::Buy, 100, 1), 1).is_ok());
        book.release(switch.id);
        assert!(book.check(&order(alice, Side::Buy, 100, 1), 1).is_ok());
    }
}
