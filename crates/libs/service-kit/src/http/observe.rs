//! The outermost middleware of every service: request id, trace context, the request span,
//! the access log line and RED metrics.
//!
//! A valid inbound `X-Request-Id` is kept (so a client or the gateway can correlate), anything
//! else is replaced by a fresh UUIDv7; it is echoed on the response, recorded on the span (so
//! every log line of the request carries it) and kept in a task-local so error bodies can quote
//! it (OBS-06).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::TraceContext;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|ctx| ctx.request_id.clone()).ok()
}

/// The request id and trace context of the request being served by this task, if any: what
/// an event written while serving it carries as correlation and `traceparent` (OBS-06).
pub fn current_context() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the request `context` — for work handed to another task (a matching
/// task, a worker) on the request's behalf, so its errors quote the request id and the events
/// it writes carry the request's correlation and trace.
pub async fn within<F: std::future::Future>(context: Option<RequestContext>, work: F) -> F::Output {
    match context {
        Some(context) => CURRENT.scope(context, work).await,
        None => work.await,
    }
}

/// [`within`] for synchronous work: runs `work` now, as part of the request `context`.
pub fn within_sync<R>(context: Option<RequestContext>, work: impl FnOnce() -> R) -> R {
    match context {
        Some(context) => CURRENT.sync_scope(context, work),
        None => work(),
    }
}

/// What downstream code needs to continue the request's story on an outbound call.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceContext,
}

/// A request id we are willing to carry: short, printable, no separators that could forge log
/// structure or headers.
pub fn is_valid_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn observe(
    State(service): State<&'static str>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let parent = TraceContext::parse(
        req.headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();

    let span = tracing::info_span!(
        "http_request",
        service,
        method = %method,
        route = %route,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        principal = tracing::field::Empty,
        // Set when the request was signed with an API key: its uses are on record.
        api_key = tracing::field::Empty,
    );
    let trace = crate::telemetry::bind_span(&span, parent);
    let context = RequestContext {
        request_id: request_id.clone(),
        trace,
    };
    req.extensions_mut().insert(context.clone());

    let mut response = CURRENT
        .scope(context, next.run(req).instrument(span.clone()))
        .await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    crate::metrics::record_request(service, method.as_str(), &route, status, elapsed);

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid_request_id;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(is_valid_request_id("0190b7a2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"));
        assert!(is_valid_request_id("client.trace:42_a"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(!is_valid_request_id("evil\nlog line"));
        assert!(!is_valid_request_id("a b"));
    }
}
