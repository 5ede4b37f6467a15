//! [`Secrets`]: references resolved through the providers, each value kept for a TTL and
//! re-fetched in the background; whoever watches a reference hears when its value changed,
//! so a rotated database password or signing key is used without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::provider::SecretProvider;
use crate::{Error, Reference};

struct Entry {
    value: SecretString,
    fetched: Instant,
    /// Present once someone watches the reference.
    changes: Option<watch::Sender<SecretString>>,
}

pub struct Secrets {
    provider: Arc<dyn SecretProvider>,
    ttl: Duration,
    entries: Mutex<HashMap<Reference, Entry>>,
}

impl Secrets {
    pub fn new(provider: Arc<dyn SecretProvider>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            provider,
            ttl,
            entries: Mutex::default(),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Reference, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value, from the cache while it is younger than the TTL.
    pub async fn get(&self, reference: &Reference) -> Result<SecretString, Error> {
        if let Some(entry) = self.entries().get(reference)
            && entry.fetched.elapsed() < self.ttl
        {
            return Ok(entry.value.clone());
        }
        self.refresh(reference).await
    }

    /// Fetches the value now; watchers hear of it if it changed.
    pub async fn refresh(&self, reference: &Reference) -> Result<SecretString, Error> {
        let value = self.provider.fetch(reference).await?;
        let mut entries = self.entries();
        match entries.get_mut(reference) {
            Some(entry) => {
                let changed = entry.value.expose_secret() != value.expose_secret();
                entry.value = value.clone();
                entry.fetched = Instant::now();
                if changed {
                    tracing::info!(%reference, "secret changed");
                    if let Some(changes) = &entry.changes {
                        changes.send_replace(value.clone());
                    }
                }
            }
            None => {
                entries.insert(
                    reference.clone(),
                    Entry {
                        value: value.clone(),
                        fetched: Instant::now(),
                        changes: None,
                    },
                );
            }
        }
        Ok(value)
    }

    /// The current value and a receiver that sees every later change (after a refresh).
    pub async fn watch(
        &self,
        reference: &Reference,
    ) -> Result<watch::Receiver<SecretString>, Error> {
        let value = self.get(reference).await?;
        let mut entries = self.entries();
        let entry = entries.entry(reference.clone()).or_insert_with(|| Entry {
            value: value.clone(),
            fetched: Instant::now(),
            changes: None,
        });
        let changes = entry.changes.get_or_insert_with(|| watch::channel(value).0);
        Ok(changes.subscribe())
    }

    /// Re-fetches every watched reference each `interval` until `stop` resolves. A failed
    /// fetch keeps the last value (and is logged by reference, never by value): a secret store
    /// briefly down must not take the service down with it.
    pub async fn refresh_watched_every(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => {}
            }
            let watched: Vec<Reference> = self
                .entries()
                .iter()
                .filter(|(_, e)| e.changes.is_some())
                .map(|(r, _)| r.clone())
                .collect();
            for reference in watched {
                if let Err(err) = self.refresh(&reference).await {
                    tracing::warn!(error = %err, "secret refresh failed; keeping the last value");
                }
            }
        }
    }
}
