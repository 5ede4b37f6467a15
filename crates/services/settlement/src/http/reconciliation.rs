//! Reconciliation on demand (admin, auditor).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;

use super::AppState;
use crate::error::Result;
use crate::reconciliation::Report;

/// Check the books now: `{ok, checks: [{name, ok, detail}]}`. A failed check is also
/// announced as `ReconciliationFailed`.
#[utoipa::path(post, path = "/v1/admin/reconciliation", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Report), (status = 403, body = service_kit::http::Problem)))]
pub async fn run(State(state): State<AppState>, principal: Principal) -> Result<Body<Report>> {
    principal.require_any(&[Role::Admin, Role::Auditor])?;
    Ok(Body(state.reconciler.run_and_announce().await?))
}
