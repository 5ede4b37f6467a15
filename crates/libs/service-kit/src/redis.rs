//! Redis: a reconnecting connection manager and namespaced keys.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::CommonConfig;

/// Connects to the configured Redis: `REDIS_URL`, over TLS for a `rediss://` URL, its
/// certificate verified against `BOURSE_REDIS_TLS_CA` when set (SEC-13).
pub async fn connect(common: &CommonConfig) -> redis::RedisResult<ConnectionManager> {
    connect_url(&common.redis_url, common.tls.redis_ca_pem.as_deref()).await
}

/// Connects a manager that reconnects by itself; every command has a bounded response time so a
/// stalled Redis turns into an error, not a hung request (REL-03). `root_ca`: the CA a
/// `rediss://` server must be signed by, instead of the platform's roots.
pub async fn connect_url(
    url: &SecretString,
    root_ca: Option<&[u8]>,
) -> redis::RedisResult<ConnectionManager> {
    let client = match root_ca {
        Some(ca) if url.expose_secret().starts_with("rediss://") => redis::Client::build_with_tls(
            url.expose_secret(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        )?,
        _ => redis::Client::open(url.expose_secret())?,
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    ConnectionManager::new_with_config(client, config).await
}

/// Whether a Redis error means "Redis is unreachable, restarting or failing over right now":
/// a retry may succeed, so a request gets a 503 and an event is retried, never dead-lettered.
/// Beyond socket failures, the client's own retry advice covers the server's words for it:
/// `LOADING` (a restarted server reading its data), `READONLY` (a primary demoted during a
/// failover), `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`.
pub fn is_unavailable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || !matches!(err.retry_method(), redis::RetryMethod::NoRetry)
}

/// The namespace of every key a deployment writes: `prefix:part:part`. Tests give each run its
/// own prefix, so parallel runs never see each other's counters.
#[derive(Clone)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    pub fn new(prefix: &str) -> Self {
        Self(Arc::from(prefix))
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = String::from(&*self.0);
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPrefix({:?})", &*self.0)
    }
}

impl KeyPrefix {
    /// The Redis Stream for a logical stream name: `bourse.orders` with the default prefix.
    pub fn stream(&self, name: &str) -> String {
        format!("{}.{name}", self.0)
    }
}
