//! The settings of one upstream. Defaults suit a call on the order path: answers are expected
//! in milliseconds, so waiting seconds for one only holds a client hostage.

use std::time::Duration;

use crate::backoff::Backoff;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Longest wait for one attempt, response headers included.
    pub timeout: Duration,
    /// Extra attempts for an idempotent call that failed on the network, timed out or got a
    /// 502/503/504. Non-idempotent calls are never retried.
    pub retries: u32,
    pub backoff: Backoff,
    /// Calls in flight at once; the excess is refused without waiting (the bulkhead).
    pub max_concurrent: usize,
    pub breaker: BreakerSettings,
}

/// resilience4j's circuit-breaker settings, with its names in the comments.
#[derive(Clone, Debug)]
pub struct BreakerSettings {
    /// `failureRateThreshold`: open when at least this share of calls in the window failed.
    pub failure_rate: f64,
    /// `slowCallRateThreshold`: open when at least this share of calls was slow.
    pub slow_call_rate: f64,
    /// `slowCallDurationThreshold`.
    pub slow_call: Duration,
    /// `slidingWindowSize` of a `TIME_BASED` window: the calls of this last period count.
    pub window: Duration,
    /// `minimumNumberOfCalls`: no verdict on fewer calls than this in the window.
    pub minimum_calls: usize,
    /// `waitDurationInOpenState`: how long an open breaker refuses before probing.
    pub open_for: Duration,
    /// `permittedNumberOfCallsInHalfOpenState`: probes allowed, all of which must succeed.
    pub half_open_calls: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Backoff {
                base: Duration::from_millis(25),
                cap: Duration::from_millis(500),
            },
            max_concurrent: 256,
            breaker: BreakerSettings::default(),
        }
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            slow_call_rate: 0.8,
            slow_call: Duration::from_secs(1),
            window: Duration::from_secs(10),
            minimum_calls: 10,
            open_for: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}
