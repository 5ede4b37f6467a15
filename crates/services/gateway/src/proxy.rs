//! Forwarding a request to its upstream service.
//!
//! The body is read up to the limit (413 beyond it), hop-by-hop headers are dropped, and the
//! request id, trace context and resolved client address travel on (OBS-06). Every call goes
//! through `libs/resilience`: an upstream that is down or slow becomes a 503/504 problem — at
//! once when its breaker is open — never a hang (REL-03, REL-05, REL-06).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resilience::Call;
use service_kit::http::client_ip::X_FORWARDED_FOR;
use service_kit::http::{Problem, REQUEST_ID, TRACEPARENT};

use crate::route_table::Upstream;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones the
/// gateway sets itself.
static NOT_FORWARDED: [HeaderName; 11] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    REQUEST_ID,
    TRACEPARENT,
];

fn forwardable(name: &HeaderName) -> bool {
    !NOT_FORWARDED.contains(name)
        && name.as_str() != "keep-alive"
        && name.as_str() != X_FORWARDED_FOR
}

/// The gateway's upstream services, each behind its own breaker, bulkhead and timeout.
/// Cloned with the gateway's state on every request, so the list is shared, not copied.
#[derive(Clone)]
pub struct Upstreams {
    by_name: Arc<[(Upstream, resilience::Upstream)]>,
    body_limit: usize,
}

impl Upstreams {
    /// One resilient client per upstream of the route table.
    pub fn new(by_name: Vec<(Upstream, resilience::Upstream)>, body_limit: usize) -> Self {
        Self {
            by_name: by_name.into(),
            body_limit,
        }
    }

    /// The client of `upstream`; none only for a service the table does not list.
    pub fn get(&self, upstream: Upstream) -> Option<&resilience::Upstream> {
        self.by_name
            .iter()
            .find(|(known, _)| *known == upstream)
            .map(|(_, client)| client)
    }

    /// Every upstream's client, in the route table's order.
    pub fn all(&self) -> impl Iterator<Item = &resilience::Upstream> {
        self.by_name.iter().map(|(_, client)| client)
    }

    /// Forwards a client's request. Only idempotent methods are retried (REL-04); the request
    /// id and trace context travel on from the request's context (OBS-06).
    pub async fn forward(&self, upstream: Upstream, client_ip: IpAddr, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, self.body_limit).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body exceeds the size limit",
                )
                .into_response();
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            if forwardable(name) {
                headers.append(name, value.clone());
            }
        }
        if let Ok(ip) = HeaderValue::from_str(&client_ip.to_string()) {
            // Replaced, not appended: the gateway has already decided who the client is.
            headers.insert(HeaderName::from_static(X_FORWARDED_FOR), ip);
        }
        let call = Call::new(parts.method, path).headers(headers).body(body);
        let Some(client) = self.get(upstream) else {
            tracing::error!(
                upstream = upstream.name,
                "a route names an upstream not in the table"
            );
            return Problem::internal().into_response();
        };
        match client.send(call).await {
            Ok(response) => into_response(response),
            Err(err) => {
                tracing::warn!(upstream = err.upstream(), error = %err, "upstream call failed");
                err.problem().into_response()
            }
        }
    }
}

fn into_response(upstream: reqwest::Response) -> Response {
    let mut response = Response::builder().status(upstream.status());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in upstream.headers() {
            if forwardable(name) {
                headers.append(name, value.clone());
            }
        }
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| Problem::internal().into_response())
}
