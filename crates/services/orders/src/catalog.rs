//! The instruments this process has read, kept in memory until a change is announced
//! (ADR 0025): an order, a cancel or a book read needs its instrument, and reading it from the
//! database each time was a round trip per request for a row that changes only when an admin
//! halts or reopens trading. The whole list, which the public `GET /v1/instruments` serves to
//! anyone, is kept the same way.
//!
//! Every change to `instruments`, a creation included, is announced in its own transaction
//! with `pg_notify` on [`CHANNEL`] (delivered on commit, to every session listening — every
//! orders replica). The catalog listens on a connection of its own and forgets what a
//! notification names (and the whole list with it). It caches only while it listens: before
//! its `LISTEN` succeeds and after the connection drops (when notifications may have been
//! missed) it forgets everything and reads through to the database, so a change is never
//! hidden for longer than a notification takes to arrive.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use service_kit::Shutdown;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::error::Result;
use crate::instruments::Instrument;
use crate::store;

/// The channel changes to `orders.instruments` are announced on; the payload is the symbol.
pub const CHANNEL: &str = "orders_instruments";

#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
    known: Arc<RwLock<Known>>,
    /// Whether the listener is up: while it is not, nothing is cached.
    listening: watch::Sender<bool>,
}

#[derive(Default)]
struct Known {
    instruments: HashMap<String, Instrument>,
    /// Every instrument, in symbol order, as last read; any announced change drops it.
    listed: Option<Arc<[Instrument]>>,
    /// Bumped by everything that forgets: a read that began before it must not cache what it
    /// read, as that may be the row from before the change.
    generation: u64,
    listening: bool,
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Arc::default(),
            listening: watch::Sender::new(false),
        }
    }

    /// The instrument `symbol` names, or `None` when there is none (not cached: a symbol
    /// created later must be found).
    pub async fn get(&self, symbol: &str) -> Result<Option<Instrument>> {
        let generation = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(instrument) = known.instruments.get(symbol) {
                return Ok(Some(instrument.clone()));
            }
            known.listening.then_some(known.generation)
        };
        let read = store::instrument(&self.pool, symbol).await?;
        if let (Some(generation), Some(instrument)) = (generation, &read) {
            let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
            if known.listening && known.generation == generation {
                known
                    .instruments
                    .insert(instrument.symbol.clone(), instrument.clone());
            }
        }
        Ok(read)
    }

    /// Every instrument, in symbol order.
    pub async fn listed(&self) -> Result<Arc<[Instrument]>> {
        let generation = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(listed) = &known.listed {
                return Ok(Arc::clone(listed));
            }
            known.listening.then_some(known.generation)
        };
        let read: Arc<[Instrument]> = store::instruments(&self.pool).await?.into();
        if let Some(generation) = generation {
            let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
            if known.listening && known.generation == generation {
                known.listed = Some(Arc::clone(&read));
            }
        }
        Ok(read)
    }

    /// Drops `symbol` from the cache: this process changed it (its own notification follows,
    /// but the change must be seen here from the moment it committed).
    pub fn forget(&self, symbol: &str) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        known.instruments.remove(symbol);
        known.listed = None;
        known.generation += 1;
    }

    /// Starts or stops caching; either way what was cached goes (while nobody listened, changes
    /// may have been missed).
    fn set_listening(&self, listening: bool) {
        {
            let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
            known.instruments.clear();
            known.listed = None;
            known.generation += 1;
            known.listening = listening;
        }
        self.listening.send_replace(listening);
        metrics::gauge!("orders_instrument_cache_listening").set(if listening { 1.0 } else { 0.0 });
    }

    /// Resolves once the catalog listens (and so caches); at once if it does.
    pub async fn until_listening(&self) {
        let mut listening = self.listening.subscribe();
        // An error means the sender is gone, which `self` rules out.
        let _ = listening.wait_for(|listening| *listening).await;
    }

    /// Listens for changes until `stop`, or until the connection is lost — then it returns
    /// (its supervisor starts it again) having stopped caching.
    pub async fn watch(self, stop: Shutdown) {
        if let Err(err) = Caching(&self).listen(&stop).await {
            tracing::warn!(error = %err, "lost the instrument change listener; reading instruments from the database until it is back");
        }
    }
}

/// The listening part of [`Catalog::watch`]; caching stops when it ends, however it ends
/// (an error, a panic, shutdown).
struct Caching<'a>(&'a Catalog);

impl Caching<'_> {
    async fn listen(&self, stop: &Shutdown) -> std::result::Result<(), Lost> {
        let mut listener = PgListener::connect_with(&self.0.pool).await?;
        listener.listen(CHANNEL).await?;
        self.0.set_listening(true);
        loop {
            let received = tokio::select! {
                () = stop.triggered() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            match received {
                Some(notification) => self.0.forget(notification.payload()),
                // The connection dropped: whatever was announced meanwhile is unknown.
                None => return Err(Lost::Connection),
            }
        }
    }
}

impl Drop for Caching<'_> {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("listening: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the listening connection closed")]
    Connection,
}
