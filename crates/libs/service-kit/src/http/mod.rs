//! HTTP plumbing shared by every service.
//!
//! [`service_router`] wraps a service's API routes with the standard stack, outermost first:
//! observe (request id, trace, span, access log, metrics) → timeout → panic guard → body limit
//! → routes, plus health, metrics and problem+json fallbacks for unknown paths and methods.

pub mod api_document;
pub mod base_urls;
pub mod client_ip;
pub mod in_process;
pub mod json;
pub mod observe;
pub mod problem;
pub mod shared_state;

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use client_ip::{ClientIp, TrustedProxies};
pub use json::{Json, Path, Query};
pub use observe::{REQUEST_ID, RequestContext, TRACEPARENT};
pub use problem::{CONTENT_TYPE as PROBLEM_CONTENT_TYPE, FieldError, Problem, ProblemDetails};

use crate::config::HttpSettings;
use crate::health::{self, Readiness};

/// The complete router of a service: its API plus `/health/*` and `/metrics`, behind the
/// standard middleware stack.
pub fn service_router(
    service: &'static str,
    settings: &HttpSettings,
    readiness: Readiness,
    api: Router,
) -> Router {
    api.merge(health::router(readiness.named(service)))
        .merge(crate::metrics::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(settings.request_timeout, timeout))
        .layer(from_fn_with_state(service, observe::observe))
}

async fn not_found() -> Problem {
    Problem::not_found()
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not support that method",
    )
}

/// Bounds the time any request may take (REL-03). A request cut off here was abandoned by us,
/// so the client is told to retry later rather than that its input was wrong.
async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
            Problem::unavailable("request_timeout", "the request took too long", 1).into_response()
        }
    }
}

/// A panic in a handler is a bug, not a reason to lose the process (REL-11): log it and answer
/// 500; the next request is served as usual.
fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %message, "handler panicked");
    Problem::internal().into_response()
}
