//! What the pre-trade stage believes an account owns (risk officers, admins): the figures it
//! will reserve against (ADR 0023), to compare with settlement's ledger when in doubt.

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use serde::Serialize;
use service_kit::http::{Path, Problem};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::error::Result;
use crate::kill_switches::lock;

const OFFICERS: &[Role] = &[Role::RiskOfficer, Role::Admin];

#[derive(Serialize, ToSchema)]
pub struct FundsView {
    pub account_id: Uuid,
    /// The newest of settlement's events these balances include (its outbox position).
    pub settlement_position: i64,
    /// Whether checks decide on these funds: false after a start until risk has read every
    /// order event committed before it (ADR 0023); meanwhile orders are refused 503
    /// `funds_loading`.
    pub deciding: bool,
    /// Every asset with a balance or a commitment, by asset.
    pub balances: Vec<FundsBalance>,
}

/// Decimal strings at the asset's scale.
#[derive(Serialize, ToSchema)]
pub struct FundsBalance {
    pub asset: String,
    /// The ledger's balance (`available`: the ledger holds nothing for open orders).
    pub balance: String,
    /// Promised out of the balance: what open orders have reserved and what executed trades
    /// will debit once they settle. The ledger does not see it (ADR 0023 slice 3b).
    pub committed: String,
    /// The balance less what is committed: what a new order could reserve.
    pub free: String,
}

/// The account's balances as risk follows them from settlement; 503 until risk has loaded
/// settlement's snapshot after its start. `deciding` is false until it has also read the
/// orders committed before its start (ADR 0023): until then its checks reserve nothing and
/// orders are refused 503 `funds_loading`.
#[utoipa::path(get, path = "/v1/admin/risk-funds/{account_id}", tag = "admin",
    params(("account_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = FundsView), (status = 403, body = Problem),
        (status = 503, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<Uuid>,
) -> Result<Body<FundsView>> {
    principal.require_any(OFFICERS)?;
    let (position, deciding, owned) = {
        let book = lock(&state.book)?;
        let funds = book.funds();
        (
            funds.position(),
            funds.deciding(),
            funds.of_account(account),
        )
    };
    let Some(settlement_position) = position else {
        return Err(Problem::unavailable(
            "funds_loading",
            "risk is still loading balances from settlement",
            1,
        )
        .into());
    };

    Ok(Body(FundsView {
        account_id: account,
        settlement_position,
        deciding,
        balances: owned
            .into_iter()
            .map(|(asset, balance, committed)| {
                let scale = state.scale_of(&asset);
                FundsBalance {
                    balance: format_units(balance, scale),
                    committed: format_units(committed, scale),
                    free: format_units(balance.saturating_sub(committed), scale),
                    asset,
                }
            })
            .collect(),
    }))
}
