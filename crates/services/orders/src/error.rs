//! The orders service's errors and how each reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("instrument exists")]
    InstrumentExists,
    #[error("not found")]
    NotFound,
    /// A trade named in a request (`after=`) is not one of the symbol's trades.
    #[error("{trade} is not a trade of {symbol}")]
    UnknownTrade { trade: uuid::Uuid, symbol: String },
    #[error("the matching queue is full")]
    Overloaded,
    #[error("client order id already used")]
    ClientOrderIdTaken,
    /// The batch could not store an order's idempotency answer: another request with the key
    /// was answered first, or this one's work was fenced off. Nothing of it committed.
    #[error("idempotency key taken")]
    IdempotencyKeyTaken,
    /// The symbol's matching task stopped (it could not rebuild its book: the database is
    /// away) before answering; the next request starts it again.
    #[error("the matching task stopped")]
    MatchingStopped,
    /// This replica does not keep the symbol's book (any more): ask its owner.
    #[error("not the owner of the symbol's book")]
    NotOwner,
    /// The symbol's book is changing replicas right now.
    #[error("the symbol's book is moving between replicas")]
    OwnerMoving,
    /// The order's risk check began too long ago to book it (ADR 0023): nothing of it was
    /// booked, and it may be sent again.
    #[error("the order's risk check expired before it reached the book")]
    CheckExpired,
    /// A later start of risk than the one that checked an order of the batch has raised its
    /// fence (ADR 0023): nothing of the batch committed. Its orders checked by earlier starts
    /// are answered as [`Error::CheckExpired`]; the others may go on.
    #[error("a later start of risk ({newest:?}) fenced off the batch's checks")]
    RiskFenced {
        newest: contracts::checks::RiskStart,
    },
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("idempotency key look-up: {0}")]
    KeyLookUp(#[from] service_kit::idempotency::LookUpError),
    #[error("events: {0}")]
    Events(#[from] events::Error),
    #[error("start-up")]
    Launch(#[from] launch::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::validation(errors),
            Error::InstrumentExists => Problem::new(
                StatusCode::CONFLICT,
                "instrument_exists",
                "an instrument with this symbol exists",
            ),
            Error::NotFound => Problem::not_found(),
            ref err @ Error::UnknownTrade { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_trade", err.to_string())
            }
            Error::Overloaded => Problem::unavailable(
                "overloaded",
                "too many orders for this instrument right now; retry shortly",
                1,
            ),
            Error::NotOwner => Problem::new(
                StatusCode::CONFLICT,
                "not_owner",
                "this replica does not keep the instrument's book",
            ),
            Error::OwnerMoving => Problem::unavailable(
                "matching_moving",
                "the instrument's book is moving between replicas; retry with the same Idempotency-Key",
                1,
            ),
            Error::CheckExpired | Error::RiskFenced { .. } => Problem::unavailable(
                "check_expired",
                "the order's risk check took too long to reach the book; nothing was booked, retry with the same Idempotency-Key",
                1,
            ),
            Error::MatchingStopped => Problem::unavailable(
                "matching_unavailable",
                "the matching engine for this instrument is restarting; retry with the same Idempotency-Key",
                1,
            ),
            Error::ClientOrderIdTaken => Problem::new(
                StatusCode::CONFLICT,
                "client_order_id_taken",
                "you already used this client_order_id",
            ),
            // Answered by the handler from the key's stored answer; seen as such only when a
            // replica forwards it (`forwarding` maps the code back).
            Error::IdempotencyKeyTaken => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_taken",
                "another request with this idempotency key was answered first",
            ),
            Error::Problem(problem) => problem,
            Error::Database(ref err) if service_kit::db::is_unavailable(err) => {
                Problem::dependency_unavailable("database", err)
            }
            Error::KeyLookUp(ref err) if err.is_database_unavailable() => {
                Problem::dependency_unavailable("database", err)
            }
            Error::Events(ref err) if err.is_transient() => {
                Problem::dependency_unavailable("events", err)
            }
            other => Problem::unexpected(&other),
        };
        problem.into_response()
    }
}

/// For the `risk` stream consumer (kill switches): a database away or a full matching queue is
/// worth waiting for; anything else is the event's fault.
impl From<Error> for events::HandlerError {
    fn from(err: Error) -> Self {
        match err {
            Error::Database(err) => err.into(),
            Error::Events(err) => err.into(),
            Error::Overloaded
            | Error::MatchingStopped
            | Error::NotOwner
            | Error::OwnerMoving
            | Error::CheckExpired
            | Error::RiskFenced { .. } => events::HandlerError::transient(err),
            other => events::HandlerError::permanent(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
