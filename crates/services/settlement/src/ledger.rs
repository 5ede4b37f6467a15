//! The money rules, with no IO: what a hold reserves and which transfers settle a trade.
//!
//! Everything is integer minor units. A trade's quote amount and its fees are rounded *down*
//! (in the customers' favour), and a buy's hold is rounded *up*: the sum of rounded-down
//! amounts over any set of partial fills never exceeds the rounded-up amount for the whole
//! order at its limit price, so a hold always covers its order — proven by the property tests
//! below. The store applies a [`Plan`] as it is; the property tests apply the same plan to an
//! in-memory ledger and check that every asset is conserved.

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

/// What a hold for an order reserves: `contracts::fees::hold_amount` (risk reserves the same,
/// ADR 0023), in the ledger's error type.
pub fn hold_amount(
    side: Side,
    price: i64,
    quantity: i64,
    base_scale: u32,
    fees: Fees,
) -> Result<i64, Overflow> {
    contracts::fees::hold_amount(side, price, quantity, base_scale, fees).ok_or(Overflow)
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

/// One double-entry row: `amount` leaves `debit` (from its hold `hold`, if given, else from
/// its available balance) and arrives in `credit`'s available balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub asset: String,
    pub debit: Uuid,
    pub credit: Uuid,
    pub amount: i64,
    pub kind: Kind,
    pub hold: Option<Uuid>,
    pub trade: Option<Uuid>,
}

/// How one account's balances move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub available: i64,
    pub held: i64,
}

/// Transfers to write together, and what they post out of holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub transfers: Vec<Transfer>,
    /// Per hold: amount posted, base quantity filled.
    pub hold_posts: BTreeMap<Uuid, (i64, i64)>,
}

impl Plan {
    /// One net change per account, so the store updates each account once.
    pub fn deltas(&self) -> Result<BTreeMap<(Uuid, String), Delta>, Overflow> {
        let mut deltas: BTreeMap<(Uuid, String), Delta> = BTreeMap::new();
        for t in &self.transfers {
            let debit = deltas.entry((t.debit, t.asset.clone())).or_default();
            if t.hold.is_some() {
                debit.held = debit.held.checked_sub(t.amount).ok_or(Overflow)?;
            } else {
                debit.available = debit.available.checked_sub(t.amount).ok_or(Overflow)?;
            }
            let credit = deltas.entry((t.credit, t.asset.clone())).or_default();
            credit.available = credit.available.checked_add(t.amount).ok_or(Overflow)?;
        }
        Ok(deltas)
    }

    /// Adds `other` to this plan: its transfers after these, its posts summed per hold — so a
    /// batch of trades is written as one plan.
    pub fn merge(&mut self, other: &Plan) -> Result<(), Overflow> {
        self.transfers.extend(other.transfers.iter().cloned());
        for (hold, (posted, filled)) in &other.hold_posts {
            let total = self.hold_posts.entry(*hold).or_default();
            total.0 = total.0.checked_add(*posted).ok_or(Overflow)?;
            total.1 = total.1.checked_add(*filled).ok_or(Overflow)?;
        }
        Ok(())
    }

    fn push(&mut self, transfer: Transfer) {
        // Zero moves nothing; a trade too small for one quote minor unit moves no quote.
        if transfer.amount > 0 {
            self.transfers.push(transfer);
        }
    }
}

/// Net balance changes per account gathered over many plans (a consumer's batch of trades and
/// releases), written with one update per account right before the commit
/// (`store::post_deltas`) — so an account row is locked for the end of a transaction only, and
/// always in this map's (owner, asset) order, the order the hold writer locks in too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deltas(BTreeMap<(Uuid, String), Delta>);

