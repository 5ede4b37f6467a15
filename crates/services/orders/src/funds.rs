//! Before matching (docs/design.md §4): risk checks the order (TRD-10, TRD-11) and reserves
//! what it could cost out of the account's free balance (buying power, TRD-06; ADR 0023).
//!
//! Checks that arrive together go to risk in one call (`service_kit::combine`): a busy moment
//! costs one call for every order in it, and a quiet one a call per order as before. The call
//! goes through `libs/resilience` with a service token and is retried, because each check is
//! keyed by its order id: risk remembers the orders it passed and what it reserved for them.
//! Any failure to get an answer refuses the order with 503 — an order is never matched
//! unchecked or unfunded. What an order that never reaches the book reserved goes back when
//! its `OrderRejected` reaches risk, or lapses there.

use contracts::checks::{
    CheckBatch, CheckRequest, CheckedOrderType, RiskCode, RiskStart, Verdict as RiskVerdict,
    Verdicts,
};
use futures_util::future::BoxFuture;
use service_kit::combine::{Batch, Combiner};
use service_kit::http::Problem;
use tracing::Instrument as _;

use crate::error::{Error, Result};
use crate::instruments::Instrument;
use crate::order_entry::{OrderType, Rejection, ValidOrder, platform_side};

/// The most orders one call to risk carries (risk takes up to 128).
const CHECKS_PER_CALL: usize = 64;

/// What risk answers for one order: go, checked by this start of risk; a refusal; or no
/// usable answer (503).
type Verdict = Result<Result<RiskStart, Rejection>>;

#[derive(Clone)]
pub struct Funds {
    checks: Combiner<RiskChecks>,
}

/// One order's check, with the order's own span: the call that carries it follows from it.
struct Check {
    request: CheckRequest,
    span: tracing::Span,
}

/// Checks that arrive together go to risk in one call (`POST /internal/v1/checks/batch`).
struct RiskChecks {
    risk: resilience::Upstream,
}

impl Funds {
    /// Calls to risk run as tasks of `tasks`.
    pub fn new(risk: resilience::Upstream, tasks: service_kit::Supervisor) -> Self {
        Self {
            checks: Combiner::new("risk checks", CHECKS_PER_CALL, RiskChecks { risk }, tasks),
        }
    }

    /// Asks risk whether the order may proceed (TRD-10, TRD-11) and to reserve its funds, with
    /// the book's mid for the collar before the first trade. `Ok(Ok(start))`: passed by that
    /// start of risk, which the book's fence compares (ADR 0023). `Ok(Err(_))`: risk refused (422
    /// `insufficient_funds`, a limit…); `Err(_)`: no usable answer (503).
    /// Retried: risk remembers the orders it passed, by id.
    #[tracing::instrument(skip_all, fields(order_id = %order.id))]
    pub async fn check(
        &self,
        order: &ValidOrder,
        instrument: &Instrument,
        mid: Option<i64>,
    ) -> Verdict {
        let price = order
            .hold_price()
            .ok_or_else(|| Error::Internal("a market order reached risk unprotected".into()))?;
        let request = CheckRequest {
            order_id: order.id,
            account_id: order.account,
            symbol: instrument.symbol.clone(),
            side: platform_side(order.side),
            order_type: match order.order_type {
                OrderType::Limit => CheckedOrderType::Limit,
                OrderType::Market => CheckedOrderType::Market,
            },
            price,
            quantity: order.quantity,
            base_scale: instrument.base.scale,
            quote_scale: instrument.quote.scale,
            base_asset: Some(instrument.base.code.clone()),
            quote_asset: Some(instrument.quote.code.clone()),
            mid,
        };
        let check = Check {
            request,
            span: tracing::Span::current(),
        };
        self.checks.submit(check).await.unwrap_or_else(|stopped| {
            tracing::error!(error = %stopped, "no answer from the risk checks' task");
            Err(Error::Problem(unavailable()))
        })
    }
}

impl Batch for RiskChecks {
    type Item = Check;
    type Answer = Verdict;

    fn answer(&self, checks: Vec<Check>) -> BoxFuture<'_, Vec<Verdict>> {
        // One call for many orders: its span is not any one order's child, but follows from
        // each of them (a link per order in the exported trace), so every order's trace still
        // leads to the call that checked it.
        let span = tracing::info_span!("risk checks", checks = checks.len());
        for check in &checks {
            span.follows_from(&check.span);
        }
        let count = checks.len();
        let batch = CheckBatch {
            orders: checks.into_iter().map(|check| check.request).collect(),
        };
        Box::pin(
            async move {
                metrics::histogram!("orders_risk_checks_per_call").record(count as f64);
                match self.check_all(&batch).await {
                    Ok(verdicts) => verdicts,
                    Err(problem) => (0..count)
                        .map(|_| Err(Error::Problem(problem.clone())))
                        .collect(),
                }
            }
            .instrument(span),
        )
    }
}

