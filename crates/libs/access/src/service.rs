//! Service-to-service identity (SEC-14): who may call whom, and the caller as handlers of
//! `/internal/*` routes see it.
//!
//! Auth issues a short-lived service token (client credentials) to a registered client for one
//! audience — the called service — carrying the scopes [`GRANTS`] gives that client there. The
//! called service verifies it with a `TokenVerifier<ServiceClaims>` whose audience is its own
//! name, and each internal handler requires its scope with [`ServicePrincipal::require`].

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use service_kit::Env;
use service_kit::http::Problem;

use crate::claims::ServiceClaims;
use crate::principal::bearer_token;
use crate::verifier::{TokenVerifier, VerifyError};

/// One permission: `client` may call `audience` with `scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub client: &'static str,
    pub audience: &'static str,
    pub scope: &'static str,
}

/// Pre-trade risk checks, asked by orders before matching; a passing check reserves the
/// order's funds (ADR 0023).
pub const RISK_CHECK: &str = "risk:check";

/// Every customer balance with the outbox position it reflects, read by risk at its start
/// to follow settlement's stream from there (ADR 0023).
pub const SETTLEMENT_BALANCES: &str = "settlement:balances";

/// Reserving what a withdrawal takes before settlement books it, so it cannot take what open
/// orders have reserved (ADR 0023 slice 4).
pub const RISK_WITHDRAWAL: &str = "risk:withdrawals";

/// Commands for a symbol's book, forwarded by an orders replica to the replica that owns it
/// (TRD-08).
pub const ORDERS_MATCHING: &str = "orders:matching";

/// A mark on the orders stream, which risk asks for after a restart and decides on funds
/// only once its consumer has read it (ADR 0023).
pub const ORDERS_STREAM_MARKS: &str = "orders:stream-marks";

/// Orders' totals of executed trades, read by settlement's reconciliation (REL-15).
pub const ORDERS_TRADE_TOTALS: &str = "orders:trade-totals";

/// An API key's credential (secret, scopes, networks, a token for its owner), read by the
/// gateway to verify signed requests (SEC-19).
pub const AUTH_API_KEYS: &str = "auth:api-keys";

/// Every service-to-service permission of the platform: the single source of truth, like the
/// gateway's route table is for public routes.
pub const GRANTS: &[Grant] = &[
    Grant {
        client: "orders",
        audience: "risk",
        scope: RISK_CHECK,
    },
    Grant {
        client: "settlement",
        audience: "orders",
        scope: ORDERS_TRADE_TOTALS,
    },
    Grant {
        client: "risk",
        audience: "settlement",
        scope: SETTLEMENT_BALANCES,
    },
    Grant {
        client: "settlement",
        audience: "risk",
        scope: RISK_WITHDRAWAL,
    },
    Grant {
        client: "risk",
        audience: "orders",
        scope: ORDERS_STREAM_MARKS,
    },
    Grant {
        client: "orders",
        audience: "orders",
        scope: ORDERS_MATCHING,
    },
    Grant {
        client: "gateway",
        audience: "auth",
        scope: AUTH_API_KEYS,
    },
];

/// The clients that may ask for service tokens.
pub fn clients() -> impl Iterator<Item = &'static str> {
    GRANTS
        .iter()
        .enumerate()
        .filter(|(i, grant)| GRANTS[..*i].iter().all(|g| g.client != grant.client))
        .map(|(_, grant)| grant.client)
}

/// The scopes `client` holds at `audience`, space-separated; `None` when it may not call it.
pub fn scopes(client: &str, audience: &str) -> Option<String> {
    let scopes: Vec<&str> = GRANTS
        .iter()
        .filter(|g| g.client == client && g.audience == audience)
        .map(|g| g.scope)
        .collect();
    (!scopes.is_empty()).then(|| scopes.join(" "))
}

/// The client secret of service `client`: `BOURSE_SERVICE_SECRET_<CLIENT>`. Auth reads every
/// client's, each client its own. Outside production a development value is the default so
/// that `bourse serve all` runs with no setup; production requires a real one of at least 32
/// characters (SEC-05: secrets come from the environment or a secret store, never the code).
pub fn client_secret(env: &mut Env, client: &str, production: bool) -> SecretString {
    let variable = format!("BOURSE_SERVICE_SECRET_{}", client.to_ascii_uppercase());
    let development = format!("development-only-secret-of-{client}");
    let secret = env.secret(&variable, (!production).then_some(development.as_str()));
    if production && secret.expose_secret().len() < 32 {
        env.problem(&variable, "must be at least 32 characters in production");
    }
    secret
}

/// A verified calling service. Taking it as a handler argument makes an internal route
/// reachable by services only (a user's token has another audience and no scope).
#[derive(Clone, Debug)]
pub struct ServicePrincipal {
    pub claims: ServiceClaims,
}

impl ServicePrincipal {
    /// Ok when the calling service holds `scope`; otherwise 403.
    pub fn require(&self, scope: &str) -> Result<(), Problem> {
        if self.claims.has_scope(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "service {} lacks the scope {scope}",
                self.claims.client()
            )))
        }
    }
}

impl<S> FromRequestParts<S> for ServicePrincipal
where
    Arc<TokenVerifier<ServiceClaims>>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or(VerifyError::Missing)?;
        let verifier = Arc::<TokenVerifier<ServiceClaims>>::from_ref(state);
        let claims = verifier.verify(token).await?;
        tracing::Span::current().record("principal", tracing::field::display(&claims.sub));
        Ok(Self { claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_name_each_client_once_and_join_its_scopes_per_audience() {
        assert_eq!(
            clients().collect::<Vec<_>>(),
            ["orders", "settlement", "risk", "gateway"]
        );
        assert_eq!(
            scopes("risk", "settlement").as_deref(),
            Some(SETTLEMENT_BALANCES)
        );
        assert_eq!(scopes("gateway", "auth").as_deref(), Some(AUTH_API_KEYS));
        assert_eq!(scopes("orders", "risk").as_deref(), Some(RISK_CHECK));
        assert_eq!(
            scopes("settlement", "orders").as_deref(),
            Some(ORDERS_TRADE_TOTALS)
        );
        assert_eq!(
            scopes("settlement", "risk").as_deref(),
            Some(RISK_WITHDRAWAL)
        );
        assert_eq!(scopes("orders", "auth"), None);
        assert_eq!(
            scopes("risk", "orders").as_deref(),
            Some(ORDERS_STREAM_MARKS)
        );
        assert_eq!(scopes("alerting", "orders"), None);
    }
}
