//! Redis: a reconnecting connection manager and namespaced keys.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

/// Connects a manager that reconnects by itself; every command has a bounded response time so a
/// stalled Redis turns into an error, not a hung request (REL-03).
pub async fn connect(url: &SecretString) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    ConnectionManager::new_with_config(client, config).await
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
