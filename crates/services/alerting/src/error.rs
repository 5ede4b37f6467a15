//! The alerting service's errors and how each reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    /// A state the request cannot apply to: `code` says which (`channel_exists`,
    /// `alert_resolved`).
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("events: {0}")]
    Events(#[from] events::Error),
    #[error("start-up")]
    Launch(#[from] launch::Error),
    /// An alert event alerting cannot read (its shape or version): dead-lettered.
    #[error("event: {0}")]
    Payload(#[from] events::envelope::PayloadError),
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

    /// A violation of unique constraint `constraint` becomes a 409 `code`; any other error
    /// stays what it is. Matched by constraint name, never by message text.
    pub fn conflict_on(err: sqlx::Error, constraint: &str, code: &'static str) -> Self {
        let violated = err
            .as_database_error()
            .and_then(|e| e.constraint())
            .is_some_and(|c| c == constraint);
        if violated {
            Error::Conflict {
                code,
                detail: "it exists already".to_owned(),
            }
        } else {
            Error::Database(err)
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::validation(errors),
            Error::NotFound => Problem::not_found(),
            Error::Conflict { code, detail } => Problem::new(StatusCode::CONFLICT, code, detail),
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

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For the stream consumer: a database away is worth waiting for; anything else is the
/// event's fault.
impl From<Error> for events::HandlerError {
    fn from(err: Error) -> Self {
        match err {
            Error::Database(err) => err.into(),
            Error::Events(err) => err.into(),
            other => events::HandlerError::permanent(other),
        }
    }
}
