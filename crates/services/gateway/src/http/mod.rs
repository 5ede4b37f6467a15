//! The gateway's router: one axum route per row of the route table, plus the API document and
//! its interactive page.

use std::net::IpAddr;

use access::Principal;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use axum::{Extension, Router};
use service_kit::http::{ClientIp, Problem};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::Gateway;
use crate::admission::Lane;
use crate::api_keys::{self, ApiKeyVerifier};
use crate::route_table::{Access, ROUTES, RouteSpec};

pub mod stream;

pub fn router(gateway: Gateway) -> Router {
    let trusted = gateway.trusted_proxies.clone();
    let mut router = Router::new();
    for spec in ROUTES {
        let Ok(filter) = MethodFilter::try_from(spec.method.clone()) else {
            continue;
        };
        router = router.route(
            spec.path,
            on(
                filter,
                move |State(gw): State<Gateway>, ClientIp(ip): ClientIp, req: Request| async move {
                    gate(&gw, spec, ip, req).await
                },
            ),
        );
    }
    let docs: Router<Gateway> = SwaggerUi::new("/docs")
        .config(SwaggerConfig::new(["/openapi.json"]))
        .into();
    router
        // The WebSocket stream authenticates itself (header or first message), so it is not a
        // row of the route table; the per-IP limit still applies to its upgrades.
        .route("/v1/stream", get(stream::upgrade))
        .route("/openapi.json", get(openapi))
        .merge(docs)
        .layer(Extension(trusted))
        .with_state(gateway)
}

/// Admits the request per the gateway's load, its route's access rule and rate limits, then
/// forwards it.
async fn gate(gw: &Gateway, spec: &'static RouteSpec, ip: IpAddr, req: Request) -> Response {
    // Admin routes are checked for source first: from elsewhere they do not even parse tokens,
    // nor take one of the operators' permits.
    if spec.is_admin() && !gw.admin_allowlist.contains(ip) {
        tracing::warn!(%ip, path = spec.path, "admin route from a disallowed address");
        return Problem::forbidden("admin routes are not reachable from this address")
            .into_response();
    }
    // Then, before a token is even verified: under overload, refusing must be the cheap part.
    // Each upstream has its own permits, so one that stands still sheds only its own routes;
    // operators have theirs, so a flood of orders cannot shed the kill switch.
    let lane = if spec.is_admin() {
        Lane::Admin
    } else {
        Lane::Traffic
    };
    let _in_flight = match gw.admission.admit(lane, spec.upstream).await {
        Ok(permit) => permit,
        Err(problem) => return problem.into_response(),
    };
    if let Some(deprecation) = &spec.deprecation
        && let Some(gone) =
            crate::deprecation::gone(deprecation, OffsetDateTime::now_utc().unix_timestamp())
    {
        return gone.into_response();
    }
    let (mut parts, mut body) = req.into_parts();
    let mut budget = None;
    if spec.access != Access::Public {
        let principal = if ApiKeyVerifier::is_signed(&parts.headers) {
            match signed(gw, spec, ip, &mut parts, body).await {
                Ok((principal, whole)) => {
                    body = whole;
                    principal
                }
                Err(problem) => return problem.into_response(),
            }
        } else {
            match Principal::from_request_parts(&mut parts, gw).await {
                Ok(principal) => principal,
                Err(problem) => return problem.into_response(),
            }
        };
        if let Access::Roles(roles) = spec.access
            && let Err(problem) = principal.require_any(roles)
        {
            return problem.into_response();
        }
        match gw.principal_limiter.check(&principal).await {
            Ok(decision) if !decision.allowed => return decision.rejection().into_response(),
            Ok(decision) => budget = Some(decision),
            // Fail open: an outage of Redis must not take the API down; the per-IP limit
            // still applies and the outage is alerted on through readiness and logs.
            Err(crate::rate_limit::LimiterUnavailable::Skipped) => {}
            Err(err) => {
                tracing::warn!(error = %err, "principal rate limiter unavailable; admitting")
            }
        }
    }
    let req = Request::from_parts(parts, body);
    let mut response = gw.upstreams.forward(spec.upstream, ip, req).await;
    if let Some(decision) = budget {
        response.headers_mut().extend(decision.headers());
    }
    if let Some(deprecation) = &spec.deprecation {
        response
            .headers_mut()
            .extend(crate::deprecation::headers(deprecation));
    }
    response
}

/// A request signed with an API key: its signature checked over the whole body, its route
/// within the key's scopes; it goes on with the owner's access token in place of the
/// signature. Returns the principal and the body, read whole.
async fn signed(
    gw: &Gateway,
    spec: &RouteSpec,
    ip: IpAddr,
    parts: &mut Parts,
    body: Body,
) -> Result<(Principal, Body), Problem> {
    let whole = axum::body::to_bytes(body, gw.body_limit)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {} bytes", gw.body_limit),
            )
        })?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let signed = gw
        .api_keys
        .verify(&parts.headers, &parts.method, path, &whole, ip)
        .await?;
    let span = tracing::Span::current();
    span.record(
        "principal",
        tracing::field::display(signed.principal.user_id),
    );
    span.record("api_key", signed.principal.api_key.as_deref());
    signed.require_scope_for(&spec.method, spec.path)?;
    let bearer = HeaderValue::try_from(format!("Bearer {}", signed.access_token.expose_secret()))
        .map_err(|e| Problem::unexpected(&e))?;
    parts.headers.insert(header::AUTHORIZATION, bearer);
    for name in [
        api_keys::KEY,
        api_keys::TIMESTAMP,
        api_keys::SIGNATURE,
        api_keys::RECV_WINDOW,
    ] {
        parts.headers.remove(name);
    }
    Ok((signed.principal, Body::from(whole)))
}

async fn openapi(State(gw): State<Gateway>) -> Response {
    match gw.api_document.get(&gw.upstreams).await {
        Ok(document) => axum::Json(document.as_ref().clone()).into_response(),
        Err(problem) => problem.into_response(),
    }
}
