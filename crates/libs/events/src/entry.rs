//! Stream entries as our readers decode them: straight from the `XREAD`/`XREADGROUP` reply.
//!
//! Every entry of the busy streams is read by several services (risk twice, settlement, each
//! gateway replica's feed), so what a read costs per entry is paid many times per order. The
//! redis crate's own `StreamReadReply` takes a deep copy of the whole reply before converting it
//! (it tries two reply shapes in turn) and builds a hash map per entry; `StreamId::get` then
//! copies the field again. Our entries have a handful of fields (`event_id`, `type`,
//! `envelope`, and the relay's `outbox` and `position`), so a list in reply order, found by a
//! linear look-up, is all a reader needs, and the reply's strings are moved into it, never
//! copied (docs/performance.md, "Stream replies decoded without a copy").

use redis::streams::StreamId;
use redis::{FromRedisValue, ParsingError, Value, from_redis_value};

/// One stream entry: its id and its fields in the order they were written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    /// The value of the field `name`, if the entry has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

impl FromRedisValue for Entry {
    /// `[id, [field, value, …]]`. An entry deleted from the stream while it was pending comes
    /// back from `XREADGROUP … 0` as `[id, nil]`, which the crate reads as no fields: an entry
    /// its reader dead-letters as malformed.
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (id, fields): (String, Vec<(String, String)>) = from_redis_value(v)?;
        Ok(Self { id, fields })
    }
}

/// From the redis crate's entry, for the replies read rarely (`XAUTOCLAIM`'s): fields that are
/// not strings are left out, as [`Entry::field`] could not answer them either.
impl From<StreamId> for Entry {
    fn from(entry: StreamId) -> Self {
        let fields = entry
            .map
            .into_iter()
            .filter_map(|(field, value)| Some((field, from_redis_value(value).ok()?)))
            .collect();
        Self {
            id: entry.id,
            fields,
        }
    }
}

/// The reply to `XREAD` or `XREADGROUP`: per stream read, its entries. `None` when a blocking
/// read timed out with nothing new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEntries {
    /// (stream key, its entries), for the streams that had any.
    pub streams: Vec<(String, Vec<Entry>)>,
}

impl StreamEntries {
    /// Every entry of every stream read, in reply order.
    pub fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.streams.into_iter().flat_map(|(_, entries)| entries)
    }
}

impl FromRedisValue for StreamEntries {
    /// RESP2 answers `[[key, entries], …]`, RESP3 a map from key to entries; the tuple list
    /// reads both.
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(Self {
            streams: from_redis_value(v)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Entry {
        fn new(id: &str, fields: Vec<(String, String)>) -> Self {
            Self {
                id: id.to_owned(),
                fields,
            }
        }
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(f, v)| [bulk(f), bulk(v)])
                    .collect(),
            ),
        ])
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_resp2_reply_keeps_every_stream_and_entry_in_order() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("orders"),
                Value::Array(vec![
                    entry("1-0", &[("type", "OrderAccepted"), ("envelope", "{}")]),
                    entry("2-0", &[("type", "TradeExecuted")]),
                ]),
            ]),
            Value::Array(vec![
                bulk("market"),
                Value::Array(vec![entry("3-0", &[("type", "Ticker")])]),
            ]),
        ]);

        let read: StreamEntries = from_redis_value(reply).unwrap();

        assert_eq!(
            read.streams,
            vec![
                (
                    "orders".to_owned(),
                    vec![
                        Entry::new(
                            "1-0",
                            fields(&[("type", "OrderAccepted"), ("envelope", "{}")])
                        ),
                        Entry::new("2-0", fields(&[("type", "TradeExecuted")])),
                    ]
                ),
                (
                    "market".to_owned(),
                    vec![Entry::new("3-0", fields(&[("type", "Ticker")]))]
                ),
            ]
        );
    }

    #[test]
    fn a_resp3_reply_is_a_map_from_stream_to_entries() {
        let reply = Value::Map(vec![(
            bulk("orders"),
            Value::Array(vec![entry("1-0", &[("type", "OrderAccepted")])]),
        )]);

        let read: StreamEntries = from_redis_value(reply).unwrap();

        let entries: Vec<Entry> = read.into_entries().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].field("type"), Some("OrderAccepted"));
    }

    #[test]
    fn a_blocking_read_that_timed_out_is_none() {
        let read: Option<StreamEntries> = from_redis_value(Value::Nil).unwrap();
        assert_eq!(read, None);
    }

    #[test]
    fn an_entry_deleted_while_pending_has_no_fields() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Nil])]),
        ])]);

        let read: StreamEntries = from_redis_value(reply).unwrap();

        let entries: Vec<Entry> = read.into_entries().collect();
        assert_eq!(entries, vec![Entry::new("1-0", Vec::new())]);
        assert_eq!(entries[0].field("envelope"), None);
    }

    #[test]
    fn a_field_is_found_by_name_and_a_missing_one_is_none() {
        let entry = Entry::new("1-0", fields(&[("event_id", "e"), ("type", "t")]));
        assert_eq!(entry.field("type"), Some("t"));
        assert_eq!(entry.field("envelope"), None);
    }

    #[test]
    fn a_reply_of_another_shape_is_an_error_not_a_panic() {
        assert!(from_redis_value::<StreamEntries>(Value::Int(3)).is_err());
        assert!(from_redis_value::<StreamEntries>(Value::Array(vec![bulk("x")])).is_err());
    }
}
