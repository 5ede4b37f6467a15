//! The gateway's readers of the `orders` and `market` streams: plain `XREAD` from the moment
//! the replica started (no consumer group — every replica must see every message, for its own
//! clients), translated and handed to the hub.
//!
//! Entries are decoded only while some client of this replica subscribes to something: a
//! replica nobody listens to moves past the entries without parsing their envelopes.
//!
//! A backlog — what a relay publishes at once after the broker stalled and resumed — reaches
//! the hub a slice at a time: each read takes at most a quarter of a connection's queue from
//! each stream ([`per_read`]; an `orders` entry makes at most three messages for one connection,
//! a trade and two fills, a `market` entry one), so one read cannot overfill an empty queue,
//! and while the next read waits on Redis the sessions write out what this one queued.
//! Fan-out still never waits for a client; a client that reads at its socket's pace keeps up
//! with any burst, and only one that falls a whole queue behind is cut off.
//!
//! The WebSocket stream is live data: a reader that was down misses what happened meanwhile,
//! and its clients learn of it the way they learn of any gap (a book update that does not
//! follow their last sequence) and re-read the REST API or re-subscribe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use events::{Origin, StreamEntries};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamReadOptions;
use service_kit::redis::KeyPrefix;
use service_kit::{Shutdown, Supervisor};

use super::hub::Hub;
use super::messages::{Amounts, translate};

/// The streams the WebSocket channels come from.
pub const SOURCES: &[&str] = &["orders", "market"];

/// Well under the connection's 500 ms response timeout (`service_kit::redis`).
const BLOCK: Duration = Duration::from_millis(200);

/// The most entries one read takes when connections queue plenty.
const MOST_PER_READ: usize = 500;

/// Entries one read takes from each stream: a quarter of a connection's queue (three messages
/// at most per `orders` entry and one per `market` entry make a full read of both exactly one
/// queue), so one read's fan-out cannot overfill a queue its session drains between reads.
fn per_read(buffer: usize) -> usize {
    (buffer / 4).clamp(1, MOST_PER_READ)
}

/// `redis` should be a connection of the feed's own: its one reader blocks on it.
pub fn spawn(
    redis: ConnectionManager,
    keys: KeyPrefix,
    hub: Arc<Hub>,
    amounts: Arc<Amounts>,
    tasks: &Supervisor,
) {
    let streams: Vec<String> = SOURCES.iter().map(|s| keys.stream(s)).collect();
    tasks.spawn("stream feed", move |shutdown| {
        read(
            redis.clone(),
            streams.clone(),
            hub.clone(),
            amounts.clone(),
            shutdown,
        )
    });
}

/// The newest entry id of `key` ("0-0" for an empty or missing stream).
async fn newest(redis: &mut ConnectionManager, key: &str) -> redis::RedisResult<String> {
    let reply: redis::streams::StreamRangeReply = redis.xrevrange_count(key, "+", "-", 1).await?;
    Ok(reply
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
}

/// One reader for all sources: one `XREAD` over every stream, so none waits behind another.
async fn read(
    mut redis: ConnectionManager,
    streams: Vec<String>,
    hub: Arc<Hub>,
    amounts: Arc<Amounts>,
    shutdown: Shutdown,
) {
    // From now on: entries before this replica started are not live data any more. Not `$`:
    // between two reads that would skip what arrived in the gap.
    let mut last = Vec::with_capacity(streams.len());
    for key in &streams {
        let id = loop {
            match newest(&mut redis, key).await {
                Ok(id) => break id,
                Err(err) => {
                    tracing::warn!(stream = %key, error = %err, "stream feed cannot start; retrying");
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };
        last.push(id);
    }
    let options = StreamReadOptions::default()
        .count(per_read(hub.settings().buffer))
        .block(usize::try_from(BLOCK.as_millis()).unwrap_or(200));
    let mut forwarded = Forwarded::default();
    loop {
        let read = async {
            let reply: redis::RedisResult<Option<StreamEntries>> =
                redis.xread_options(&streams, &last, &options).await;
            reply
        };
        let reply = tokio::select! {
            () = shutdown.triggered() => return,
            reply = read => reply,
        };
        let reply = match reply {
            Ok(reply) => reply.map(|r| r.streams).unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %err, "stream feed interrupted; retrying");
                tokio::select! {
                    () = shutdown.triggered() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        // Asked once the entries are in: each was added before this look, so a client
        // subscribing after it misses none added after its subscription (what a live stream
        // promises), and until someone listens no envelope is parsed.
        let listened = hub.is_listened();
        let mut outcomes = Outcomes::default();
        for (key, entries) in reply {
            let Some(position) = streams.iter().position(|k| *k == key) else {
                continue;
            };
            for entry in entries {
                last[position].clone_from(&entry.id);
                if !forwarded.is_new(&entry) {
                    outcomes.repeated += 1;
                    continue;
                }
                if !listened {
                    outcomes.unheard += 1;
                    continue;
                }
                let Some(event) = entry
                    .field("envelope")
                    .and_then(|r| serde_json::from_str::<events::Envelope>(r).ok())
                else {
                    outcomes.unreadable += 1;
                    continue;
                };
                match translate(&event, &amounts) {
                    Ok(messages) => {
                        outcomes.forwarded += 1;
                        for outgoing in messages {
                            hub.publish(&outgoing);
                        }
                    }
                    Err(err) => {
                        outcomes.unreadable += 1;
                        tracing::warn!(event_id = %event.id, error = %err, "event not forwarded to the stream");
                    }
                }
            }
        }
        outcomes.record();
    }
}

/// The highest outbox position read from each outbox. A relay publishes its outbox in
/// position order, and publishes again only what it had published already — a leader that
/// died or was paused before recording its batch, a broker that lost entries (ADR 0005, ADR
/// 0013) — so an entry at or below the highest is a copy: the consumers' inboxes skip theirs,
/// and this skips the clients'. Each event reaches a client once (docs/stream.md). Entries
/// from outside an outbox (the book feed's) carry no position and have their own filter.
#[derive(Default)]
struct Forwarded(HashMap<String, i64>);

impl Forwarded {
    /// Whether `entry` is not a copy of one read before; its position becomes the highest.
    fn is_new(&mut self, entry: &events::Entry) -> bool {
        let Some(origin) = Origin::of_entry(entry) else {
            return true;
        };
        match self.0.get_mut(&origin.outbox) {
            Some(highest) if origin.position <= *highest => false,
            Some(highest) => {
                *highest = origin.position;
                true
            }
            None => {
                self.0.insert(origin.outbox, origin.position);
                true
            }
        }
    }
}

/// What became of the entries of one read (`gateway_stream_entries_total{outcome}`).
#[derive(Default)]
struct Outcomes {
    /// A copy of an entry read before (published again by a relay): skipped.
    repeated: u64,
    /// Decoded and handed to the hub.
    forwarded: u64,
    /// Skipped undecoded: no connection subscribed to anything.
    unheard: u64,
    /// Not an envelope, or not one the stream can translate.
    unreadable: u64,
}

impl Outcomes {
    fn record(&self) {
        for (outcome, count) in [
            ("forwarded", self.forwarded),
            ("unheard", self.unheard),
            ("unreadable", self.unreadable),
            ("repeated", self.repeated),
        ] {
            if count > 0 {
                metrics::counter!("gateway_stream_entries_total", "outcome" => outcome)
                    .increment(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_a_quarter_of_a_queue_in_entries() {
        assert_eq!(per_read(256), 64);
        assert_eq!(per_read(3), 1, "at least one entry");
        assert_eq!(per_read(1_000_000), MOST_PER_READ);
    }
}
