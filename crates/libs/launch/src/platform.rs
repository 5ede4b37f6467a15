//! Settings every service that handles money must read alike: the assets and their scales,
//! and the fee schedule. One reading, so orders, risk and settlement cannot disagree on a
//! default or on what they refuse.

use contracts::Asset;
use contracts::fees::Fees;
use service_kit::Env;

/// `BOURSE_ASSETS`; a problem is reported to `env` (the defaults stand in until it is).
pub fn assets(env: &mut Env) -> Vec<Asset> {
    Asset::configured(&env.list("BOURSE_ASSETS")).unwrap_or_else(|message| {
        env.problem("BOURSE_ASSETS", message);
        Asset::defaults()
    })
}

/// `BOURSE_MAKER_FEE_BPS` and `BOURSE_TAKER_FEE_BPS`; a problem is reported to `env`.
pub fn fees(env: &mut Env) -> Fees {
    Fees::new(
        env.or("BOURSE_MAKER_FEE_BPS", Fees::DEFAULT.maker_bps),
        env.or("BOURSE_TAKER_FEE_BPS", Fees::DEFAULT.taker_bps),
    )
    .unwrap_or_else(|(variable, message)| {
        env.problem(variable, message);
        Fees::DEFAULT
    })
}

/// `BOURSE_RISK_CHECK_VALID_FOR_MS`: how long a risk check stays good for booking its order
/// (ADR 0023). Orders refuses to book an order whose check began longer ago; a restarted risk
/// waits twice this long before it asks for its mark, so no order its previous process checked
/// can commit after the mark. Read by orders and risk alike, so the two cannot disagree.
///
/// 2 s: a tenth of it is more than the slowest answer measured under twice the load the
/// platform can take (the gateway sheds the excess, ADR 0032), and a risk that crashed refuses
/// orders for twice it (ADR 0023, "The bound on checks lowered").
pub fn check_valid_for(env: &mut Env) -> std::time::Duration {
    std::time::Duration::from_millis(env.or("BOURSE_RISK_CHECK_VALID_FOR_MS", 2_000u64))
}
