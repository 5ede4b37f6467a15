//! The money rules, with no IO: which transfers settle a trade.
//!
//! Everything is integer minor units. A trade's quote amount and its fees are rounded *down*
//! (in the customers' favour), and what risk reserves for a buy (`contracts::fees::hold_amount`)
//! is rounded *up*: the sum of rounded-down amounts over any set of partial fills never exceeds
//! the rounded-up amount for the whole order at its limit price, so a reservation always covers
//! its order's trades — proven by the property tests below. The store applies a [`Plan`] as it
//! is; the property tests apply the same plan to an in-memory ledger and check that every
//! asset is conserved and nobody goes negative.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Owner of each asset's external account: deposits come from it, withdrawals go to it.
pub const EXTERNAL: Uuid = Uuid::nil();
/// Owner of each asset's fee income account.
pub const FEES: Uuid = Uuid::from_u128(1);

/// The fee schedule, shared with orders (which shows each fill's fee).
pub use contracts::fees::Fees;

pub use contracts::Side;

/// An amount that does not fit the ledger's 64-bit minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the amount does not fit 64-bit minor units")]
pub struct Overflow;

/// `price` quote minor units per whole base unit × `quantity` base minor units, in quote minor
/// units, rounded down.
pub fn notional(price: i64, quantity: i64, base_scale: u32) -> Result<i64, Overflow> {
    contracts::fees::notional(price, quantity, base_scale).ok_or(Overflow)
}

/// The fee on `notional` at `bps`, rounded down.
pub fn fee(notional: i64, bps: u32) -> Result<i64, Overflow> {
    contracts::fees::fee(notional, bps).ok_or(Overflow)
}

/// A trade as settlement needs it (from `TradeExecuted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trade {
    pub id: Uuid,
    pub base_asset: String,
    pub quote_asset: String,
    pub base_scale: u32,
    pub price: i64,
    pub quantity: i64,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub buy_order: Uuid,
    pub sell_order: Uuid,
    /// Whether the buyer took liquidity (pays the taker fee) or provided it.
    pub buyer_is_taker: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deposit,
    Withdrawal,
    Trade,
    Fee,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
            Kind::Trade => "trade",
            Kind::Fee => "fee",
        }
    }
}

/// One double-entry row: `amount` leaves `debit`'s balance and arrives in `credit`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub asset: String,
    pub debit: Uuid,
    pub credit: Uuid,
    pub amount: i64,
    pub kind: Kind,
    pub trade: Option<Uuid>,
}

/// Transfers to write together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub transfers: Vec<Transfer>,
}

impl Plan {
    /// One net change per account (minor units), so the store updates each account once.
    pub fn deltas(&self) -> Result<BTreeMap<(Uuid, String), i64>, Overflow> {
        let mut deltas: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
        for t in &self.transfers {
            let debit = deltas.entry((t.debit, t.asset.clone())).or_default();
            *debit = debit.checked_sub(t.amount).ok_or(Overflow)?;
            let credit = deltas.entry((t.credit, t.asset.clone())).or_default();
            *credit = credit.checked_add(t.amount).ok_or(Overflow)?;
        }
        Ok(deltas)
    }

    /// Adds `other`'s transfers after these, so a batch of trades is written as one plan.
    pub fn merge(&mut self, other: &Plan) {
        self.transfers.extend(other.transfers.iter().cloned());
    }

    fn push(&mut self, transfer: Transfer) {
        // Zero moves nothing; a trade too small for one quote minor unit moves no quote.
        if transfer.amount > 0 {
            self.transfers.push(transfer);
        }
    }
}

/// Net balance changes per account (minor units) gathered over many plans (a consumer's batch
/// of trades), written with one update per account right before the commit
/// (`store::post_deltas`) — so an account row is locked for the end of a transaction only, and
/// always in this map's (owner, asset) order, so two writers never wait on each other in a
/// cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deltas(BTreeMap<(Uuid, String), i64>);

impl Deltas {
    pub fn add(&mut self, owner: Uuid, asset: &str, change: i64) -> Result<(), Overflow> {
        let delta = self.0.entry((owner, asset.to_owned())).or_default();
        *delta = delta.checked_add(change).ok_or(Overflow)?;
        Ok(())
    }

    pub fn add_plan(&mut self, plan: &Plan) -> Result<(), Overflow> {
        for ((owner, asset), change) in plan.deltas()? {
            self.add(owner, &asset, change)?;
        }
        Ok(())
    }

    /// The accounts that change, in lock order; an account whose changes cancel out is left
    /// alone (not locked, not written).
    pub fn changes(&self) -> impl Iterator<Item = (Uuid, &str, i64)> {
        self.0
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|((owner, asset), d)| (*owner, asset.as_str(), *d))
    }
}

