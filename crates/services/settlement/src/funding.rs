//! Admin deposits and withdrawals: money entering and leaving the platform, always against the
//! asset's external account, each answered once per `Idempotency-Key` (REL-07).
//!
//! A withdrawal first reserves its amount with risk's pre-trade stage ([`PreTrade`], ADR 0023
//! slice 4), which refuses it if open orders have reserved the money; only then is it booked.
//! Its `FundsWithdrawn` ends the reservation; a withdrawal that is not booked gives it back.

use contracts::events::{FundsDeposited, FundsWithdrawn};
use contracts::funds::WithdrawalReservation;
use contracts::{Asset, format_units, parse_units};
use events::Envelope;
use serde::{Deserialize, Serialize};
use service_kit::http::Problem;
use service_kit::idempotency::{self, Answer, Claim};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ledger::{self, EXTERNAL, FEES, Kind};
use crate::store;

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundingRequest {
    /// The trader's account (their user id).
    pub account_id: Uuid,
    /// One of the configured assets (`GET /v1/assets`).
    #[schema(pattern = "^[A-Z0-9]{1,12}$")]
    pub asset: String,
    /// A positive decimal string, no finer than the asset's scale.
    #[schema(
        pattern = "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$",
        max_length = 40
    )]
    pub amount: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FundingView {
    /// The transfer's id.
    pub id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    pub amount: String,
    /// `deposit` or `withdrawal`.
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A request checked against the assets: the account, the asset and the amount in minor units.
pub struct ValidFunding<'a> {
    pub owner: Uuid,
    pub asset: &'a Asset,
    pub units: i64,
}

pub fn validate<'a>(request: &FundingRequest, assets: &'a [Asset]) -> Result<ValidFunding<'a>> {
    let mut errors = Vec::new();
    let mut problem = |field: &str, message: String| {
        errors.push(service_kit::http::FieldError {
            field: field.to_owned(),
            message,
        });
    };
    if request.account_id == EXTERNAL || request.account_id == FEES {
        problem("account_id", "is a system account".to_owned());
    }
    let asset = assets.iter().find(|a| a.code == request.asset);
    let mut units = 0;
    match asset {
        None => problem("asset", format!("unknown asset {:?}", request.asset)),
        Some(asset) => match parse_units(&request.amount, asset.scale) {
            Ok(0) => problem("amount", "must be greater than zero".to_owned()),
            Ok(parsed) => units = parsed,
            Err(err) => problem("amount", err.to_string()),
        },
    }
    match asset {
        Some(asset) if errors.is_empty() => Ok(ValidFunding {
            owner: request.account_id,
            asset,
            units,
        }),
        _ => Err(Error::Validation(errors)),
    }
}

/// Risk's pre-trade stage, where a withdrawal reserves what it takes before it is booked, so
/// it cannot take what open orders have reserved (ADR 0023 slice 4).
#[derive(Clone)]
pub struct PreTrade {
    risk: resilience::Upstream,
}

impl PreTrade {
    pub fn new(risk: resilience::Upstream) -> Self {
        Self { risk }
    }

    /// `Ok(None)`: reserved. `Ok(Some(_))`: refused (422 `insufficient_funds`), the answer to
    /// give. `Err(_)`: no usable answer (503): nothing is booked, the client retries.
    async fn reserve(&self, reservation: &WithdrawalReservation) -> Result<Option<Problem>> {
        let body =
            serde_json::to_string(reservation).map_err(|e| Error::Internal(e.to_string()))?;
        let call = resilience::Call::post_json("/internal/v1/withdrawals", body).idempotent(true);
        let response = self
            .risk
            .send(call)
            .await
            .map_err(|e| Error::Problem(e.problem()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(None);
        }
        if status.as_u16() == 422 {
            let refusal: serde_json::Value = response.json().await.unwrap_or_default();
            let detail = refusal["detail"]
                .as_str()
                .unwrap_or("not enough free funds");
            return Ok(Some(Problem::unprocessable("insufficient_funds", detail)));
        }
        tracing::error!(%status, "risk could not reserve a withdrawal");
        Err(Problem::unavailable(
            "upstream_unavailable",
            "risk could not check this withdrawal",
            1,
        )
        .into())
    }

    /// Gives back what a withdrawal that was not booked reserved. Best effort: a reservation
    /// left behind lapses in risk (`risk::WITHDRAWAL_RESERVATION_TTL`).
    async fn release(&self, withdrawal: Uuid) {
        let call = resilience::Call::new(
            axum::http::Method::DELETE,
            format!("/internal/v1/withdrawals/{withdrawal}"),
        )
        .idempotent(true);
        match self.risk.send(call).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(%withdrawal, status = %response.status(), "could not release a withdrawal's reservation");
            }
            Err(error) => {
                tracing::warn!(%withdrawal, %error, "could not release a withdrawal's reservation");
            }
        }
    }
}