impl Deltas {
    pub fn add(&mut self, owner: Uuid, asset: &str, change: Delta) -> Result<(), Overflow> {
        let delta = self.0.entry((owner, asset.to_owned())).or_default();
        delta.available = delta
            .available
            .checked_add(change.available)
            .ok_or(Overflow)?;
        delta.held = delta.held.checked_add(change.held).ok_or(Overflow)?;
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
    pub fn changes(&self) -> impl Iterator<Item = (Uuid, &str, Delta)> {
        self.0
            .iter()
            .filter(|(_, d)| d.available != 0 || d.held != 0)
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

/// Delivery versus payment: the quote amount moves buyer → seller out of the buy order's hold,
/// the base quantity seller → buyer out of the sell order's hold, in one plan that commits
/// whole or not at all. The buyer's fee comes out of the buy hold; the seller's out of the
/// quote they just received. Both go to the quote asset's fee account.
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
    let quote = |debit, credit, amount, kind, hold| Transfer {
        id: Uuid::now_v7(),
        asset: trade.quote_asset.clone(),
        debit,
        credit,
        amount,
        kind,
        hold,
        trade: Some(trade.id),
    };
    plan.push(quote(
        trade.buyer,
        trade.seller,
        notional,
        Kind::Trade,
        Some(trade.buy_order),
    ));
    plan.push(Transfer {
        id: Uuid::now_v7(),
        asset: trade.base_asset.clone(),
        debit: trade.seller,
        credit: trade.buyer,
        amount: trade.quantity,
        kind: Kind::Trade,
        hold: Some(trade.sell_order),
        trade: Some(trade.id),
    });
    plan.push(quote(
        trade.buyer,
        FEES,
        buyer_fee,
        Kind::Fee,
        Some(trade.buy_order),
    ));
    plan.push(quote(trade.seller, FEES, seller_fee, Kind::Fee, None));
    let buy_posted = notional.checked_add(buyer_fee).ok_or(Overflow)?;
    plan.hold_posts
        .insert(trade.buy_order, (buy_posted, trade.quantity));
    plan.hold_posts
        .insert(trade.sell_order, (trade.quantity, trade.quantity));
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
        hold: None,
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
        assert_eq!(
            of(buyer, "USD"),
            Delta {
                available: 0,
                held: -1_503_000
            }
        );
        assert_eq!(
            of(seller, "USD"),
            Delta {
                available: 1_498_500,
                held: 0
            }
        );
        assert_eq!(
            of(FEES, "USD"),
            Delta {
                available: 4_500,
                held: 0
            }
        );
        assert_eq!(
            of(seller, "BTC"),
            Delta {
                available: 0,
                held: -50_000_000
            }
        );
        assert_eq!(
            of(buyer, "BTC"),
            Delta {
                available: 50_000_000,
                held: 0
            }
        );
    }

    #[test]
    fn a_buy_hold_rounds_up_and_covers_the_highest_fee() {
        // 0.0001 BTC at 0.01 USD is 0.000001 USD: the hold still reserves one cent, plus one
        // cent of fee.
        assert_eq!(hold_amount(Side::Buy, 1, 10_000, 8, FEES_10_20), Ok(2));
        assert_eq!(
            hold_amount(Side::Buy, 3_000_000, 100_000_000, 8, FEES_10_20),
            Ok(3_006_000)
        );
        assert_eq!(
            hold_amount(Side::Sell, 3_000_000, 12_345, 8, FEES_10_20),
            Ok(12_345)
        );
        assert_eq!(
            hold_amount(Side::Buy, i64::MAX, i64::MAX, 0, FEES_10_20),
            Err(Overflow)
        );
    }

    /// An in-memory ledger that applies plans the way the store does, refusing what the
    /// database's constraints refuse.
    #[derive(Default)]
    struct Books {
        accounts: HashMap<(Uuid, String), Delta>,
        holds: HashMap<Uuid, (i64, i64)>,
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

        fn hold(&mut self, id: Uuid, owner: Uuid, asset: &str, amount: i64) -> bool {
            let account = self.accounts.entry((owner, asset.to_owned())).or_default();
            if account.available < amount {
                return false;
            }
            account.available -= amount;
            account.held += amount;
            self.holds.insert(id, (amount, 0));
            true
        }

        fn apply(&mut self, plan: &Plan) -> Result<(), String> {
            for (hold, (posted, _)) in &plan.hold_posts {
                let (amount, already) = self.holds.get_mut(hold).ok_or("no hold")?;
                *already += posted;
                if *already > *amount {
                    return Err(format!("hold {hold} overdrawn: {already} of {amount}"));
                }
            }
            for ((owner, asset), delta) in plan.deltas().map_err(|e| e.to_string())? {
                let account = self.accounts.entry((owner, asset)).or_default();
                account.available += delta.available;
                account.held += delta.held;
                if owner != EXTERNAL && (account.available < 0 || account.held < 0) {
                    return Err(format!("{owner} negative: {account:?}"));
                }
            }
            Ok(())
        }

        fn release(&mut self, hold: Uuid, owner: Uuid, asset: &str) {
            let (amount, posted) = self.holds[&hold];
            let account = self.accounts.get_mut(&(owner, asset.to_owned())).unwrap();
            account.held -= amount - posted;
            account.available += amount - posted;
        }

        fn total(&self, asset: &str) -> i64 {
            self.accounts
                .iter()
                .filter(|((_, a), _)| a == asset)
                .map(|(_, d)| d.available + d.held)
                .sum()
        }
    }

    proptest! {
        /// Random streams of partially filled orders, at random prices at or better than their
        /// limits, with random fees: every hold covers its fills, nobody goes negative, every
        /// asset sums to zero, and once the orders end nothing stays held.
        #[test]
        fn random_trade_streams_conserve_every_asset(
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
            let mut books = Books::default();
            books.deposit(buyer, "USD", 1_000_000_000_000);
            books.deposit(seller, "BTC", 1_000_000_000_000);
            for (n, (limit, lots, fills, buyer_is_taker)) in orders.into_iter().enumerate() {
                let n = n as u128;
                let (buy_order, sell_order) = (Uuid::from_u128((n * 2 + 1) << 64), Uuid::from_u128((n * 2 + 2) << 64));
                let quantity = lots * lot;
                let buy_hold = hold_amount(Side::Buy, limit, quantity, 8, fees).unwrap();
                prop_assert!(books.hold(buy_order, buyer, "USD", buy_hold));
                prop_assert!(books.hold(sell_order, seller, "BTC", quantity));
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
                    prop_assert!(books.apply(&settled.plan).is_ok(), "{:?}", books.apply(&settled.plan));
                }
                books.release(buy_order, buyer, "USD");
                books.release(sell_order, seller, "BTC");
            }
            for asset in ["USD", "BTC"] {
                prop_assert_eq!(books.total(asset), 0);
            }
            prop_assert!(books.accounts.values().all(|d| d.held == 0));
        }
    }
}
