//! Publishing without an outbox, for a producer that has no database (the gateway).
//!
//! This is *at most once*: if the process dies before the `XADD`, the event is lost. It is
//! only for operational notices whose source of truth is elsewhere — a breaker's state is also
//! a metric and a log line — never for a state change another service must learn of (those go
//! through [`crate::outbox`]).

use redis::aio::ConnectionManager;
use service_kit::redis::KeyPrefix;

use crate::{Envelope, Error};

/// `XADD`s one event to `stream` in the same shape the relay writes ([`crate::envelope::xadd`]).
pub async fn publish(
    redis: &ConnectionManager,
    keys: &KeyPrefix,
    stream: &str,
    envelope: &Envelope,
) -> Result<(), Error> {
    publish_trimmed(redis, keys, stream, envelope, None).await
}

/// [`publish`], trimming the stream to about `max_len` entries: for a feed whose readers only
/// ever want its recent past (market data).
pub async fn publish_trimmed(
    redis: &ConnectionManager,
    keys: &KeyPrefix,
    stream: &str,
    envelope: &Envelope,
    max_len: Option<usize>,
) -> Result<(), Error> {
    let mut redis = redis.clone();
    let _: String = crate::envelope::xadd(
        &keys.stream(stream),
        max_len,
        &envelope.id.to_string(),
        &envelope.event_type,
        &serde_json::to_string(envelope)?,
    )
    .query_async(&mut redis)
    .await?;
    Ok(())
}
