//! Why an event was not applied, and so what the consumer does next (REL-10).
//!
//! A database failover or a Redis restart says nothing about the event: the same attempt
//! succeeds once the dependency is back, so such a failure is [`HandlerError::Transient`] and
//! the consumer retries it in place, with capped backoff, for as long as it takes — it never
//! counts towards dead-lettering. Anything else — a payload that does not parse, an unknown
//! version, a business rule the event breaks — is [`HandlerError::Permanent`]: retried a few
//! times (another replica may still be applying an event this one depends on), then
//! dead-lettered for an operator.
//!
//! Both keep their cause as its `source`.

use std::error::Error as StdError;

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency is unreachable, restarting or saturated; the event itself is fine.
    #[error("transient: {0}")]
    Transient(#[source] BoxError),
    /// The event cannot be applied as it is.
    #[error("permanent: {0}")]
    Permanent(#[source] BoxError),
}

impl HandlerError {
    pub fn transient(cause: impl Into<BoxError>) -> Self {
        Self::Transient(cause.into())
    }

    pub fn permanent(cause: impl Into<BoxError>) -> Self {
        Self::Permanent(cause.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Database errors are transient exactly when a request would get a 503 for them
/// ([`service_kit::db::is_unavailable`]); a constraint or a syntax error is permanent.
impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        if service_kit::db::is_unavailable(&err) {
            Self::transient(err)
        } else {
            Self::permanent(err)
        }
    }
}

impl From<redis::RedisError> for HandlerError {
    fn from(err: redis::RedisError) -> Self {
        if service_kit::redis::is_unavailable(&err) {
            Self::transient(err)
        } else {
            Self::permanent(err)
        }
    }
}

/// What the events library itself failed at, inside a handler (an outbox append).
impl From<crate::Error> for HandlerError {
    fn from(err: crate::Error) -> Self {
        match err {
            crate::Error::Database(err) => err.into(),
            crate::Error::Redis(err) => err.into(),
            other @ crate::Error::Encoding(_) => Self::permanent(other),
        }
    }
}

/// A payload that does not parse will not parse on the next attempt either.
impl From<crate::envelope::PayloadError> for HandlerError {
    fn from(err: crate::envelope::PayloadError) -> Self {
        Self::permanent(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_transient_and_a_broken_rule_is_permanent() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(HandlerError::from(refused).is_transient());
        assert!(HandlerError::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!HandlerError::from(sqlx::Error::RowNotFound).is_transient());
        let malformed = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!HandlerError::from(crate::Error::Encoding(malformed)).is_transient());
    }

    #[test]
    fn an_unreachable_redis_is_transient() {
        let dropped =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(HandlerError::from(dropped).is_transient());
        let refused = redis::RedisError::from((redis::ErrorKind::Client, "no such command"));
        assert!(!HandlerError::from(refused).is_transient());
    }
}
