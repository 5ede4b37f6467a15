//! Who is connected to this gateway replica and what each subscribed to; fan-out of stream
//! messages into bounded per-connection queues.
//!
//! A message is serialised once and shared by every subscriber. Each connection's queue holds
//! at most `buffer` messages: a connection whose queue is full is cut off (its session closes
//! with 1013) instead of being allowed to grow the server's memory — one slow client never
//! slows the others, because fan-out never waits. Within a channel the hub numbers messages
//! consecutively (a book's updates carry the book's own sequence, and one that would take it
//! back is dropped), and since nothing is ever dropped silently, a client sees either every
//! message or a closed connection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::messages::{Audience, Outgoing};

/// `BOURSE_GATEWAY_STREAM_*`.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Messages queued per connection before it is cut off as too slow.
    pub buffer: usize,
    /// A ping every this long; a client silent for two of them is disconnected.
    pub heartbeat: Duration,
    /// Open streams per principal on one replica.
    pub max_per_principal: usize,
    /// How long a connection without an `Authorization` header has to send `{"op": "auth"}`.
    pub auth_timeout: Duration,
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
}

/// One message as it goes out: serialised once, shared by every subscriber.
#[derive(Debug)]
pub struct Message {
    pub channel: String,
    pub sequence: u64,
    pub text: String,
}

/// What a session holds: its queue, the token that cuts it off, and its place in the hub
/// (given back when dropped).
pub struct Subscriber {
    pub id: u64,
    pub account: Uuid,
    pub messages: mpsc::Receiver<Arc<Message>>,
    pub cut_off: CancellationToken,
    hub: Arc<Hub>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}

