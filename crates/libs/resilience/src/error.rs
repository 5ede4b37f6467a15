//! Why a call got no answer, and the problem the caller's client receives for it.

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use service_kit::http::Problem;

/// Set on every problem [`CallError::problem`] makes, naming the upstream that failed: the
/// service answering 5xx is up, one it calls is not. Whoever called *it* must not count that
/// answer against it ([`crate::upstream`]'s breaker does not): a caller's breaker opened by a
/// dependency's outage two hops away would refuse every route of a healthy service — with
/// risk away, orders' cancels and reads along with the placements risk has to check.
pub const FAILED_UPSTREAM: HeaderName = HeaderName::from_static("bourse-failed-upstream");

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker is open (or forced open): refused without a network call.
    #[error("{upstream}: circuit open")]
    Open {
        upstream: &'static str,
        retry_after: Duration,
    },
    /// The bulkhead is full: this upstream already has its maximum of calls in flight.
    #[error("{upstream}: too many calls in flight")]
    Saturated { upstream: &'static str },
    /// No answer within the per-attempt timeout (after any retries).
    #[error("{upstream}: no answer within {timeout:?}")]
    Timeout {
        upstream: &'static str,
        timeout: Duration,
    },
    /// This service could not get a service token for the upstream (auth down, or refused).
    #[error("{upstream}: no service token: {detail}")]
    NoServiceToken {
        upstream: &'static str,
        detail: String,
    },
    /// Connection refused, reset, DNS… (after any retries).
    #[error("{upstream}: {detail}")]
    Unreachable {
        upstream: &'static str,
        detail: String,
    },
}

impl CallError {
    pub fn upstream(&self) -> &'static str {
        match self {
            CallError::Open { upstream, .. }
            | CallError::Saturated { upstream }
            | CallError::Timeout { upstream, .. }
            | CallError::NoServiceToken { upstream, .. }
            | CallError::Unreachable { upstream, .. } => upstream,
        }
    }

    /// 503 with `Retry-After` (504 for a timeout): the dependency, not the client, failed, and
    /// nothing was done on its behalf that a retry could double. It names the dependency in
    /// [`FAILED_UPSTREAM`].
    pub fn problem(&self) -> Problem {
        let upstream = self.upstream();
        let problem = self.problem_of(upstream);
        match HeaderValue::from_str(upstream) {
            Ok(name) => problem.with_header(FAILED_UPSTREAM, name),
            Err(_) => problem,
        }
    }

    fn problem_of(&self, upstream: &str) -> Problem {
        match self {
            CallError::Open { retry_after, .. } => Problem::unavailable(
                "upstream_unavailable",
                format!("{upstream} is failing; calls are paused (circuit open)"),
                retry_after.as_secs().max(1),
            ),
            CallError::Saturated { .. } => Problem::unavailable(
                "upstream_saturated",
                format!("{upstream} is at its limit of calls in flight"),
                1,
            ),
            CallError::Timeout { .. } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{upstream} did not answer in time"),
            )
            .retry_after(1),
            CallError::NoServiceToken { .. } => Problem::unavailable(
                "upstream_unavailable",
                format!("{upstream} cannot be called right now (no service token)"),
                1,
            ),
            CallError::Unreachable { .. } => Problem::unavailable(
                "upstream_unavailable",
                format!("{upstream} is unavailable"),
                1,
            ),
        }
    }
}
