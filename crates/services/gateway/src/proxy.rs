//! Forwarding a request to its upstream service.
//!
//! The body is read up to the limit (413 beyond it), hop-by-hop headers are dropped, and the
//! request id, trace context and resolved client address travel on (OBS-06). An upstream that
//! is down or slow becomes a 503/504 problem at once — never a hang (REL-03).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use service_kit::http::client_ip::X_FORWARDED_FOR;
use service_kit::http::{Problem, REQUEST_ID, RequestContext, TRACEPARENT};

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

#[derive(Clone)]
pub struct Upstreams {
    client: reqwest::Client,
    auth_url: String,
    orders_url: String,
    body_limit: usize,
}

impl Upstreams {
    pub fn new(
        client: reqwest::Client,
        auth_url: String,
        orders_url: String,
        body_limit: usize,
    ) -> Self {
        Self {
            client,
            auth_url,
            orders_url,
            body_limit,
        }
    }

    pub fn base_url(&self, upstream: Upstream) -> &str {
        match upstream {
            Upstream::Auth => &self.auth_url,
            Upstream::Orders => &self.orders_url,
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn forward(
        &self,
        upstream: Upstream,
        client_ip: IpAddr,
        req: Request,
        timeout: Duration,
    ) -> Response {
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
        let url = format!("{}{}", self.base_url(upstream), path);

        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
        for (name, value) in &parts.headers {
            if forwardable(name) {
                headers.append(name, value.clone());
            }
        }
        if let Some(ctx) = parts.extensions.get::<RequestContext>() {
            if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
                headers.insert(REQUEST_ID, id);
            }
            if let Ok(tp) = HeaderValue::from_str(&ctx.trace.traceparent()) {
                headers.insert(TRACEPARENT, tp);
            }
        }
        if let Ok(ip) = HeaderValue::from_str(&client_ip.to_string()) {
            // Replaced, not appended: the gateway has already decided who the client is.
            headers.insert(HeaderName::from_static(X_FORWARDED_FOR), ip);
        }

        let started = Instant::now();
        let result = self
            .client
            .request(parts.method, &url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        let name = upstream_name(upstream);
        match result {
            Ok(upstream_response) => {
                metrics::histogram!("gateway_upstream_request_duration_seconds",
                    "upstream" => name, "outcome" => "response")
                .record(started.elapsed());
                into_response(upstream_response)
            }
            Err(err) => {
                let outcome = if err.is_timeout() { "timeout" } else { "error" };
                metrics::histogram!("gateway_upstream_request_duration_seconds",
                    "upstream" => name, "outcome" => outcome)
                .record(started.elapsed());
                tracing::warn!(upstream = name, error = %err, "upstream call failed");
                if err.is_timeout() {
                    Problem::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        format!("{name} did not answer in time"),
                    )
                    .retry_after(1)
                    .into_response()
                } else {
                    Problem::unavailable(
                        "upstream_unavailable",
                        format!("{name} is unavailable"),
                        1,
                    )
                    .into_response()
                }
            }
        }
    }
}

fn upstream_name(upstream: Upstream) -> &'static str {
    match upstream {
        Upstream::Auth => "auth",
        Upstream::Orders => "orders",
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
