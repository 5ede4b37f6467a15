//! A trader's balances: what they own, what their open orders have reserved out of it, and
//! what is left to trade or withdraw. Risk answers it because it is the one that reserves
//! (ADR 0023 slice 3b): the ledger holds nothing for open orders.

use access::{Principal, Role};
use axum::Json as Body;
use axum::extract::State;
use contracts::format_units;
use serde::Serialize;
use service_kit::http::Problem;
use utoipa::ToSchema;

use super::AppState;
use crate::error::Result;
use crate::kill_switches::lock;

#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    pub asset: String,
    /// Free to trade or withdraw now; decimal string at the asset's scale.
    pub available: String,
    /// Reserved by open orders, and owed by trades that have not settled yet.
    pub held: String,
}

/// Your balances, one per asset you own or have reserved. Follows settlement's ledger a
/// stream hop behind: a deposit shows here once it can be traded. 503 while risk loads the
/// balances after its start.
#[utoipa::path(get, path = "/v1/balances", tag = "balances", security(("bearer" = [])),
    responses((status = 200, body = [BalanceView]), (status = 401, body = Problem),
        (status = 503, body = Problem)))]
pub async fn own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Body<Vec<BalanceView>>> {
    principal.require_any(&[Role::Trader])?;
    let (loaded, owned) = {
        let book = lock(&state.book)?;
        let funds = book.funds();
        (
            funds.position().is_some(),
            funds.of_account(principal.user_id),
        )
    };
    if !loaded {
        return Err(Problem::unavailable(
            "funds_loading",
            "risk is still loading balances from settlement",
            1,
        )
        .into());
    }
    Ok(Body(
        owned
            .into_iter()
            .map(|(asset, balance, committed)| {
                let scale = state.scale_of(&asset);
                BalanceView {
                    available: format_units(balance.saturating_sub(committed), scale),
                    held: format_units(committed, scale),
                    asset,
                }
            })
            .collect(),
    ))
}