/// What settling a trade moves, and the figures `TradeSettled` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub plan: Plan,
    pub notional: i64,
    pub buyer_fee: i64,
    pub seller_fee: i64,
}

/// Delivery versus payment: the quote amount moves buyer → seller, the base quantity seller →
/// buyer, in one plan that commits whole or not at all. The buyer's fee comes out of the
/// buyer's quote; the seller's out of the quote they just received. Both go to the quote
/// asset's fee account. Risk reserved what the trade takes before the order could match
/// (ADR 0023); the ledger's non-negative balances are the backstop.
pub fn settle(trade: &Trade, fees: Fees) -> Result<Settlement, Overflow> {
    let notional = notional(trade.price, trade.quantity, trade.base_scale)?;
    let (buyer_bps, seller_bps) = if trade.buyer_is_taker {
        (fees.taker_bps, fees.maker_bps)
    } else {
        (fees.maker_bps, fees.taker_bps)
    };
    let buyer_fee = fee(notional, buyer_bps)?;
    let seller_fee = fee(notional, seller_bps)?;
    let mut plan = Plan::default();
    let quote = |debit, credit, amount, kind| Transfer {
        id: Uuid::now_v7(),
        asset: trade.quote_asset.clone(),
        debit,
        credit,
        amount,
        kind,
        trade: Some(trade.id),
    };
    plan.push(quote(trade.buyer, trade.seller, notional, Kind::Trade));
    plan.push(Transfer {
        id: Uuid::now_v7(),
        asset: trade.base_asset.clone(),
        debit: trade.seller,
        credit: trade.buyer,
        amount: trade.quantity,
        kind: Kind::Trade,
        trade: Some(trade.id),
    });
    plan.push(quote(trade.buyer, FEES, buyer_fee, Kind::Fee));
    plan.push(quote(trade.seller, FEES, seller_fee, Kind::Fee));
    Ok(Settlement {
        plan,
        notional,
        buyer_fee,
        seller_fee,
    })
}

