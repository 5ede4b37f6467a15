//! The pre-trade check: answered from memory, in microseconds, for the orders that arrive
//! together in one call (orders sends them so, `service_kit::combine`). The one-order call of
//! the releases before 2026-12-04 is gone (ADR 0029).

use std::time::{SystemTime, UNIX_EPOCH};

use access::ServicePrincipal;
use access::service::RISK_CHECK;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use contracts::checks::{CheckBatch, Verdict, Verdicts};
use service_kit::http::{Json, Problem};

use super::AppState;
use crate::book::Breach;
use crate::error::Result;
use crate::kill_switches::lock;

/// The most orders one call may carry (about 45 KiB of JSON, inside the 64 KiB body limit).
pub const MOST_PER_CALL: usize = 128;

/// Many orders' checks in one call, with the book locked once: 200 with one verdict per order,
/// in the order sent — passed (its funds reserved), refused with the breached limit's code, or
/// undecided (`funds_loading` while risk cannot decide on funds after a start, ADR 0023). An
/// order sent again (a retried call) gets the verdict it got before. 422 for no orders or more
/// than [`MOST_PER_CALL`]; nothing is checked then.
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
                    start: state.start,
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
