//! The pre-trade check: answered from memory, in microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use access::ServicePrincipal;
use access::service::RISK_CHECK;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::http::{Json, Problem};

use super::AppState;
use crate::book::CheckRequest;
use crate::error::Result;
use crate::kill_switches::lock;

/// 204 when the order may proceed (its funds reserved); 422 with the breached limit's code;
/// 503 `funds_loading` while risk cannot decide on funds (after a start, ADR 0023).
pub async fn check(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(order): Json<CheckRequest>,
) -> Result<Response> {
    caller.require(RISK_CHECK)?;
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verdict = lock(&state.book)?.check(&order, second);
    match verdict {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(breach) if breach.undecided => {
            Ok(Problem::unavailable(breach.code, breach.detail, 1).into_response())
        }
        Err(breach) => {
            metrics::counter!("risk_checks_refused_total", "code" => breach.code).increment(1);
            Ok(Problem::unprocessable(breach.code, breach.detail).into_response())
        }
    }
}
