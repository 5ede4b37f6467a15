//! The auth service's errors and how each reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// Wrong email or wrong password: deliberately one variant, one response (SEC-01).
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("too many failed logins")]
    Throttled { retry_after_secs: u64 },
    #[error("user not found")]
    UserNotFound,
    /// Not the caller's, unknown, or revoked already: one answer for all three.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// Unknown service client or wrong secret: one variant, one response.
    #[error("invalid service client")]
    InvalidClient,
    #[error("{client} may not call {audience}")]
    AudienceNotGranted { client: String, audience: String },
    #[error("no signing key is configured")]
    NoSigningKey,
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("start-up")]
    Launch(#[from] launch::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::validation(errors),
            Error::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the email or password is incorrect",
            ),
            Error::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is invalid, expired or revoked",
            ),
            Error::Throttled { retry_after_secs } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_logins",
                "too many failed logins; try again later",
            )
            .retry_after(retry_after_secs),
            Error::UserNotFound | Error::ApiKeyNotFound => Problem::not_found(),
            Error::InvalidClient => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "the client id or secret is incorrect",
            ),
            Error::AudienceNotGranted { client, audience } => Problem::new(
                StatusCode::FORBIDDEN,
                "audience_not_granted",
                format!("{client} is not granted access to {audience}"),
            ),
            Error::Problem(problem) => problem,
            Error::Redis(ref err) => Problem::dependency_unavailable("redis", err),
            Error::Database(ref err) if service_kit::db::is_unavailable(err) => {
                Problem::dependency_unavailable("database", err)
            }
            other => Problem::unexpected(&other),
        };
        problem.into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
