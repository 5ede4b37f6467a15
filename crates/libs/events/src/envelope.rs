//! The event envelope (docs/design.md §3).

use contracts::events::Event;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7: unique, and roughly time-ordered. Consumers deduplicate on it.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Version of the payload schema for this type.
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The service that emitted it.
    pub producer: String,
    /// The entity the event is about (an order id, an account id…).
    pub aggregate_id: String,
    /// Position of the event in its aggregate's history.
    pub sequence: i64,
    /// The request (or event) chain this event belongs to.
    pub correlation_id: String,
    /// The event that caused this one, if an event did.
    pub causation_id: Option<Uuid>,
    /// W3C trace context, so a consumer's work joins the producer's trace.
    pub traceparent: Option<String>,
    /// The payload's JSON text, as the producer wrote it. Kept as text, not as a
    /// `serde_json::Value`: each consumer reads it once, straight into the contract type it
    /// wants ([`Envelope::decode`]), and a producer writes its type straight into it
    /// ([`Envelope::of`]), so no tree of values is built and dropped for every event every
    /// reader reads (docs/performance.md, "The event payload kept as text").
    pub payload: Box<RawValue>,
    /// Where the relay put the event: its outbox and position there. Not part of the event's
    /// body: a consumer sets it from the stream entry ([`Origin::of_entry`]). `None` for an
    /// event that was never read from a stream, or one replayed from a dead-letter queue.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// The outbox an event was published from and its position in it: a total order of that
/// outbox's events that never changes, not even when a lost broker makes the relay publish
/// them again (ADR 0024). A consumer that rebuilds state from a snapshot of the producer plus
/// the stream uses it to skip what the snapshot already holds (ADR 0023).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The producer's schema (`settlement`).
    pub outbox: String,
    pub position: i64,
}

impl Origin {
    /// The `outbox` and `position` fields the relay writes on every entry.
    pub fn of_entry(entry: &crate::Entry) -> Option<Self> {
        Some(Self {
            outbox: entry.field("outbox")?.to_owned(),
            position: entry.field("position")?.parse().ok()?,
        })
    }
}

/// The smallest event id that can have been made at `unix_ms` or later: event ids are UUIDv7
/// ([`Envelope::new`]), whose first 48 bits are their creation time in milliseconds and which
/// compare byte by byte, as PostgreSQL's `uuid` does. Every id made before `unix_ms` is below it.
pub(crate) fn first_id_at(unix_ms: i64) -> Uuid {
    let ms = u128::from(unix_ms.clamp(0, (1 << 48) - 1).unsigned_abs());
    Uuid::from_u128(ms << 80)
}

/// The smallest UUIDv7 that can have been made within `ago` of now: every id made earlier is
/// below it, so "made more than `ago` ago" is a range of a `uuid` key (ADR 0028) — the inbox's
/// event ids, and risk's ended orders' ids.
pub fn first_id_within(ago: std::time::Duration) -> Uuid {
    first_id_at(crate::relay::unix_millis_ago(ago))
}

/// When an event id was made, in milliseconds since 1970; `None` for an id that is not a
/// UUIDv7 (an event from outside, or a test's).
pub(crate) fn id_unix_millis(id: Uuid) -> Option<u64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(
        secs.saturating_mul(1000)
            .saturating_add(u64::from(nanos / 1_000_000)),
    )
}

impl Envelope {
    /// A new event caused by the request being served by this task (if any): its request id
    /// becomes the correlation id and its trace context the `traceparent`.
    pub fn new(
        producer: &str,
        event_type: &str,
        version: u32,
        aggregate_id: impl Into<String>,
        sequence: i64,
        payload: Box<RawValue>,
    ) -> Self {
        let id = Uuid::now_v7();
        let context = service_kit::http::observe::current_context();
        Self {
            id,
            event_type: event_type.to_owned(),
            version,
            occurred_at: OffsetDateTime::now_utc(),
            producer: producer.to_owned(),
            aggregate_id: aggregate_id.into(),
            sequence,
            correlation_id: context
                .as_ref()
                .map_or_else(|| id.to_string(), |c| c.request_id.clone()),
            causation_id: None,
            traceparent: context.map(|c| c.trace.traceparent()),
            payload,
            origin: None,
        }
    }

    /// A new event of a contract type ([`contracts::events`]): its type name and version come
    /// from the type, so a producer cannot spell them differently from its consumers.
    pub fn of<E: Event>(
        producer: &str,
        aggregate_id: impl Into<String>,
        sequence: i64,
        payload: &E,
    ) -> Result<Self, crate::Error> {
        let payload = serde_json::value::to_raw_value(payload)?;
        Ok(Self::new(
            producer,
            E::TYPE,
            E::VERSION,
            aggregate_id,
            sequence,
            payload,
        ))
    }

    /// The payload as the contract type `E`, refused — never guessed at — when the event is of
    /// another type or a version `E` does not read. Consumers treat the refusal as permanent
    /// (dead letter).
    pub fn decode<E: Event>(&self) -> Result<E, PayloadError> {
        if self.event_type != E::TYPE {
            return Err(PayloadError::OtherType {
                event_type: self.event_type.clone(),
                expected: E::TYPE,
            });
        }
        if self.version != E::VERSION {
            return Err(PayloadError::UnknownVersion {
                event_type: self.event_type.clone(),
                version: self.version,
                known: E::VERSION,
            });
        }
        self.payload_as()
    }

    /// The payload as `T`, whatever the envelope's type and version say; the error names the
    /// event type. For payloads without a contract type; [`Envelope::decode`] otherwise.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_str(self.payload.get()).map_err(|source| PayloadError::Malformed {
            event_type: self.event_type.clone(),
            source,
        })
    }

    /// A new event caused by `cause`: same correlation and trace, `causation_id` = its id.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.correlation_id.clone_from(&cause.correlation_id);
        self.traceparent.clone_from(&cause.traceparent);
        self.causation_id = Some(cause.id);
        self
    }
}

/// A payload that is not the shape its event type promises.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{event_type} payload: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event_type} version {version} is not one this consumer reads (it reads {known})")]
    UnknownVersion {
        event_type: String,
        version: u32,
        known: u32,
    },
    #[error("a {event_type} event read as {expected}")]
    OtherType {
        event_type: String,
        expected: &'static str,
    },
}

/// The `XADD` that puts an event on a stream, in the one entry shape every reader of our
/// streams expects: `event_id`, `type`, `envelope` (the JSON). `max_len` trims the stream
/// approximately (`MAXLEN ~`), as the relay does.
pub fn xadd(
    stream_key: &str,
    max_len: Option<usize>,
    event_id: &str,
    event_type: &str,
    envelope_json: &str,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream_key);
    if let Some(max_len) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(max_len);
    }
    cmd.arg("*")
        .arg("event_id")
        .arg(event_id)
        .arg("type")
        .arg(event_type)
        .arg("envelope")
        .arg(envelope_json);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_made_at_a_time_sorts_after_that_times_first_id_and_before_the_next_ones() {
        let id = Uuid::now_v7();
        let made = i64::try_from(id_unix_millis(id).unwrap()).unwrap();
        assert!(first_id_at(made) <= id);
        assert!(id < first_id_at(made + 1));
        // As PostgreSQL compares them: byte by byte.
        assert!(first_id_at(made).as_bytes() <= id.as_bytes());
    }

    #[test]
    fn an_id_without_a_time_has_none() {
        assert_eq!(id_unix_millis(Uuid::from_u128(0x1234_5678)), None);
        assert_eq!(id_unix_millis(Uuid::nil()), None);
    }
}
