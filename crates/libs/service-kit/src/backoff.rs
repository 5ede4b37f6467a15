//! Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
//! Jitter"): the n-th retry waits a uniformly random time in `[0, min(cap, base × 2ⁿ)]`.
//! Randomising the whole interval, not just a little around it, is what stops a crowd of
//! clients that failed together from retrying together.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The longest wait before retry number `retry` (0 = the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait before retry number `retry`, uniform in `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
    };

    #[test]
    fn the_ceiling_doubles_per_retry_up_to_the_cap() {
        let ceilings: Vec<u128> = (0..7).map(|n| BACKOFF.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(BACKOFF.ceiling(200), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn delays_spread_over_the_whole_interval() {
        let delays: Vec<Duration> = (0..2_000).map(|_| BACKOFF.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter: both halves of [0, 400 ms] are used, not a narrow band around 400 ms.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(300)));
    }
}