impl Subscriber {
    pub fn subscribe(&self, channel: &str) {
        self.hub.subscribe(self.id, channel);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooManyStreams;

struct Connection {
    account: Uuid,
    queue: mpsc::Sender<Arc<Message>>,
    /// Hub keys: `orders` is stored as `orders:<account>`.
    subscriptions: HashSet<String>,
    cut_off: CancellationToken,
}

#[derive(Default)]
struct State {
    next_id: u64,
    connections: HashMap<u64, Connection>,
    /// Hub key → subscribed connections.
    subscribers: HashMap<String, HashSet<u64>>,
    per_principal: HashMap<Uuid, usize>,
    /// The last sequence given out per hub key: the hub's own count where the source does not
    /// number a channel, the source's sequence where it does (a book's).
    sequences: HashMap<String, u64>,
}

pub struct Hub {
    settings: StreamSettings,
    state: Mutex<State>,
}

/// The hub's key for a channel a connection asks for: its own `orders`, or a public one.
fn key(channel: &str, account: Uuid) -> String {
    if channel == "orders" {
        format!("orders:{account}")
    } else {
        channel.to_owned()
    }
}

impl Hub {
    pub fn new(settings: StreamSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            state: Mutex::default(),
        })
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; carry on with them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `account` may open another stream here.
    pub fn has_room(&self, account: Uuid) -> bool {
        self.state()
            .per_principal
            .get(&account)
            .copied()
            .unwrap_or(0)
            < self.settings.max_per_principal
    }

    pub fn connect(self: &Arc<Self>, account: Uuid) -> Result<Subscriber, TooManyStreams> {
        let mut state = self.state();
        let open = state.per_principal.entry(account).or_insert(0);
        if *open >= self.settings.max_per_principal {
            return Err(TooManyStreams);
        }
        *open += 1;
        state.next_id += 1;
        let id = state.next_id;
        let (queue, messages) = mpsc::channel(self.settings.buffer.max(1));
        let cut_off = CancellationToken::new();
        state.connections.insert(
            id,
            Connection {
                account,
                queue,
                subscriptions: HashSet::new(),
                cut_off: cut_off.clone(),
            },
        );
        metrics::gauge!("gateway_stream_connections").set(state.connections.len() as f64);
        Ok(Subscriber {
            id,
            account,
            messages,
            cut_off,
            hub: self.clone(),
        })
    }

    fn disconnect(&self, id: u64) {
        let mut state = self.state();
        remove(&mut state, id);
        metrics::gauge!("gateway_stream_connections").set(state.connections.len() as f64);
    }

    /// Connection `id` receives `channel` from now on (`orders`: its own account's).
    pub fn subscribe(&self, id: u64, channel: &str) {
        let mut state = self.state();
        let Some(connection) = state.connections.get_mut(&id) else {
            return;
        };
        let key = key(channel, connection.account);
        connection.subscriptions.insert(key.clone());
        state.subscribers.entry(key).or_default().insert(id);
    }

    pub fn unsubscribe(&self, id: u64, channel: &str) {
        let mut state = self.state();
        let Some(connection) = state.connections.get_mut(&id) else {
            return;
        };
        let key = key(channel, connection.account);
        connection.subscriptions.remove(&key);
        if let Some(ids) = state.subscribers.get_mut(&key) {
            ids.remove(&id);
        }
    }

    /// Whether any connection subscribes to anything: while none does, every message would
    /// be dropped at [`Hub::publish`], so the feed need not decode events at all.
    pub fn is_listened(&self) -> bool {
        self.state().subscribers.values().any(|ids| !ids.is_empty())
    }

    /// Hands `outgoing` to every subscriber of its channel. Never waits: a subscriber whose
    /// queue is full is cut off.
    pub fn publish(&self, outgoing: &Outgoing) {
        let (key, channel) = match &outgoing.audience {
            Audience::Account(account) => (format!("orders:{account}"), "orders".to_owned()),
            Audience::Channel(channel) => (channel.clone(), channel.clone()),
        };
        let mut state = self.state();
        let Some(ids) = state.subscribers.get(&key).filter(|ids| !ids.is_empty()) else {
            return;
        };
        let ids: Vec<u64> = ids.iter().copied().collect();
        let sequence = match outgoing.sequence {
            Some(sequence) => {
                // A book's sequence only moves forward (docs/stream.md). An update at or
                // below the last one sent is an old state published late — by an owner that
                // lost the symbol to another replica while its update waited to go out — and
                // a client applying it would show an older book as the newest.
                let last = state.sequences.entry(key).or_insert(0);
                if sequence <= *last {
                    metrics::counter!("gateway_stream_stale_updates_total").increment(1);
                    return;
                }
                *last = sequence;
                sequence
            }
            None => {
                let last = state.sequences.entry(key).or_insert(0);
                *last += 1;
                *last
            }
        };
        let text = json!({
            "channel": channel, "type": outgoing.kind, "sequence": sequence, "data": outgoing.data,
        })
        .to_string();
        let message = Arc::new(Message {
            channel,
            sequence,
            text,
        });
        for id in ids {
            let Some(connection) = state.connections.get(&id) else {
                continue;
            };
            match connection.queue.try_send(message.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    connection.cut_off.cancel();
                    remove(&mut state, id);
                    metrics::counter!("gateway_stream_disconnects_total", "reason" => "slow")
                        .increment(1);
                    tracing::info!(connection = id, "stream client too slow; cut off");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => remove(&mut state, id),
            }
        }
    }
}

/// Forgets a connection and its subscriptions; idempotent.
fn remove(state: &mut State, id: u64) {
    let Some(connection) = state.connections.remove(&id) else {
        return;
    };
    for key in &connection.subscriptions {
        if let Some(ids) = state.subscribers.get_mut(key) {
            ids.remove(&id);
            if ids.is_empty() {
                state.subscribers.remove(key);
            }
        }
    }
    if let Some(open) = state.per_principal.get_mut(&connection.account) {
        *open = open.saturating_sub(1);
        if *open == 0 {
            state.per_principal.remove(&connection.account);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hub(buffer: usize) -> Arc<Hub> {
        Hub::new(StreamSettings {
            buffer,
            heartbeat: Duration::from_secs(15),
            max_per_principal: 2,
            auth_timeout: Duration::from_secs(5),
            max_subscriptions: 8,
        })
    }

    fn trade(n: u64) -> Outgoing {
        Outgoing {
            audience: Audience::Channel("trades:BTC-USD".into()),
            kind: "trade",
            data: json!({ "n": n }),
            sequence: None,
        }
    }

    #[test]
    fn a_full_queue_cuts_off_that_subscriber_only() {
        let hub = hub(2);
        let mut fast = hub.connect(Uuid::now_v7()).unwrap();
        let slow = hub.connect(Uuid::now_v7()).unwrap();
        fast.subscribe("trades:BTC-USD");
        slow.subscribe("trades:BTC-USD");
        for n in 0..5 {
            hub.publish(&trade(n));
            // The fast one drains as it goes.
            let got = fast.messages.try_recv().unwrap();
            assert_eq!(got.sequence, n + 1, "consecutive, no gap");
        }
        assert!(slow.cut_off.is_cancelled(), "the slow one was cut off");
        assert!(!fast.cut_off.is_cancelled());
        assert_eq!(hub.state().connections.len(), 1, "and forgotten");
    }

    #[test]
    fn a_book_update_that_would_take_the_sequence_back_is_dropped() {
        let hub = hub(8);
        let mut client = hub.connect(Uuid::now_v7()).unwrap();
        client.subscribe("book:BTC-USD");
        let update = |previous: u64, sequence: u64| Outgoing {
            audience: Audience::Channel("book:BTC-USD".into()),
            kind: "update",
            data: json!({ "previous_sequence": previous }),
            sequence: Some(sequence),
        };
        // The new owner's first update, then the old owner's last one published late, then
        // the same update twice.
        for (previous, sequence) in [(10, 12), (8, 10), (12, 13), (12, 13), (13, 15)] {
            hub.publish(&update(previous, sequence));
        }
        let mut sent = Vec::new();
        while let Ok(message) = client.messages.try_recv() {
            sent.push(message.sequence);
        }
        assert_eq!(sent, [12, 13, 15]);
    }

    #[test]
    fn orders_go_to_their_account_alone() {
        let hub = hub(8);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut a = hub.connect(alice).unwrap();
        let mut b = hub.connect(bob).unwrap();
        a.subscribe("orders");
        b.subscribe("orders");
        hub.publish(&Outgoing {
            audience: Audience::Account(alice),
            kind: "fill",
            data: json!({}),
            sequence: None,
        });
        assert!(a.messages.try_recv().unwrap().text.contains("\"fill\""));
        assert!(b.messages.try_recv().is_err());
    }

    #[test]
    fn streams_per_principal_are_limited_and_given_back() {
        let hub = hub(8);
        let alice = Uuid::now_v7();
        let first = hub.connect(alice).unwrap();
        let _second = hub.connect(alice).unwrap();
        assert!(!hub.has_room(alice));
        assert_eq!(hub.connect(alice).err(), Some(TooManyStreams));
        drop(first);
        assert!(hub.has_room(alice));
        assert!(hub.connect(alice).is_ok());
    }
}
