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
//! A balance here is available and held together, as settlement books them: holds move money
//! between the two without an event, and the pre-trade stage will do its own reserving
//! (ADR 0023, slice 2 onwards).

use std::collections::HashMap;

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

/// Balances per (account, asset), and how far into settlement's history they go.
#[derive(Debug, Default)]
pub struct Funds {
    /// The newest settlement event the balances include; `None` until the snapshot is in.
    position: Option<i64>,
    balances: HashMap<(Uuid, String), i64>,
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
    }

    /// The newest settlement event included; `None` before the snapshot is loaded.
    pub fn position(&self) -> Option<i64> {
        self.position
    }

    pub fn balance(&self, account: Uuid, asset: &str) -> i64 {
        self.balances
            .get(&(account, asset.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The account's non-zero balances, by asset.
    pub fn of_account(&self, account: Uuid) -> Vec<(String, i64)> {
        let mut owned: Vec<(String, i64)> = self
            .balances
            .iter()
            .filter(|((owner, _), balance)| *owner == account && **balance != 0)
            .map(|((_, asset), balance)| (asset.clone(), *balance))
            .collect();
        owned.sort();
        owned
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
        Ok(true)
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
            vec![("USD".to_owned(), 29_970 * DOLLAR)]
        );
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
}
