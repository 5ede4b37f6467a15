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

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use service_kit::combine::{Batch, Combiner};
use service_kit::http::Problem;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::instruments::Instrument;
use crate::order_entry::{OrderType, Rejection, ValidOrder, platform_side};

/// Codes risk refuses orders with; anything else is reported as `risk_refused`.
const RISK_CODES: &[&str] = &[
    "kill_switch",
    "max_order_quantity",
    "max_order_notional",
    "price_collar",
    "max_open_orders",
    "max_orders_per_second",
    "max_position",
    "insufficient_funds",
    "amount_out_of_range",
];

/// The most orders one call to risk carries (risk takes up to 128).
const CHECKS_PER_CALL: usize = 64;

/// What risk answers for one order: go, a refusal, or no usable answer (503).
type Verdict = Result<Result<(), Rejection>>;

#[derive(Clone)]
pub struct Funds {
    checks: Combiner<RiskChecks>,
}

/// One order's check, as risk reads it (`risk::book::CheckRequest`).
#[derive(Debug, Serialize)]
struct Check {
    order_id: Uuid,
    account_id: Uuid,
    symbol: String,
    side: contracts::Side,
    #[serde(rename = "type")]
    order_type: &'static str,
    price: i64,
    quantity: i64,
    base_scale: u32,
    quote_scale: u32,
    base_asset: String,
    quote_asset: String,
    mid: Option<i64>,
    /// The order's own span: the call that carries its check follows from it.
    #[serde(skip)]
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
    /// the book's mid for the collar before the first trade. `Ok(Err(_))`: risk refused (422
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
        let check = Check {
            order_id: order.id,
            account_id: order.account,
            symbol: instrument.symbol.clone(),
            side: platform_side(order.side),
            order_type: match order.order_type {
                OrderType::Limit => "limit",
                OrderType::Market => "market",
            },
            price,
            quantity: order.quantity,
            base_scale: instrument.base.scale,
            quote_scale: instrument.quote.scale,
            base_asset: instrument.base.code.clone(),
            quote_asset: instrument.quote.code.clone(),
            mid,
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
        Box::pin(
            async move {
                metrics::histogram!("orders_risk_checks_per_call").record(checks.len() as f64);
                match self.check_all(&checks).await {
                    Ok(verdicts) => verdicts,
                    Err(problem) => checks
                        .iter()
                        .map(|_| Err(Error::Problem(problem.clone())))
                        .collect(),
                }
            }
            .instrument(span),
        )
    }
}

#[derive(Deserialize)]
struct Verdicts {
    verdicts: Vec<RiskVerdict>,
}

#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum RiskVerdict {
    Passed {
        order_id: Uuid,
    },
    Refused {
        order_id: Uuid,
        code: String,
        detail: String,
    },
    Undecided {
        order_id: Uuid,
        code: String,
        detail: String,
    },
}

impl RiskVerdict {
    fn order_id(&self) -> Uuid {
        match self {
            Self::Passed { order_id }
            | Self::Refused { order_id, .. }
            | Self::Undecided { order_id, .. } => *order_id,
        }
    }

    fn into_verdict(self) -> Verdict {
        match self {
            Self::Passed { .. } => Ok(Ok(())),
            Self::Refused { code, detail, .. } => Ok(Err(Rejection {
                code: risk_code(&code),
                detail,
            })),
            Self::Undecided { code, detail, .. } if code == "funds_loading" => Err(Error::Problem(
                Problem::unavailable("funds_loading", detail, 1),
            )),
            Self::Undecided { .. } => Err(Error::Problem(unavailable())),
        }
    }
}

impl RiskChecks {
    /// One call for every check: a verdict per check, in order. Risk serves the batch call since
    /// 2026-12-04 (roll risk out before orders: docs/runbooks/deploy.md).
    async fn check_all(&self, checks: &[Check]) -> std::result::Result<Vec<Verdict>, Problem> {
        let body = serde_json::to_string(&serde_json::json!({ "orders": checks }))
            .map_err(|_| unavailable())?;
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
        let matches = verdicts.verdicts.len() == checks.len()
            && verdicts
                .verdicts
                .iter()
                .zip(checks)
                .all(|(verdict, check)| verdict.order_id() == check.order_id);
        if !matches {
            tracing::error!("risk's verdicts do not match the checks sent");
            return Err(unavailable());
        }
        Ok(verdicts
            .verdicts
            .into_iter()
            .map(RiskVerdict::into_verdict)
            .collect())
    }
}

/// Risk's refusal codes as orders answers them; anything else is `risk_refused`.
fn risk_code(code: &str) -> &'static str {
    RISK_CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("risk_refused")
}

/// Risk gave no usable answer: the order is refused 503, never matched unchecked.
fn unavailable() -> Problem {
    Problem::unavailable(
        "upstream_unavailable",
        "risk could not check this order".to_owned(),
        1,
    )
}
