//! The settlement service's errors and how each reaches a client.

use axum::response::{IntoResponse, Response};
use service_kit::http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("insufficient {asset} funds")]
    InsufficientFunds { asset: String },
    #[error("not found")]
    NotFound,
    #[error("amount overflow")]
    Overflow(#[from] crate::ledger::Overflow),
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Database(sqlx::Error),
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

impl From<sqlx::Error> for Error {
    /// The ledger's constraints are its last line of defence: a violation of the non-negative
    /// balance check (or a debit of an account that does not exist: one that never held the
    /// asset) is a refusal, not a fault.
    fn from(err: sqlx::Error) -> Self {
        let constraint = err
            .as_database_error()
            .and_then(|e| e.constraint())
            .map(str::to_owned);
        match constraint.as_deref() {
            Some("accounts_non_negative" | "transfers_debit_fkey") => Error::InsufficientFunds {
                asset: String::new(),
            },
            _ => Error::Database(err),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::validation(errors),
            Error::InsufficientFunds { asset } if asset.is_empty() => {
                Problem::unprocessable("insufficient_funds", "not enough available funds")
            }
            Error::InsufficientFunds { asset } => Problem::unprocessable(
                "insufficient_funds",
                format!("not enough available {asset}"),
            ),
            Error::NotFound => Problem::not_found(),
            Error::Overflow(_) => Problem::unprocessable(
                "amount_out_of_range",
                "the amount is too large for the ledger",
            ),
            Error::Problem(problem) => problem,
            Error::Database(ref err) if service_kit::db::is_unavailable(err) => {
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

/// For the `orders` stream consumer: a database away is worth waiting for, anything else the
/// ledger refuses is the event's fault.
impl From<Error> for events::HandlerError {
    fn from(err: Error) -> Self {
        match err {
            Error::Database(err) => err.into(),
            Error::Events(err) => err.into(),
            other => events::HandlerError::permanent(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
