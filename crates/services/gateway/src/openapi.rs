//! One OpenAPI 3.1 document for the whole public API (OPS-09), merged from each upstream's own
//! document and trimmed to the routes the gateway actually serves, so internal routes never
//! leak into it.

use axum::http::Method;
use resilience::Call;
use service_kit::http::Problem;
use std::sync::Arc;
use tokio::sync::OnceCell;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterIn, PathItem};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Response, ResponseBuilder,
};

use crate::proxy::Upstreams;
use crate::route_table::{Access, ROUTES, RouteSpec};

#[derive(Clone, Default)]
pub struct ApiDocument {
    cached: Arc<OnceCell<Arc<OpenApi>>>,
}

impl ApiDocument {
    /// The merged document. Built on first use and kept: a running set of services does not
    /// change its API. A failed build is not cached, so the next request tries again.
    pub async fn get(&self, upstreams: &Upstreams) -> Result<Arc<OpenApi>, Problem> {
        self.cached
            .get_or_try_init(|| async { build(upstreams).await.map(Arc::new) })
            .await
            .cloned()
    }
}

async fn build(upstreams: &Upstreams) -> Result<OpenApi, Problem> {
    let mut document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Bourse API")
                .version("1")
                .description(Some(
                    "The public API of Bourse. Errors are RFC 9457 problem+json with a `code`. \
                     No text may contain the NUL character (U+0000): it is refused in bodies \
                     (422), paths and queries (400). Programs may sign requests with an API key \
                     instead of a bearer token: `X-Bourse-Key`, `X-Bourse-Timestamp` (unix ms), \
                     `X-Bourse-Signature` = hex HMAC-SHA256(secret, timestamp + METHOD + \
                     path-with-query + body), optionally `X-Bourse-Recv-Window` (ms, at most \
                     60000); a key reaches the GET routes with `read`, orders with `trade`, \
                     withdrawals with `withdraw`, nothing else (401/403 problems otherwise; \
                     docs/api-keys.md).",
                ))
                .build(),
        )
        .build();
    for upstream in upstreams.all() {
        let response = upstream
            .send(Call::get("/openapi.json"))
            .await
            .map_err(|e| {
                tracing::warn!(upstream = upstream.name(), error = %e, "cannot fetch upstream API document");
                e.problem()
            })?;
        if !response.status().is_success() {
            tracing::warn!(upstream = upstream.name(), status = %response.status(), "cannot fetch upstream API document");
            return Err(Problem::unavailable(
                "upstream_unavailable",
                "the API description is not available yet",
                5,
            ));
        }
        let part: OpenApi = response.json().await.map_err(|e| {
            tracing::error!(upstream = upstream.name(), error = %e, "upstream API document does not parse");
            Problem::internal()
        })?;
        document.merge(part);
    }
    document
        .paths
        .paths
        .retain(|path, _| ROUTES.iter().any(|route| route.path == path));
    document
        .paths
        .paths
        .insert(STREAM_PATH.to_owned(), stream_path());
    conform(&mut document);
    Ok(document)
}

/// Makes the document say what the API answers when things go wrong, so generated clients and
/// fuzzers read it as it is: every operation lists the statuses the edge and the service kit
/// give whatever the route — rate limits, shedding and timeouts, malformed paths, queries and
/// bodies, missing tokens and roles — and every error, the services' own included, is
/// `application/problem+json` with the one `Problem` schema.
fn conform(document: &mut OpenApi) {
    for route in ROUTES {
        let Some(operation) = document
            .paths
            .paths
            .get_mut(route.path)
            .and_then(|item| operation_mut(item, &route.method))
        else {
            continue;
        };
        if route.deprecation.is_some() {
            operation.deprecated = Some(utoipa::openapi::Deprecated::True);
            operation
                .responses
                .responses
                .entry("410".to_owned())
                .or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Retired: past its Sunset date")
                            .build(),
                    )
                });
        }
        for (status, description) in edge_statuses(route, operation) {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| {
                    RefOr::T(ResponseBuilder::new().description(description).build())
                });
        }
    }
    for item in document.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for (status, response) in &mut operation.responses.responses {
                if let (Some('4' | '5'), RefOr::T(response)) = (status.chars().next(), response) {
                    as_problem(response);
                }
            }
        }
    }
}

