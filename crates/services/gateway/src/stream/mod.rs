//! The WebSocket stream `/v1/stream` (TRD-09): a trader's own order updates and fills, public
//! trades, and order books as a snapshot followed by sequenced updates.
//!
//! - [`messages`]: what each event on the `orders` and `market` streams becomes on which
//!   channel — no IO.
//! - [`hub`]: who is connected and subscribed to what; fan-out into bounded per-connection
//!   queues, disconnecting a connection whose queue is full rather than letting it grow.
//! - [`feed`]: each gateway replica reads the Redis streams itself (`XREAD`, no consumer
//!   group), so every replica serves its own clients everything.
//!
//! The handler (authentication, subscriptions, heartbeats) is `http::stream`.

pub mod feed;
pub mod hub;
pub mod messages;

pub use hub::{Hub, StreamSettings};
