//! The settings of one upstream. Defaults suit a call on the order path: answers are expected
//! in milliseconds, so waiting seconds for one only holds a client hostage.

use std::time::Duration;

use service_kit::Env;

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

impl Policy {
    /// Reads the settings of one upstream from `<prefix>_*` variables, `defaults` for the
    /// unset ones — e.g. `BOURSE_GATEWAY_UPSTREAM_TIMEOUT_MS`,
    /// `BOURSE_GATEWAY_UPSTREAM_BREAKER_MINIMUM_CALLS`.
    pub fn read(env: &mut Env, prefix: &str, defaults: Policy) -> Policy {
        let key = |name: &str| format!("{prefix}_{name}");
        let b = defaults.breaker;
        let percent = |env: &mut Env, name: &str, default: f64| -> f64 {
            let variable = key(name);
            // Whole percentages keep the settings readable; the breaker wants a share.
            let value: u8 = env.or(&variable, (default * 100.0).round() as u8);
            if !(1..=100).contains(&value) {
                env.problem(&variable, "must be a percentage between 1 and 100");
                return default;
            }
            f64::from(value) / 100.0
        };
        let failure_rate = percent(env, "BREAKER_FAILURE_RATE_PCT", b.failure_rate);
        let slow_call_rate = percent(env, "BREAKER_SLOW_CALL_RATE_PCT", b.slow_call_rate);
        let positive = |env: &mut Env, name: &str, default: usize| -> usize {
            let variable = key(name);
            let value = env.or(&variable, default);
            if value == 0 {
                env.problem(&variable, "must be greater than zero");
                return default;
            }
            value
        };
        Policy {
            timeout: env.millis(&key("TIMEOUT_MS"), defaults.timeout),
            retries: env.or(&key("RETRIES"), defaults.retries),
            backoff: Backoff {
                base: env.millis(&key("BACKOFF_BASE_MS"), defaults.backoff.base),
                cap: env.millis(&key("BACKOFF_CAP_MS"), defaults.backoff.cap),
            },
            max_concurrent: positive(env, "MAX_CONCURRENT", defaults.max_concurrent),
            breaker: BreakerSettings {
                failure_rate,
                slow_call_rate,
                slow_call: env.millis(&key("BREAKER_SLOW_CALL_MS"), b.slow_call),
                window: env.millis(&key("BREAKER_WINDOW_MS"), b.window),
                minimum_calls: positive(env, "BREAKER_MINIMUM_CALLS", b.minimum_calls),
                open_for: env.millis(&key("BREAKER_OPEN_FOR_MS"), b.open_for),
                half_open_calls: positive(env, "BREAKER_HALF_OPEN_CALLS", b.half_open_calls),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_prefixed_variables_and_bad_ones_are_reported_together() {
        let mut env = Env::from_pairs([
            ("RISK_TIMEOUT_MS", "150"),
            ("RISK_BREAKER_MINIMUM_CALLS", "4"),
            ("RISK_BREAKER_FAILURE_RATE_PCT", "25"),
        ]);
        let policy = Policy::read(&mut env, "RISK", Policy::default());
        assert_eq!(policy.timeout, Duration::from_millis(150));
        assert_eq!(policy.breaker.minimum_calls, 4);
        assert!((policy.breaker.failure_rate - 0.25).abs() < f64::EPSILON);
        assert_eq!(policy.retries, Policy::default().retries);
        assert!(env.finish().is_ok());

        let mut env = Env::from_pairs([
            ("RISK_BREAKER_FAILURE_RATE_PCT", "0"),
            ("RISK_BREAKER_HALF_OPEN_CALLS", "0"),
            ("RISK_RETRIES", "many"),
        ]);
        let _ = Policy::read(&mut env, "RISK", Policy::default());
        let problems = env.finish().unwrap_err().to_string();
        for variable in [
            "RISK_BREAKER_FAILURE_RATE_PCT",
            "RISK_BREAKER_HALF_OPEN_CALLS",
            "RISK_RETRIES",
        ] {
            assert!(problems.contains(variable), "{problems}");
        }
    }
}
