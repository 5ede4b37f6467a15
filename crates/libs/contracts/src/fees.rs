//! Trading fees: what settlement books and what orders shows on each fill — one formula, so
//! the two never disagree (ADR 0008: amounts and fees round down, in the customer's favour).

use crate::Side;

/// Basis points: 1 bps = 0.01 %.
const BPS: i128 = 10_000;

/// Above 10 % a fee is a typo, not a pricing decision.
pub const MAX_BPS: u32 = 1_000;

/// Fees on a trade's quote amount, by the side's liquidity (`BOURSE_MAKER_FEE_BPS`,
/// `BOURSE_TAKER_FEE_BPS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    pub maker_bps: u32,
    pub taker_bps: u32,
}

impl Default for Fees {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Fees {
    /// The defaults: 10 bps for makers, 20 for takers.
    pub const DEFAULT: Fees = Fees {
        maker_bps: 10,
        taker_bps: 20,
    };

    /// Checked against [`MAX_BPS`]; the error names the setting (`BOURSE_*_FEE_BPS`) at fault.
    pub fn new(maker_bps: u32, taker_bps: u32) -> Result<Self, (&'static str, String)> {
        for (variable, bps) in [
            ("BOURSE_MAKER_FEE_BPS", maker_bps),
            ("BOURSE_TAKER_FEE_BPS", taker_bps),
        ] {
            if bps > MAX_BPS {
                return Err((variable, format!("at most {MAX_BPS} bps (10 %)")));
            }
        }
        Ok(Self {
            maker_bps,
            taker_bps,
        })
    }

    pub fn highest_bps(self) -> u32 {
        self.maker_bps.max(self.taker_bps)
    }

    /// The fee of the side that was maker (`true`) or taker.
    pub fn bps(self, maker: bool) -> u32 {
        if maker {
            self.maker_bps
        } else {
            self.taker_bps
        }
    }
}

/// `price` quote minor units per whole base unit × `quantity` base minor units, in quote minor
/// units, rounded down; `None` when it does not fit.
pub fn notional(price: i64, quantity: i64, base_scale: u32) -> Option<i64> {
    let one_base = 10i128.checked_pow(base_scale)?;
    i64::try_from(i128::from(price) * i128::from(quantity) / one_base).ok()
}

/// The fee on `notional` at `bps`, rounded down.
pub fn fee(notional: i64, bps: u32) -> Option<i64> {
    i64::try_from(i128::from(notional) * i128::from(bps) / BPS).ok()
}

fn div_ceil(numerator: i128, denominator: i128) -> i128 {
    (numerator + denominator - 1) / denominator
}

/// What an order can cost at most, in its hold asset (base for a sell, quote for a buy): a
/// sell its base quantity; a buy the quote amount at its limit price (a market buy: its
/// protection price) plus the highest fee it could pay, both rounded *up*. Amounts and fees of
/// fills round down, so the sum over any set of partial fills never exceeds it (settlement's
/// property tests). Settlement holds it; risk reserves it (ADR 0023). `None` when it does not
/// fit 64-bit minor units.
pub fn hold_amount(
    side: Side,
    price: i64,
    quantity: i64,
    base_scale: u32,
    fees: Fees,
) -> Option<i64> {
    match side {
        Side::Sell => Some(quantity),
        Side::Buy => {
            let one_base = 10i128.checked_pow(base_scale)?;
            // Price × quantity fits i128; the cost only if it fits i64, checked before the fee.
            let cost =
                i64::try_from(div_ceil(i128::from(price) * i128::from(quantity), one_base)).ok()?;
            let fee = div_ceil(i128::from(cost) * i128::from(fees.highest_bps()), BPS);
            i64::try_from(i128::from(cost) + fee).ok()
        }
    }
}

/// What one fill of a buy costs its buyer: the notional and their fee, rounded down.
pub fn buyer_pays(notional: i64, buyer_is_maker: bool, fees: Fees) -> Option<i64> {
    notional.checked_add(fee(notional, fees.bps(buyer_is_maker))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_fees_round_down() {
        // 0.4 BTC at 30,000.00 USD = 12,000.00; 20 bps of it = 24.00.
        assert_eq!(notional(3_000_000, 40_000_000, 8), Some(1_200_000));
        assert_eq!(fee(1_200_000, 20), Some(2_400));
        // 0.0001 BTC at 0.01 USD is a millionth of a dollar: nothing, not a cent.
        assert_eq!(notional(1, 10_000, 8), Some(0));
        assert_eq!(fee(99, 100), Some(0));
        assert_eq!(notional(i64::MAX, i64::MAX, 0), None);
    }
}
