//! The issuer's public keys, cached.
//!
//! Verifying a token must not cost a network call, so keys are cached by `kid`. A token signed
//! with a key we have not seen triggers a refresh (that is how a rotation reaches us), but at
//! most once per `min_refresh_interval`, so a flood of tokens with made-up `kid`s cannot turn
//! into a flood of JWKS fetches.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};

/// Where keys come from: auth's JWKS endpoint for other services, auth's own store for auth.
pub trait KeySource: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>>;
}

/// Fetches a JWKS document over HTTP.
pub struct HttpKeySource {
    client: reqwest::Client,
    url: String,
}

impl HttpKeySource {
    pub fn new(client: reqwest::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

impl KeySource for HttpKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        Box::pin(async move {
            let response = self
                .client
                .get(&self.url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map_err(|e| format!("fetching {}: {e}", self.url))?;
            if !response.status().is_success() {
                return Err(format!(
                    "fetching {}: status {}",
                    self.url,
                    response.status()
                ));
            }
            response
                .json::<JwkSet>()
                .await
                .map_err(|e| format!("decoding JWKS from {}: {e}", self.url))
        })
    }
}

/// A fixed key set (tests and benchmarks).
pub struct StaticKeySource(pub JwkSet);

impl KeySource for StaticKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        let set = self.0.clone();
        Box::pin(async move { Ok(set) })
    }
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched_at: Option<Instant>,
}

pub struct JwksCache {
    source: Arc<dyn KeySource>,
    cached: RwLock<Cached>,
    refreshing: tokio::sync::Mutex<()>,
    min_refresh_interval: Duration,
    max_age: Duration,
}

/// Why no key could be found for a `kid`.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyLookupError {
    Unknown,
    Unavailable(String),
}

impl JwksCache {
    pub fn new(source: Arc<dyn KeySource>) -> Self {
        Self::with_intervals(source, Duration::from_secs(1), Duration::from_secs(300))
    }

    pub fn with_intervals(
        source: Arc<dyn KeySource>,
        min_refresh_interval: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            source,
            cached: RwLock::new(Cached::default()),
            refreshing: tokio::sync::Mutex::new(()),
            min_refresh_interval,
            max_age,
        }
    }

    /// The key for `kid`, refreshing the set when the key is unknown or the set is old.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, KeyLookupError> {
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        let _guard = self.refreshing.lock().await;
        // Another task may have refreshed while we waited for the lock.
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        if self.may_refresh() {
            match self.source.fetch().await {
                Ok(set) => self.replace(&set),
                Err(reason) => {
                    tracing::warn!(%reason, "JWKS refresh failed");
                    // A stale key is better than refusing every request while auth is down.
                    return self
                        .lookup(kid, false)
                        .ok_or(KeyLookupError::Unavailable(reason));
                }
            }
        }
        self.lookup(kid, false).ok_or(KeyLookupError::Unknown)
    }

    fn lookup(&self, kid: &str, fresh_only: bool) -> Option<Arc<DecodingKey>> {
        let cached = self.cached.read().ok()?;
        let fresh = cached
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        if fresh_only && !fresh {
            return None;
        }
        cached.keys.get(kid).cloned()
    }

    fn may_refresh(&self) -> bool {
        self.cached.read().map_or(true, |cached| {
            cached
                .fetched_at
                .is_none_or(|at| at.elapsed() >= self.min_refresh_interval)
        })
    }

    fn replace(&self, set: &JwkSet) {
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                // Only Ed25519 keys are ever accepted; anything else in the set is ignored.
                let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
                    return None;
                };
                if params.curve != EllipticCurve::Ed25519 {
                    return None;
                }
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_ed_components(&params.x).ok()?;
                Some((kid, Arc::new(key)))
            })
            .collect();
        if let Ok(mut cached) = self.cached.write() {
            *cached = Cached {
                keys,
                fetched_at: Some(Instant::now()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts fetches; serves an empty set.
    struct Counting(AtomicUsize);

    impl KeySource for Counting {
        fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(JwkSet { keys: Vec::new() }) })
        }
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_fetches_the_set_once_per_interval() {
        let source = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = JwksCache::with_intervals(
            source.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        for i in 0..100 {
            assert_eq!(
                cache.key(&format!("made-up-{i}")).await.err(),
                Some(KeyLookupError::Unknown)
            );
        }
        assert_eq!(source.0.load(Ordering::SeqCst), 1);
    }
}