/// A verdict of risk's as orders answers it.
fn into_verdict(verdict: RiskVerdict) -> Verdict {
    match verdict {
        RiskVerdict::Passed { start, .. } => Ok(Ok(start)),
        RiskVerdict::Refused { code, detail, .. } => Ok(Err(Rejection {
            code: risk_code(&code),
            detail,
        })),
        RiskVerdict::Undecided { code, detail, .. }
            if RiskCode::parse(&code) == Some(RiskCode::FundsLoading) =>
        {
            Err(Error::Problem(named_risk(Problem::unavailable(
                RiskCode::FundsLoading.as_str(),
                detail,
                1,
            ))))
        }
        RiskVerdict::Undecided { .. } => Err(Error::Problem(unavailable())),
    }
}

impl RiskChecks {
    /// One call for every check: a verdict per check, in order. Risk serves the batch call since
    /// 2026-12-04 (roll risk out before orders: docs/runbooks/deploy.md).
    async fn check_all(&self, batch: &CheckBatch) -> std::result::Result<Vec<Verdict>, Problem> {
        let body = serde_json::to_string(batch).map_err(|_| unavailable())?;
        let call = resilience::Call::post_json("/internal/v1/checks/batch", body).idempotent(true);
        let response = self.risk.send(call).await.map_err(|e| e.problem())?;
        let status = response.status();
        if !status.is_success() {
            tracing::error!(%status, "risk refused a batch of checks for a reason other than the orders");
            return Err(unavailable());
        }
        let verdicts: Verdicts = response.json().await.map_err(|err| {
            tracing::error!(error = %err, "risk's verdicts could not be read");
            unavailable()
        })?;
        // One verdict per check, in order; anything else is a fault between the services.
        let matches = verdicts.verdicts.len() == batch.orders.len()
            && verdicts
                .verdicts
                .iter()
                .zip(&batch.orders)
                .all(|(verdict, check)| verdict.order_id() == check.order_id);
        if !matches {
            tracing::error!("risk's verdicts do not match the checks sent");
            return Err(unavailable());
        }
        Ok(verdicts.verdicts.into_iter().map(into_verdict).collect())
    }
}

/// Risk's refusal codes as orders answers them; one this release does not know (from a newer
/// risk) is `risk_refused`.
fn risk_code(code: &str) -> &'static str {
    RiskCode::parse(code).map_or("risk_refused", RiskCode::as_str)
}

/// Risk gave no usable answer: the order is refused 503, never matched unchecked.
fn unavailable() -> Problem {
    named_risk(Problem::unavailable(
        "upstream_unavailable",
        "risk could not check this order".to_owned(),
        1,
    ))
}

/// A 503 that is risk's, not orders': the gateway's breaker for orders must not count it, or a
/// risk outage would refuse orders' cancels and reads too ([`resilience::FAILED_UPSTREAM`]).
/// A call that got no answer at all names risk already (`CallError::problem`).
fn named_risk(problem: Problem) -> Problem {
    problem.with_header(
        resilience::FAILED_UPSTREAM,
        axum::http::HeaderValue::from_static("risk"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_risk_refuses_with_reaches_the_client_and_an_unknown_one_is_risk_refused() {
        let refusal = |code: &str| {
            into_verdict(RiskVerdict::Refused {
                order_id: uuid::Uuid::nil(),
                code: code.to_owned().into(),
                detail: "why".to_owned(),
            })
        };
        for code in RiskCode::ALL {
            match refusal(code.as_str()) {
                Ok(Err(rejection)) => assert_eq!(rejection.code, code.as_str()),
                other => panic!("{code}: {other:?}"),
            }
        }
        match refusal("max_leverage") {
            Ok(Err(rejection)) => assert_eq!(rejection.code, "risk_refused"),
            other => panic!("{other:?}"),
        }
        // Undecided on funds is the client's to retry (503 funds_loading), anything else
        // undecided is risk being unable to answer.
        let undecided = |code: RiskCode| {
            into_verdict(RiskVerdict::Undecided {
                order_id: uuid::Uuid::nil(),
                code: code.as_str().into(),
                detail: "loading".to_owned(),
            })
        };
        // Both are risk's 503s, not orders': they name risk, so the gateway's breaker for
        // orders does not count them.
        let names_risk = |problem: &Problem| {
            problem
                .headers()
                .iter()
                .any(|(name, value)| name == resilience::FAILED_UPSTREAM && value == "risk")
        };
        match undecided(RiskCode::FundsLoading) {
            Err(Error::Problem(problem)) => {
                assert_eq!(problem.code(), "funds_loading");
                assert!(names_risk(&problem));
            }
            other => panic!("{other:?}"),
        }
        match undecided(RiskCode::MaxPosition) {
            Err(Error::Problem(problem)) => {
                assert_eq!(problem.code(), "upstream_unavailable");
                assert!(names_risk(&problem));
            }
            other => panic!("{other:?}"),
        }
    }
}
