//! The instrumented client every service-to-service call goes through (REL-03..REL-06).
//!
//! One [`Upstream`] per called service holds, for that service only:
//! - a **timeout** per attempt (REL-03);
//! - **retries** with exponential backoff and full jitter, taken *only* when the caller marks
//!   the call idempotent (REL-04) — see [`backoff`];
//! - a **circuit breaker** with resilience4j semantics — closed, open, half-open; failure-rate
//!   and slow-call-rate thresholds over a sliding time window; a minimum number of calls; a
//!   limited number of half-open probes; forced-open and disabled for operators (REL-05).
//!   The state machine is ours, over a bucketed window whose cost per call does not grow
//!   with the call rate ([`breaker`], ADR 0022); its state is a metric and every transition is published on [`Upstream::transitions`] so the owning service can
//!   emit `CircuitBreakerOpened`/`Closed` ops events;
//! - a **bulkhead**: at most N calls in flight, the excess refused at once (REL-06);
//! - the caller's `X-Request-Id` and `traceparent`, and a service token for the upstream when
//!   built with [`Upstream::authenticated`] (SEC-14).
//!
//! Failing fast is the point: an open breaker or a full bulkhead answers
//! [`CallError::Open`]/[`CallError::Saturated`] without touching the network, and
//! [`CallError::problem`] turns every failure into a 503/504 problem with `Retry-After` that
//! names the failed upstream ([`FAILED_UPSTREAM`]); a caller one hop further out does not count
//! such an answer against the service that gave it.
//!
//! Modules: [`policy`] (the settings of one upstream), [`breaker`] (the circuit breaker's
//! state machine and window), [`backoff`] (exponential backoff with
//! full jitter), [`upstream`] ([`Upstream`] and [`Call`]), [`service_token`] ([`TokenSource`]:
//! service tokens from auth, SEC-14), [`error`] ([`CallError`]).

/// Moved to the service kit (every retry loop uses it); re-exported where callers knew it.
pub use service_kit::backoff;
pub mod breaker;
pub mod error;
pub mod policy;
pub mod service_token;
pub mod upstream;

pub use backoff::Backoff;
pub use error::{CallError, FAILED_UPSTREAM};
pub use policy::{BreakerSettings, Policy};
pub use service_token::{TokenError, TokenSource};
pub use upstream::{BreakerState, Call, Mode, Transition, Upstream, Window};

/// Gives each metric this crate records its help text and unit, as `/metrics` shows them
/// (`promtool check metrics` asks for both). Call it once the recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "resilience_breaker_state",
        Unit::Count,
        "1 for the state each upstream's circuit breaker is in (closed, open, half_open)."
    );
    describe_histogram!(
        "resilience_call_duration_seconds",
        Unit::Seconds,
        "Time of each call to an upstream, retries included."
    );
    describe_counter!(
        "resilience_calls_total",
        Unit::Count,
        "Calls to an upstream, by outcome."
    );
    describe_counter!(
        "resilience_retries_total",
        Unit::Count,
        "Attempts repeated after a failure (idempotent calls only)."
    );
    describe_counter!(
        "resilience_failovers_total",
        Unit::Count,
        "Addresses tried after another address of the same upstream took no connection."
    );
}
