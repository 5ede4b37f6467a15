//! Risk's balances compared with the ledger on demand (risk officers, admins, auditors).

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::error::Result;

#[derive(Serialize, ToSchema)]
pub struct ReconciliationView {
    /// Whether every balance risk funds orders from equals the ledger's.
    pub ok: bool,
    /// The outbox position settlement's snapshot included.
    pub ledger_position: i64,
    /// The position risk's balances included when compared (at or after the snapshot's: the
    /// snapshot is rolled forward by what risk applied since).
    pub risk_position: i64,
    /// How many (account, asset) balances were compared.
    pub balances_compared: usize,
    /// Every balance that differs.
    pub mismatches: Vec<MismatchView>,
}

/// Decimal strings at the asset's scale.
#[derive(Serialize, ToSchema)]
pub struct MismatchView {
    pub account_id: Uuid,
    pub asset: String,
    pub ledger: String,
    pub risk: String,
}

/// Compare risk's balances — what orders are funded from (ADR 0023) — with settlement's
/// ledger now, balance by balance. 503 while risk cannot compare: settlement away, or risk's
/// balances not yet loaded or not caught up with the ledger's snapshot.
#[utoipa::path(post, path = "/v1/admin/risk-reconciliation", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = ReconciliationView),
        (status = 403, body = service_kit::http::Problem),
        (status = 503, body = service_kit::http::Problem)))]
pub async fn run(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<ReconciliationView>> {
    principal.require_any(&[Role::RiskOfficer, Role::Admin, Role::Auditor])?;
    let compared = state.reconciler.run().await?;
    Ok(Body(ReconciliationView {
        ok: compared.mismatches.is_empty(),
        ledger_position: compared.ledger_position,
        risk_position: compared.risk_position,
        balances_compared: compared.balances,
        mismatches: compared
            .mismatches
            .into_iter()
            .map(|m| {
                let scale = state.scale_of(&m.asset);
                MismatchView {
                    account_id: m.account,
                    // A rolled-forward balance may not fit 64 bits: then it is shown in minor units.
                    ledger: i64::try_from(m.ledger)
                        .map_or_else(|_| m.ledger.to_string(), |v| format_units(v, scale)),
                    risk: format_units(m.risk, scale),
                    asset: m.asset,
                }
            })
            .collect(),
    }))
}
