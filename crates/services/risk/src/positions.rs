//! Positions and realized PnL from fills (TRD-12), without IO.

pub use contracts::Side;

/// One account's position in one instrument. `net` in base minor units (negative = short);
/// `average_price` of the open position and `realized_pnl` in quote minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub net: i64,
    pub average_price: i64,
    pub realized_pnl: i64,
}

impl Position {
    /// The position after a fill of `quantity` at `price`. Closing (part of) a position
    /// realizes `closed × (price − average)` (for a long; the reverse for a short); what
    /// goes beyond flat opens a new position at `price`. Integer arithmetic, truncated.
    pub fn fill(self, side: Side, price: i64, quantity: i64, base_scale: u32) -> Self {
        let one = 10i128.pow(base_scale);
        let signed = match side {
            Side::Buy => i128::from(quantity),
            Side::Sell => -i128::from(quantity),
        };
        let net = i128::from(self.net);
        let average = i128::from(self.average_price);
        let price = i128::from(price);
        let mut realized = i128::from(self.realized_pnl);
        let new_net = net + signed;
        let average = if net == 0 || net.signum() == signed.signum() {
            // Opening or adding: the average moves, weighted by quantity.
            (net.abs() * average + signed.abs() * price) / new_net.abs().max(1)
        } else {
            let closed = signed.abs().min(net.abs());
            realized += closed * (price - average) * net.signum() / one;
            if new_net == 0 {
                0
            } else if new_net.signum() == net.signum() {
                average
            } else {
                // Flipped: the rest opens at this price.
                price
            }
        };
        let fit = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        Position {
            net: fit(new_net),
            average_price: fit(average),
            realized_pnl: fit(realized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BTC: u32 = 8;

    #[test]
    fn buying_then_selling_realizes_the_difference() {
        // Buy 1 BTC at 30,000.00 and 1 at 31,000.00: long 2 at 30,500.00.
        let p = Position::default()
            .fill(Side::Buy, 3_000_000, 100_000_000, BTC)
            .fill(Side::Buy, 3_100_000, 100_000_000, BTC);
        assert_eq!(
            (p.net, p.average_price, p.realized_pnl),
            (200_000_000, 3_050_000, 0)
        );
        // Sell 0.5 at 32,000.00: 0.5 × 1,500.00 = 750.00 realized, still long 1.5 at 30,500.
        let p = p.fill(Side::Sell, 3_200_000, 50_000_000, BTC);
        assert_eq!(
            (p.net, p.average_price, p.realized_pnl),
            (150_000_000, 3_050_000, 75_000)
        );
        // Sell 2 at 30,000.00: closes 1.5 (−750.00), opens short 0.5 at 30,000.00.
        let p = p.fill(Side::Sell, 3_000_000, 200_000_000, BTC);
        assert_eq!(
            (p.net, p.average_price, p.realized_pnl),
            (-50_000_000, 3_000_000, 0)
        );
        // Buy back 0.5 at 29,000.00: a short gains 500.00 × 0.5 = 500.00 → flat.
        let p = p.fill(Side::Buy, 2_900_000, 50_000_000, BTC);
        assert_eq!((p.net, p.average_price, p.realized_pnl), (0, 0, 50_000));
    }
}
