//! What a user does next, drawn from a seeded mix. No IO: the driver carries it out.
//!
//! Prices are whole dollars a few dollars around a mid and quantities whole hundredths, so
//! buyers and sellers cross often and every trade's quote amount is exact in cents — the
//! balance check needs no rounding rule of its own.

use serde_json::{Value, json};

/// The mid price the workload trades around, in whole quote units.
pub const MID: i64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    LimitGtc,
    LimitIoc,
    LimitFok,
    Market,
    Cancel,
    CancelAll,
    ReadBook,
    ReadOrders,
    ReadTrades,
    ReadBalances,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::LimitGtc,
        Kind::LimitIoc,
        Kind::LimitFok,
        Kind::Market,
        Kind::Cancel,
        Kind::CancelAll,
        Kind::ReadBook,
        Kind::ReadOrders,
        Kind::ReadTrades,
        Kind::ReadBalances,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::LimitGtc => "limit_gtc",
            Kind::LimitIoc => "limit_ioc",
            Kind::LimitFok => "limit_fok",
            Kind::Market => "market",
            Kind::Cancel => "cancel",
            Kind::CancelAll => "cancel_all",
            Kind::ReadBook => "read_book",
            Kind::ReadOrders => "read_orders",
            Kind::ReadTrades => "read_trades",
            Kind::ReadBalances => "read_balances",
        }
    }

    /// Share of all actions, in percent: mostly resting limit orders, as on a real venue.
    fn weight(self) -> u32 {
        match self {
            Kind::LimitGtc => 40,
            Kind::LimitIoc => 10,
            Kind::LimitFok => 5,
            Kind::Market => 5,
            Kind::Cancel => 15,
            Kind::CancelAll => 2,
            Kind::ReadBook => 10,
            Kind::ReadOrders => 5,
            Kind::ReadTrades => 3,
            Kind::ReadBalances => 5,
        }
    }

    pub fn places_an_order(self) -> bool {
        matches!(
            self,
            Kind::LimitGtc | Kind::LimitIoc | Kind::LimitFok | Kind::Market
        )
    }
}

/// One action: who does what.
#[derive(Clone, Debug)]
pub struct Action {
    pub kind: Kind,
    /// Index of the acting account.
    pub trader: usize,
    /// The order to place, for the kinds that place one.
    pub order: Option<Value>,
}

/// The seeded source of actions.
pub struct Workload {
    rng: fastrand::Rng,
    traders: usize,
    symbol: String,
}

impl Workload {
    pub fn new(seed: u64, traders: usize, symbol: &str) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            traders: traders.max(1),
            symbol: symbol.to_owned(),
        }
    }

    pub fn next_action(&mut self) -> Action {
        let total: u32 = Kind::ALL.iter().map(|k| k.weight()).sum();
        let mut pick = self.rng.u32(0..total);
        let kind = Kind::ALL
            .into_iter()
            .find(|k| {
                if pick < k.weight() {
                    true
                } else {
                    pick -= k.weight();
                    false
                }
            })
            .unwrap_or(Kind::ReadBook);
        let trader = self.rng.usize(0..self.traders);
        let order = kind.places_an_order().then(|| self.order(kind));
        Action {
            kind,
            trader,
            order,
        }
    }

    fn order(&mut self, kind: Kind) -> Value {
        let side = if self.rng.bool() { "buy" } else { "sell" };
        let quantity = format!("0.{:02}", self.rng.u32(1..=10));
        if kind == Kind::Market {
            return json!({ "symbol": self.symbol, "side": side, "type": "market",
                           "quantity": quantity, "time_in_force": "ioc" });
        }
        // Buyers bid a little above or below the mid, sellers ask likewise: about half cross.
        let price = MID + self.rng.i64(-5..=5);
        let time_in_force = match kind {
            Kind::LimitIoc => "ioc",
            Kind::LimitFok => "fok",
            _ => "gtc",
        };
        json!({ "symbol": self.symbol, "side": side, "type": "limit",
                "price": format!("{price}.00"), "quantity": quantity,
                "time_in_force": time_in_force })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_seeded_and_covers_every_kind() {
        let draw = |seed| {
            let mut workload = Workload::new(seed, 4, "BTC-USD");
            (0..2_000)
                .map(|_| workload.next_action().kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7), "the same seed, the same run");
        let kinds = draw(7);
        for kind in Kind::ALL {
            assert!(kinds.contains(&kind), "{kind:?} never drawn");
        }
        let limits = kinds.iter().filter(|k| **k == Kind::LimitGtc).count();
        assert!(
            (600..1000).contains(&limits),
            "about 40% resting limits: {limits}"
        );
    }

    #[test]
    fn orders_are_valid_and_exact_in_cents() {
        let mut workload = Workload::new(1, 2, "BTC-USD");
        for _ in 0..500 {
            let action = workload.next_action();
            let Some(order) = action.order else { continue };
            let quantity = contracts::parse_units(order["quantity"].as_str().unwrap(), 8).unwrap();
            assert!(
                quantity > 0 && quantity % 1_000_000 == 0,
                "whole hundredths"
            );
            if let Some(price) = order["price"].as_str() {
                assert!(price.ends_with(".00"), "whole dollars: {price}");
            }
        }
    }
}
