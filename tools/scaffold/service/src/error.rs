//! {{Name}}'s errors and how each reaches a client: a problem+json answer, never a bare 500
//! with a cause in it.

use axum::response::{IntoResponse, Response};
use service_kit::http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("migrating")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("start-up")]
    Launch(#[from] launch::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Problem(problem) => problem,
            Error::Database(ref err) if service_kit::db::is_unavailable(err) => {
                Problem::dependency_unavailable("database", err)
            }
            other => Problem::unexpected(&other),
        };
        problem.into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
