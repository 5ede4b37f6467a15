//! One OpenAPI 3.1 document for the whole public API (OPS-09), merged from each upstream's own
//! document and trimmed to the routes the gateway actually serves, so internal routes never
//! leak into it.

use resilience::Call;
use service_kit::http::Problem;
use std::sync::Arc;
use tokio::sync::OnceCell;
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};

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
    Ok(document)
}
