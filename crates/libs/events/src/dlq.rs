//! Dead letters: listing and replaying (REL-10). Used by `bourse admin dlq`.

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;
use service_kit::redis::KeyPrefix;

use std::time::Duration;

use uuid::Uuid;

use crate::Error;
use crate::relay::unix_millis_ago;

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

/// What [`replay`] did with a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Back on its stream, gone from the dead letters.
    Replayed,
    /// No dead letter with that id.
    NotFound,
    /// Left where it is: its event is older than the consumers' inbox retention, so a group that
    /// applied it may have forgotten that it did and would apply it again.
    TooOld,
}

/// Puts a dead letter back on its stream (same event id: consumers that did apply it skip it,
/// by their inbox) and removes it from the dead-letter stream. An event older than
/// `inbox_retention` is refused ([`Replay::TooOld`]): its inbox rows may be gone, and with
/// them what stops a second effect in the groups that did apply it.
pub async fn replay(
    redis: &ConnectionManager,
    keys: &KeyPrefix,
    stream: &str,
    id: &str,
    inbox_retention: Duration,
) -> Result<Replay, Error> {
    let mut redis = redis.clone();
    let dlq = format!("{}.dlq", keys.stream(stream));
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&dlq)
        .arg(id)
        .arg(id)
        .query_async(&mut redis)
        .await?;
    let Some(entry) = reply.ids.first() else {
        return Ok(Replay::NotFound);
    };
    let event_id = field(entry, "event_id");
    if older_than(&event_id, inbox_retention) {
        return Ok(Replay::TooOld);
    }
    let _: String = crate::envelope::xadd(
        &keys.stream(stream),
        None,
        &event_id,
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
    Ok(Replay::Replayed)
}

/// Whether the event was made longer than `age` ago, by the time in its UUIDv7 id. An id that
/// carries no time (not made by [`crate::Envelope::new`]) cannot be told, and is not refused.
fn older_than(event_id: &str, age: Duration) -> bool {
    let made = Uuid::parse_str(event_id)
        .ok()
        .and_then(crate::envelope::id_unix_millis);
    made.is_some_and(|ms| i64::try_from(ms).unwrap_or(i64::MAX) < unix_millis_ago(age))
}
