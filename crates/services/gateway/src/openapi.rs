//! One OpenAPI 3.1 document for the whole public API (OPS-09), merged from each upstream's own
//! document and trimmed to the routes the gateway actually serves, so internal routes never
//! leak into it.

use resilience::Call;
use service_kit::http::Problem;
use std::sync::Arc;
use tokio::sync::OnceCell;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, ResponseBuilder};

use crate::proxy::Upstreams;
use crate::route_table::{ROUTES, Upstream};

const UPSTREAMS: &[Upstream] = &[
    Upstream::Auth,
    Upstream::Orders,
    Upstream::Settlement,
    Upstream::Risk,
    Upstream::Alerting,
];

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
                    "The public API of Bourse. Errors are RFC 9457 problem+json with a `code`.",
                ))
                .build(),
        )
        .build();
    for upstream in UPSTREAMS {
        let upstream = upstreams.get(*upstream);
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
    Ok(document)
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
        .response("401", response("A forged or expired token on the upgrade"))
        .response("429", response("This principal has the most streams it may open"))
        .build();
    PathItem::new(HttpMethod::Get, operation)
}