/// Moves the money and stores the answer under the claim, in one transaction. A withdrawal
/// reserves first with `pre_trade` (none for the platform's own deposits). A withdrawal
/// beyond what risk finds free, or beyond the available balance, is answered 422
/// `insufficient_funds` — stored too, so a retry with the same key gets the same refusal
/// rather than a different outcome later.
#[tracing::instrument(skip_all, fields(kind = kind.as_str(), account_id = %funding.owner))]
pub async fn post(
    pool: &PgPool,
    pre_trade: Option<&PreTrade>,
    kind: Kind,
    funding: &ValidFunding<'_>,
    admin: Uuid,
    claim: &Claim,
) -> Result<Answer> {
    let id = Uuid::now_v7();
    let reserving = match (kind, pre_trade) {
        (Kind::Withdrawal, Some(pre_trade)) => Some(pre_trade),
        _ => None,
    };
    if let Some(pre_trade) = reserving {
        let reservation = WithdrawalReservation {
            withdrawal_id: id,
            account_id: funding.owner,
            asset: funding.asset.code.clone(),
            amount: funding.units,
        };
        match pre_trade.reserve(&reservation).await {
            Ok(None) => {}
            Ok(Some(refusal)) => return refuse(pool, claim, refusal).await,
            Err(error) => {
                // Risk may have reserved and its answer been lost.
                pre_trade.release(id).await;
                return Err(error);
            }
        }
    }
    let plan = ledger::funding(id, kind, funding.owner, &funding.asset.code, funding.units);
    let view = FundingView {
        id,
        account_id: funding.owner,
        asset: funding.asset.code.clone(),
        amount: format_units(funding.units, funding.asset.scale),
        kind: kind.as_str().to_owned(),
        created_at: OffsetDateTime::now_utc(),
    };
    let moved = async {
        let mut tx = pool.begin().await?;
        store::apply(&mut tx, &plan, Some(admin)).await?;
        // With the money, in its transaction: the pre-trade stage follows balances from
        // settlement's stream (ADR 0023).
        events::outbox::append(&mut tx, crate::STREAM, &announcement(kind, id, funding)?).await?;
        let answer = Answer {
            status: 201,
            body: serde_json::to_string(&view).map_err(|e| Error::Internal(e.to_string()))?,
        };
        idempotency::complete(&mut tx, claim, &answer).await?;
        tx.commit().await?;
        metrics::counter!("settlement_funding_total", "kind" => kind.as_str()).increment(1);
        Ok::<_, Error>(answer)
    }
    .await;
    if let (Err(_), Some(pre_trade)) = (&moved, reserving) {
        // Not booked: nothing will announce it, so its reservation goes back now.
        pre_trade.release(id).await;
    }
    match moved {
        Err(Error::InsufficientFunds { .. }) => {
            let problem = Problem::unprocessable(
                "insufficient_funds",
                format!("not enough available {}", funding.asset.code),
            );
            refuse(pool, claim, problem).await
        }
        other => other,
    }
}

/// A refusal is an answer too: stored under the claim, so a retry with the key replays it.
async fn refuse(pool: &PgPool, claim: &Claim, problem: Problem) -> Result<Answer> {
    let answer = Answer {
        status: 422,
        body: problem.body().map_err(|e| Error::Internal(e.to_string()))?,
    };
    let mut conn = pool.acquire().await?;
    idempotency::complete(&mut conn, claim, &answer).await?;
    Ok(answer)
}

/// The event a deposit or withdrawal is announced with.
fn announcement(kind: Kind, transfer_id: Uuid, funding: &ValidFunding<'_>) -> Result<Envelope> {
    let (account_id, asset, amount) = (funding.owner, funding.asset.code.clone(), funding.units);
    let aggregate = account_id.to_string();
    Ok(match kind {
        Kind::Deposit => Envelope::of(
            crate::SERVICE,
            aggregate,
            0,
            &FundsDeposited {
                transfer_id,
                account_id,
                asset,
                amount,
            },
        )?,
        Kind::Withdrawal => Envelope::of(
            crate::SERVICE,
            aggregate,
            0,
            &FundsWithdrawn {
                transfer_id,
                account_id,
                asset,
                amount,
            },
        )?,
        Kind::Trade | Kind::Fee => {
            return Err(Error::Internal(format!(
                "{} is not a funding transfer",
                kind.as_str()
            )));
        }
    })
}

/// A deposit made once per `key` by the platform itself (the external owner stands in for an
/// admin): what `bourse demo seed` funds its traders with. `false` when made before.
pub async fn deposit_once(
    pool: &PgPool,
    assets: &[Asset],
    request: &FundingRequest,
    key: &str,
) -> Result<bool> {
    let valid = validate(request, assets)?;
    let body = serde_json::json!({
        "account_id": request.account_id, "asset": request.asset, "amount": request.amount,
    });
    let begun = idempotency::begin(pool, EXTERNAL, key, &idempotency::request_hash(&body)).await?;
    match begun {
        idempotency::Begin::Proceed(claim) => {
            post(pool, None, Kind::Deposit, &valid, EXTERNAL, &claim).await?;
            Ok(true)
        }
        idempotency::Begin::Replay { .. } => Ok(false),
        idempotency::Begin::InFlight | idempotency::Begin::Mismatch => Err(Error::Internal(
            format!("deposit {key} is running elsewhere or was made with other terms"),
        )),
    }
}
