//! The service kit: everything a Bourse service gets for free, so that each service crate holds
//! only its own domain.
//!
//! - [`backoff`]: exponential backoff with full jitter, for every retry loop (REL-04).
//! - [`config`]: typed settings read from `BOURSE_*` environment variables (and `.env` in
//!   development); every problem is collected and reported at once (OPS-01).
//! - [`telemetry`]: JSON logs via `tracing`, W3C trace context (OBS-01, OBS-02).
//! - [`metrics`]: the Prometheus recorder and `/metrics` (OBS-03).
//! - [`idempotency`]: `Idempotency-Key` claims, stored answers and replays (REL-07).
//! - [`combine`]: requests many callers make at once, answered together (one statement or
//!   one call for a busy moment).
//! - [`http`]: problem+json errors, the JSON extractor, request id / trace context / access
//!   log / RED metrics middleware, timeouts, body limits, panic guard — assembled by
//!   [`http::service_router`] (OBS-06, REL-03, REL-11, SEC-10).
//! - [`health`]: `/health/live` and `/health/ready` with dependency checks (REL-01).
//! - [`db`]: the PostgreSQL pool bound to one schema, and per-schema migrations (REL-12).
//! - [`redis`]: the Redis connection manager and key prefixes.
//! - [`shutdown`]: signals, the shutdown token and a server that drains on exit (REL-02).
//! - [`tasks`]: the supervisor that owns every background task: restarts, failures, shutdown.
//! - [`tls`]: HTTPS listeners, mTLS between services, TLS to PostgreSQL and Redis (SEC-13).
//! - `testing` (feature `testing`, test crates only): `eventually`, a bounded wait for a state.

pub mod backoff;
pub mod combine;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod redis;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use config::{CommonConfig, ConfigError, Env, Environment};
pub use shutdown::{PreBound, Server, Shutdown};
pub use tasks::{LastShutdown, Supervisor};
