//! {{Name}}'s HTTP surface. The gateway routes the public paths here (its route table names
//! each one and who may call it); this router also serves the service's own API document,
//! which the gateway merges into `/openapi.json`.

use std::sync::Arc;

use access::{Principal, TokenVerifier};
use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};

use crate::error::Result;
use crate::store;

service_kit::shared_state! {
    /// What every handler shares, behind one `Arc` (`service_kit::http::shared_state`).
    pub struct AppState(Shared);
}

pub struct Shared {
    pub pool: PgPool,
    pub verifier: Arc<TokenVerifier>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/{{name}}/records", get(own_records))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

#[derive(Serialize, ToSchema)]
pub struct RecordView {
    pub id: uuid::Uuid,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

/// Your {{name}} records, newest first.
#[utoipa::path(get, path = "/v1/{{name}}/records", tag = "{{name}}", security(("bearer" = [])),
    responses((status = 200, body = [RecordView])))]
pub async fn own_records(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<RecordView>>> {
    let records = store::records_of(&state.pool, principal.user_id).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|record| RecordView {
                id: record.id,
                note: record.note,
                created_at: record.created_at,
            })
            .collect(),
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse {{name}}", version = "1"),
    paths(own_records),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
