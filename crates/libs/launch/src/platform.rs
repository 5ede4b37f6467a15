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
