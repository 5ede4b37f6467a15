//! Dead letters: listing and replaying (REL-10). Used by `bourse admin dlq`.

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;
use service_kit::redis::KeyPrefix;

use crate::Error;

#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// Id of the entry in `<stream>.dlq`.
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub group: String,
    pub reason: String,
}

fn field(entry: &StreamId, name: &str) -> String {
    entry.get::<String>(name).unwrap_or_default()
}

pub async fn list(
    redis: &ConnectionManager,
    keys: &KeyPrefix,
    stream: &str,
) -> Result<Vec<DeadLetter>, Error> {
    let mut redis = redis.clone();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}.dlq", keys.stream(stream)))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    Ok(reply
        .ids
        .iter()
        .map(|e| DeadLetter {
            id: e.id.clone(),
            event_id: field(e, "event_id"),
            event_type: field(e, "type"),
            group: field(e, "group"),
            reason: field(e, "reason"),
        })
        .collect())
}

/// Puts a dead letter back on its stream (same event id: consumers that did apply it skip it)
/// and removes it from the dead-letter stream. Returns whether it existed.
pub async fn replay(
    redis: &ConnectionManager,
    keys: &KeyPrefix,
    stream: &str,
    id: &str,
) -> Result<bool, Error> {
    let mut redis = redis.clone();
    let dlq = format!("{}.dlq", keys.stream(stream));
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&dlq)
        .arg(id)
        .arg(id)
        .query_async(&mut redis)
        .await?;
    let Some(entry) = reply.ids.first() else {
        return Ok(false);
    };
    let _: String = crate::envelope::xadd(
        &keys.stream(stream),
        None,
        &field(entry, "event_id"),
        &field(entry, "type"),
        &field(entry, "envelope"),
    )
    .query_async(&mut redis)
    .await?;
    let _: usize = redis::cmd("XDEL")
        .arg(&dlq)
        .arg(id)
        .query_async(&mut redis)
        .await?;
    Ok(true)
}
