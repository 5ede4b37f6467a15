//! Events between services, exactly once in effect.
//!
//! - [`envelope`]: the envelope every event travels in (docs/design.md §3), carrying correlation and
//!   trace context from the request that caused it (OBS-02, OBS-06).
//! - [`outbox`]: writing events in the same transaction as the state change (REL-08).
//! - [`relay`]: publishing the outbox to Redis Streams in order, at least once, surviving its
//!   own crash; lag exported as metrics.
//! - [`failure`]: what a handler's failure is — transient (retried in place for as long as it
//!   takes) or permanent (dead-lettered after a few tries).
//! - [`entry`]: stream entries decoded straight from the reply, shared by every reader.
//! - [`consumer`]: consumer groups, the inbox in the effect's transaction, acknowledgement
//!   after commit, recovery of pending entries, dead letters (REL-09, REL-10); each consumer
//!   sweeps its inbox rows past their retention.
//! - [`dlq`]: listing and replaying dead letters.
//! - [`direct`]: at-most-once publishing for a producer without a database (ops notices only).

pub mod consumer;
pub mod direct;
pub mod dlq;
pub mod entry;
pub mod envelope;
pub mod failure;
pub mod outbox;
pub mod relay;

pub use consumer::{Consumer, ConsumerSettings, Handler};
pub use entry::{Entry, StreamEntries};
pub use envelope::{Envelope, Origin};
pub use failure::HandlerError;
pub use relay::{Relay, RelaySettings};

use sqlx::PgPool;
use sqlx::migrate::MigrateError;

/// Creates the outbox in `schema` (idempotent; tracked in `<schema>._events_migrations`).
pub async fn migrate(pool: &PgPool, schema: &'static str) -> Result<(), MigrateError> {
    service_kit::db::migrate_with_history(
        pool,
        schema,
        "_events_migrations",
        sqlx::migrate!("./migrations"),
    )
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("encoding an envelope: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl Error {
    /// Whether the failure is a dependency being away (retry), not a fault in what was asked.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(err) => service_kit::db::is_unavailable(err),
            Self::Redis(err) => service_kit::redis::is_unavailable(err),
            Self::Encoding(_) => false,
        }
    }
}

/// Gives each metric this crate records its help text and unit, as `/metrics` shows them
/// (`promtool check metrics` asks for both). Call it once the recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "events_applied_total",
        Unit::Count,
        "Events a consumer applied (their effect committed)."
    );
    describe_histogram!(
        "events_batch_size",
        Unit::Count,
        "Events a consumer read and applied together."
    );
    describe_counter!(
        "events_consumer_groups_recreated_total",
        Unit::Count,
        "Consumer groups created again after the broker lost them."
    );
    describe_gauge!(
        "events_consumer_lag",
        Unit::Count,
        "Entries a group has not been given yet plus those given and not acknowledged."
    );
    describe_counter!(
        "events_dead_lettered_total",
        Unit::Count,
        "Events moved to the dead-letter stream after their last attempt."
    );
    describe_counter!(
        "events_inbox_swept_total",
        Unit::Count,
        "Inbox rows deleted past their retention, per consumer group."
    );
    describe_counter!(
        "events_duplicates_total",
        Unit::Count,
        "Events skipped because the inbox had already applied them."
    );
    describe_counter!(
        "events_handler_failures_total",
        Unit::Count,
        "Events a handler refused (retried, then dead-lettered)."
    );
    describe_counter!(
        "events_transient_failures_total",
        Unit::Count,
        "Event batches that failed on a dependency away and were retried."
    );
    describe_gauge!(
        "outbox_oldest_unpublished_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row not yet published."
    );
    describe_counter!(
        "outbox_published_total",
        Unit::Count,
        "Outbox rows handed to the broker."
    );
    describe_counter!(
        "outbox_republished_total",
        Unit::Count,
        "Outbox rows published again because the broker lost them."
    );
    describe_gauge!(
        "outbox_unconfirmed_events",
        Unit::Count,
        "Published outbox rows not yet acknowledged by every consumer group."
    );
    describe_gauge!(
        "outbox_unpublished_events",
        Unit::Count,
        "Outbox rows not yet published."
    );
}