/// The statuses any route of this shape can answer, with why.
fn edge_statuses(route: &RouteSpec, operation: &Operation) -> Vec<(&'static str, &'static str)> {
    let has = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|parameter| match parameter {
                RefOr::T(parameter) => parameter.parameter_in == place,
                RefOr::Ref(_) => false,
            })
    };
    let mut statuses = vec![
        (
            "429",
            "Over a rate limit (per address or per principal); see Retry-After.",
        ),
        (
            "503",
            "A service behind the gateway is unavailable or the gateway is overloaded; see Retry-After. Bourse-Failed-Upstream, when present, names the service that is away.",
        ),
        (
            "504",
            "A service behind the gateway did not answer in time. The request may still take effect: a POST with an Idempotency-Key, sent again with the same key, learns its outcome.",
        ),
    ];
    if operation.request_body.is_some() {
        statuses.extend([
            ("400", "The body is not JSON."),
            ("413", "The body is larger than the limit."),
            ("415", "The body is not application/json."),
            (
                "422",
                "The body does not have the documented shape or values.",
            ),
        ]);
    }
    if has(ParameterIn::Query) {
        statuses.extend([
            ("400", "A query parameter is malformed."),
            ("422", "A query parameter is out of its range."),
        ]);
    }
    if has(ParameterIn::Path) {
        statuses.extend([
            ("400", "A path parameter is invalid."),
            ("404", "No such resource, or not yours."),
        ]);
    }
    if has(ParameterIn::Header) {
        statuses.push(("400", "A header parameter is invalid."));
    }
    match route.access {
        Access::Public => {}
        Access::Authenticated => statuses.push(("401", "No valid access token.")),
        Access::Roles(_) => statuses.extend([
            ("401", "No valid access token."),
            (
                "403",
                "The token lacks a role this route needs, or the address is not allowed.",
            ),
        ]),
    }
    statuses
}

/// An error response's content: problem+json with the `Problem` schema.
fn as_problem(response: &mut Response) {
    response.content.clear();
    response.content.insert(
        service_kit::http::PROBLEM_CONTENT_TYPE.to_owned(),
        RefOr::T(
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        ),
    );
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.patch.as_mut(),
        item.delete.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The paths the gateway serves itself rather than forwarding.
pub const GATEWAY_PATHS: &[&str] = &[STREAM_PATH];
const STREAM_PATH: &str = "/v1/stream";

/// The WebSocket stream, described as far as OpenAPI can: its messages are in the description.
fn stream_path() -> PathItem {
    let response = |text: &str| ResponseBuilder::new().description(text).build();
    let operation = OperationBuilder::new()
        .tags(Some(["stream"]))
        .summary(Some("WebSocket: your order updates and fills, public trades and books"))
        .description(Some(
            "Upgrade to WebSocket. Authenticate with `Authorization: Bearer` on the upgrade, or \
             send `{\"op\": \"auth\", \"token\": \"…\"}` first. Then \
             `{\"op\": \"subscribe\", \"channels\": [\"orders\", \"trades:BTC-USD\", \"book:BTC-USD\"]}`. \
             Server messages are `{channel, type, data, sequence}`: `orders` carries only your own \
             `order_accepted`, `fill`, `order_completed`, `order_cancelled`, `order_rejected`; \
             `trades:{symbol}` each `trade`; `book:{symbol}` a `snapshot` then `update`s whose \
             `data.previous_sequence` is the sequence before them — a mismatch means a gap: \
             subscribe again. Pings every 15 s; a client silent for two (close 1008), too slow to \
             keep up (1013) or whose token expired (1008) is disconnected. See docs/stream.md.",
        ))
        .response("101", response("Switching Protocols: the session begins"))
        .response("400", response("Not a WebSocket upgrade"))
        .response("401", response("A forged or expired token on the upgrade"))
        .response("429", response("This principal has the most streams it may open"))
        .build();
    PathItem::new(HttpMethod::Get, operation)
}
