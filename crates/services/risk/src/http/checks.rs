//! The pre-trade check: answered from memory, in microseconds — one order at a time, or many
//! in one call (orders sends what arrives together, `service_kit::combine`).

use std::time::{SystemTime, UNIX_EPOCH};

use access::ServicePrincipal;
use access::service::RISK_CHECK;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contracts::checks::{CheckBatch, CheckRequest, Verdict, Verdicts};
use service_kit::http::{Json, Problem};

use super::AppState;
use crate::book::Breach;
use crate::error::Result;
use crate::kill_switches::lock;

/// The most orders one call may carry (about 45 KiB of JSON, inside the 64 KiB body limit).
pub const MOST_PER_CALL: usize = 128;

/// 204 when the order may proceed (its funds reserved); 422 with the breached limit's code;
/// 503 `funds_loading` while risk cannot decide on funds (after a start, ADR 0023).
pub async fn check(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(order): Json<CheckRequest>,
) -> Result<Response> {
    caller.require(RISK_CHECK)?;
    let verdict = lock(&state.book)?.check(&order, this_second());
    match verdict {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(breach) if breach.undecided => {
            Ok(Problem::unavailable(breach.code.as_str(), breach.detail, 1).into_response())
        }
        Err(breach) => {
            refused(&breach);
            Ok(Problem::unprocessable(breach.code.as_str(), breach.detail).into_response())
        }
    }
}

/// Many orders' checks in one call, with the book locked once: 200 with one verdict per order,
/// in the order sent. An order sent again (a retried call) gets the verdict it got before, as
/// alone. 422 for no orders or more than [`MOST_PER_CALL`]; nothing is checked then.
pub async fn check_all(
    State(state): State<AppState>,
    caller: ServicePrincipal,
    Json(checks): Json<CheckBatch>,
) -> Result<Response> {
    caller.require(RISK_CHECK)?;
    if checks.orders.is_empty() || checks.orders.len() > MOST_PER_CALL {
        return Ok(Problem::unprocessable(
            "batch_size",
            format!("send 1 to {MOST_PER_CALL} orders"),
        )
        .into_response());
    }
    let second = this_second();
    let verdicts = {
        let mut book = lock(&state.book)?;
        checks
            .orders
            .iter()
            .map(|order| match book.check(order, second) {
                Ok(()) => Verdict::Passed {
                    order_id: order.order_id,
                },
                Err(breach) if breach.undecided => Verdict::Undecided {
                    order_id: order.order_id,
                    code: breach.code.as_str().into(),
                    detail: breach.detail,
                },
                Err(breach) => {
                    refused(&breach);
                    Verdict::Refused {
                        order_id: order.order_id,
                        code: breach.code.as_str().into(),
                        detail: breach.detail,
                    }
                }
            })
            .collect()
    };
    Ok(axum::Json(Verdicts { verdicts }).into_response())
}

fn refused(breach: &Breach) {
    metrics::counter!("risk_checks_refused_total", "code" => breach.code.as_str()).increment(1);
}

fn this_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
