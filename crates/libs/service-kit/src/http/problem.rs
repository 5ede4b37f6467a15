//! RFC 9457 problem details: the one shape of every error Bourse returns.
//!
//! Each crate keeps its own `Error` enum and turns it into a [`Problem`]; this type only knows
//! how to render one. The `request_id` is filled from the request being served, so a client can
//! quote it and an operator can find the matching log lines.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::observe;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A problem+json response: boxed, because errors travel in every `Result` of the code base
/// and should cost one pointer there.
#[derive(Clone, Debug)]
pub struct Problem(Box<ProblemDetails>);

/// The body of a problem+json response, plus the headers that go with it (e.g. `Retry-After`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    #[schema(value_type = u16)]
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    pub detail: String,
    /// Machine-readable reason, stable across releases (`insufficient_funds`, `rate_limited`…).
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    #[schema(ignore)]
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(ProblemDetails {
            type_uri: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: detail.into(),
            code: code.to_owned(),
            request_id: None,
            errors: Vec::new(),
            headers: Vec::new(),
        }))
    }

    pub fn details(&self) -> &ProblemDetails {
        &self.0
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The JSON body as it would be sent now (with the current request id): what an
    /// idempotency record stores to replay a refusal.
    pub fn body(&self) -> Result<String, serde_json::Error> {
        let mut details = self.0.as_ref().clone();
        if details.request_id.is_none() {
            details.request_id = observe::current_request_id();
        }
        serde_json::to_string(&details)
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 422 with one entry per invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut problem =
            Self::unprocessable("validation_failed", "the request has invalid fields");
        problem.0.errors = errors;
        problem
    }

    /// 503 telling the client when to come back.
    pub fn unavailable(code: &str, detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).retry_after(retry_after_secs)
    }

    /// 500. The detail is deliberately vague: the cause is in the logs, under the request id.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred; quote the request_id when reporting it",
        )
    }

    /// 503 for a dependency (database, Redis) that is down or saturated; the cause is logged.
    pub fn dependency_unavailable(dependency: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(dependency, error = %cause, "dependency unavailable");
        Self::unavailable("dependency_unavailable", "try again shortly", 1)
    }

    /// 500 for anything no handler expected; the cause is logged, the client gets the request id.
    pub fn unexpected(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::internal()
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.0.headers
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut details = *self.0;
        if details.request_id.is_none() {
            details.request_id = observe::current_request_id();
        }
        let body = serde_json::to_vec(&details).unwrap_or_else(|_| b"{}".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in details.headers {
            headers.append(name, value);
        }
        (details.status, headers, body).into_response()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.code,
            self.0.detail
        )
    }
}

impl std::error::Error for Problem {}

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Problem")
    }
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ProblemDetails as utoipa::PartialSchema>::schema()
    }
}
