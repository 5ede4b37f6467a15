//! The gateway's router: one axum route per row of the route table, plus the API document and
//! its interactive page.

use std::net::IpAddr;

use access::Principal;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use axum::{Extension, Router};
use service_kit::http::{ClientIp, Problem};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::Gateway;
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
    // First, before a token is even verified: under overload, refusing must be the cheap part.
    let _in_flight = match gw.admission.admit().await {
        Ok(permit) => permit,
        Err(problem) => return problem.into_response(),
    };
    // Admin routes are checked for source first: from elsewhere they do not even parse tokens.
    if spec.is_admin() && !gw.admin_allowlist.contains(ip) {
        tracing::warn!(%ip, path = spec.path, "admin route from a disallowed address");
        return Problem::forbidden("admin routes are not reachable from this address")
            .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let mut budget = None;
    if spec.access != Access::Public {
        let principal = match Principal::from_request_parts(&mut parts, gw).await {
            Ok(principal) => principal,
            Err(problem) => return problem.into_response(),
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
    response
}

async fn openapi(State(gw): State<Gateway>) -> Response {
    match gw.api_document.get(&gw.upstreams).await {
        Ok(document) => axum::Json(document.as_ref().clone()).into_response(),
        Err(problem) => problem.into_response(),
    }
}
