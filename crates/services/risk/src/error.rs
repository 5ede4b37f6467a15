//! The risk service's errors and how each reaches a client.

use axum::response::{IntoResponse, Response};
use service_kit::http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("events: {0}")]
    Events(#[from] events::Error),
    #[error("start-up")]
    Launch(#[from] launch::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn fields(errors: Vec<(String, String)>) -> Self {
        Error::Validation(
            errors
                .into_iter()
                .map(|(field, message)| FieldError { field, message })
                .collect(),
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::validation(errors),
            Error::NotFound => Problem::not_found(),
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

/// For the `orders` stream consumer: a database away is worth waiting for, anything else is
/// the event's fault.
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