/// A deposit (external → owner) or a withdrawal (owner → external).
pub fn funding(id: Uuid, kind: Kind, owner: Uuid, asset: &str, amount: i64) -> Plan {
    let (debit, credit) = match kind {
        Kind::Withdrawal => (owner, EXTERNAL),
        _ => (EXTERNAL, owner),
    };
    let mut plan = Plan::default();
    plan.push(Transfer {
        id,
        asset: asset.to_owned(),
        debit,
        credit,
        amount,
        kind,
        trade: None,
    });
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const FEES_10_20: Fees = Fees {
        maker_bps: 10,
        taker_bps: 20,
    };

    #[test]
    fn a_trade_moves_quote_and_base_and_books_both_fees() {
        // 0.5 BTC at 30,000.00 USD: 15,000.00 USD; taker buyer pays 20 bps, maker seller 10.
        let (buyer, seller) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let trade = Trade {
            id: Uuid::from_u128(99 << 64),
            base_asset: "BTC".into(),
            quote_asset: "USD".into(),
            base_scale: 8,
            price: 3_000_000,
            quantity: 50_000_000,
            buyer,
            seller,
            buy_order: Uuid::from_u128(20),
            sell_order: Uuid::from_u128(21),
            buyer_is_taker: true,
        };
        let settled = settle(&trade, FEES_10_20).unwrap();
        assert_eq!(settled.notional, 1_500_000);
        assert_eq!(settled.buyer_fee, 3_000);
        assert_eq!(settled.seller_fee, 1_500);
        let deltas = settled.plan.deltas().unwrap();
        let of = |owner, asset: &str| deltas[&(owner, asset.to_owned())];
        assert_eq!(of(buyer, "USD"), -1_503_000);
        assert_eq!(of(seller, "USD"), 1_498_500);
        assert_eq!(of(FEES, "USD"), 4_500);
        assert_eq!(of(seller, "BTC"), -50_000_000);
        assert_eq!(of(buyer, "BTC"), 50_000_000);
    }

    #[test]
    fn a_buy_reservation_rounds_up_and_covers_the_highest_fee() {
        let reserve = |side, price, quantity, scale| {
            contracts::fees::hold_amount(side, price, quantity, scale, FEES_10_20)
        };
        // 0.0001 BTC at 0.01 USD is 0.000001 USD: the reservation is still one cent, plus one
        // cent of fee.
        assert_eq!(reserve(Side::Buy, 1, 10_000, 8), Some(2));
        assert_eq!(
            reserve(Side::Buy, 3_000_000, 100_000_000, 8),
            Some(3_006_000)
        );
        assert_eq!(reserve(Side::Sell, 3_000_000, 12_345, 8), Some(12_345));
        assert_eq!(reserve(Side::Buy, i64::MAX, i64::MAX, 0), None);
    }

    /// An in-memory ledger that applies plans the way the store does, refusing what the
    /// database's constraints refuse (a customer balance below zero).
    #[derive(Default)]
    struct Books {
        accounts: HashMap<(Uuid, String), i64>,
    }

    impl Books {
        fn deposit(&mut self, owner: Uuid, asset: &str, amount: i64) {
            self.apply(&funding(
                Uuid::now_v7(),
                Kind::Deposit,
                owner,
                asset,
                amount,
            ))
            .unwrap();
        }

        fn apply(&mut self, plan: &Plan) -> Result<(), String> {
            for ((owner, asset), delta) in plan.deltas().map_err(|e| e.to_string())? {
                let balance = self.accounts.entry((owner, asset)).or_default();
                *balance += delta;
                if owner != EXTERNAL && *balance < 0 {
                    return Err(format!("{owner} negative: {balance}"));
                }
            }
            Ok(())
        }

        fn balance(&self, owner: Uuid, asset: &str) -> i64 {
            self.accounts
                .get(&(owner, asset.to_owned()))
                .copied()
                .unwrap_or(0)
        }

        fn total(&self, asset: &str) -> i64 {
            self.accounts
                .iter()
                .filter(|((_, a), _)| a == asset)
                .map(|(_, balance)| balance)
                .sum()
        }
    }

    proptest! {
        /// Random streams of partially filled orders, at random prices at or better than their
        /// limits, with random fees, by traders who own exactly what risk reserves for their
        /// orders (`contracts::fees::hold_amount`): no order's trades take more than its
        /// reservation, nobody goes negative, and every asset sums to zero.
        #[test]
        fn random_trade_streams_stay_within_their_reservations_and_conserve_every_asset(
            orders in prop::collection::vec(
                (1i64..5_000_000, 1i64..400, prop::collection::vec((0i64..1_000_000, 1i64..100), 1..5), any::<bool>()),
                1..40,
            ),
            maker_bps in 0u32..100,
            taker_bps in 0u32..100,
        ) {
            let fees = Fees { maker_bps, taker_bps };
            let lot = 10_000; // 0.0001 BTC
            let (buyer, seller) = (Uuid::from_u128(1_000), Uuid::from_u128(1_001));
            let reservation = |limit: i64, lots: i64| {
                contracts::fees::hold_amount(Side::Buy, limit, lots * lot, 8, fees).unwrap()
            };
            let mut books = Books::default();
            books.deposit(buyer, "USD", orders.iter().map(|(limit, lots, ..)| reservation(*limit, *lots)).sum());
            books.deposit(seller, "BTC", orders.iter().map(|(_, lots, ..)| lots * lot).sum());
            for (n, (limit, lots, fills, buyer_is_taker)) in orders.into_iter().enumerate() {
                let n = n as u128;
                let (buy_order, sell_order) = (Uuid::from_u128((n * 2 + 1) << 64), Uuid::from_u128((n * 2 + 2) << 64));
                let reserved = reservation(limit, lots);
                let (mut bought_with, mut delivered) = (0, 0);
                let mut left = lots;
                for (k, (improvement, fill_lots)) in fills.into_iter().enumerate() {
                    let fill_lots = fill_lots.min(left);
                    if fill_lots == 0 { break; }
                    left -= fill_lots;
                    let trade = Trade {
                        id: Uuid::from_u128((n << 96) | ((k as u128 + 1) << 32)),
                        base_asset: "BTC".into(),
                        quote_asset: "USD".into(),
                        base_scale: 8,
                        price: (limit - improvement).max(1),
                        quantity: fill_lots * lot,
                        buyer, seller, buy_order, sell_order, buyer_is_taker,
                    };
                    let settled = settle(&trade, fees).unwrap();
                    bought_with += settled.notional + settled.buyer_fee;
                    delivered += trade.quantity;
                    prop_assert!(books.apply(&settled.plan).is_ok(), "{:?}", books.apply(&settled.plan));
                }
                prop_assert!(bought_with <= reserved, "{bought_with} spent of {reserved} reserved");
                prop_assert!(delivered <= lots * lot);
            }
            for asset in ["USD", "BTC"] {
                prop_assert_eq!(books.total(asset), 0);
            }
            prop_assert!(books.balance(buyer, "USD") >= 0 && books.balance(seller, "BTC") >= 0);
        }
    }
}
