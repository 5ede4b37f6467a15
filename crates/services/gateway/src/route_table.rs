//! The public API, as the gateway routes it: one row per method and path, naming the upstream
//! and who may call it. This table is the single source of truth at the edge — the router is
//! built from it, the authentication decision is read from it (SEC-02), and tests check every
//! row against the OpenAPI document (OPS-09). A path that is not here is a 404, which is how
//! `/internal/*` stays unreachable from outside (SEC-14).

use access::Role;
use axum::http::Method;

/// A service the gateway forwards to. A new one is a constant here, an entry in [`UPSTREAMS`]
/// and its rows in [`ROUTES`]; its URL setting, breaker, readiness report and share of the API
/// document follow from that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// As the platform names it: `BOURSE_<NAME>_URL` points at it.
    pub name: &'static str,
    /// Where it listens when that variable is not given (its default port on loopback).
    pub default_url: &'static str,
}

impl Upstream {
    pub const AUTH: Self = Self::at("auth", "http://127.0.0.1:8081");
    pub const ORDERS: Self = Self::at("orders", "http://127.0.0.1:8082");
    pub const RISK: Self = Self::at("risk", "http://127.0.0.1:8083");
    pub const SETTLEMENT: Self = Self::at("settlement", "http://127.0.0.1:8084");
    pub const ALERTING: Self = Self::at("alerting", "http://127.0.0.1:8085");

    const fn at(name: &'static str, default_url: &'static str) -> Self {
        Self { name, default_url }
    }

    /// The variable that gives its base URL.
    pub fn url_variable(self) -> String {
        format!("BOURSE_{}_URL", self.name.to_ascii_uppercase())
    }
}

/// Every upstream, in the order the API document lists their paths.
pub const UPSTREAMS: [Upstream; 5] = [
    Upstream::AUTH,
    Upstream::ORDERS,
    Upstream::SETTLEMENT,
    Upstream::RISK,
    Upstream::ALERTING,
];

/// Their names, for the gateway's `launch::Spec`.
pub const UPSTREAM_NAMES: [&str; UPSTREAMS.len()] = {
    let mut names = [""; UPSTREAMS.len()];
    let mut i = 0;
    while i < UPSTREAMS.len() {
        names[i] = UPSTREAMS[i].name;
        i += 1;
    }
    names
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid access token.
    Authenticated,
    /// A valid token holding one of these roles. Admin paths also need an allowed source IP.
    Roles(&'static [Role]),
}

#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub method: Method,
    /// axum path syntax; the same path is requested upstream.
    pub path: &'static str,
    pub upstream: Upstream,
    pub access: Access,
    /// Set when the route is on its way out (docs/api-versioning.md).
    pub deprecation: Option<Deprecation>,
}

/// A route being retired (OPS-11): announced with `Deprecation` (RFC 9745), `Sunset` (RFC 8594)
/// and a `Link` to what replaces it on every answer, marked `deprecated` in the API document,
/// and answered 410 Gone once its sunset has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deprecation {
    /// When it was deprecated, Unix seconds.
    pub since: i64,
    /// When it stops answering, Unix seconds: at least six months after `since`.
    pub sunset: i64,
    /// The route that replaces it, e.g. `/v2/orders`.
    pub successor: &'static str,
}

const fn route(
    method: Method,
    path: &'static str,
    upstream: Upstream,
    access: Access,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        upstream,
        access,
        deprecation: None,
    }
}

pub static ROUTES: &[RouteSpec] = &[
    route(
        Method::POST,
        "/v1/auth/register",
        Upstream::AUTH,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/login",
        Upstream::AUTH,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/refresh",
        Upstream::AUTH,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/logout",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/auth/sessions",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/auth/me",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::POST,
        "/v1/api-keys",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/api-keys",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/api-keys/{id}",
        Upstream::AUTH,
        Access::Authenticated,
    ),
    route(
        Method::PUT,
        "/v1/admin/users/{id}/roles",
        Upstream::AUTH,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/.well-known/jwks.json",
        Upstream::AUTH,
        Access::Public,
    ),
    route(Method::GET, "/v1/assets", Upstream::ORDERS, Access::Public),
    route(
        Method::GET,
        "/v1/instruments",
        Upstream::ORDERS,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/admin/instruments",
        Upstream::ORDERS,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::PATCH,
        "/v1/admin/instruments/{symbol}",
        Upstream::ORDERS,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/orders",
        Upstream::ORDERS,
        Access::Roles(&[Role::Trader]),
    ),
    route(
        Method::GET,
        "/v1/orders/{id}",
        Upstream::ORDERS,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/orders/{id}",
        Upstream::ORDERS,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/orders",
        Upstream::ORDERS,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/orders",
        Upstream::ORDERS,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/trades",
        Upstream::ORDERS,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/book",
        Upstream::ORDERS,
        Access::Public,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/trades",
        Upstream::ORDERS,
        Access::Public,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/ticker",
        Upstream::ORDERS,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/admin/deposits",
        Upstream::SETTLEMENT,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/withdrawals",
        Upstream::SETTLEMENT,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/reconciliation",
        Upstream::SETTLEMENT,
        Access::Roles(&[Role::Admin, Role::Auditor]),
    ),
    route(
        Method::GET,
        "/v1/positions",
        Upstream::RISK,
        Access::Roles(&[Role::Trader]),
    ),
    // Risk knows what open orders have reserved out of each balance (ADR 0023 slice 3b).
    route(
        Method::GET,
        "/v1/balances",
        Upstream::RISK,
        Access::Roles(&[Role::Trader]),
    ),
    route(
        Method::GET,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::PUT,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::PATCH,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/risk-funds/{account_id}",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/risk-reconciliation",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin, Role::Auditor]),
    ),
    route(
        Method::POST,
        "/v1/admin/kill-switches",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/kill-switches/{id}",
        Upstream::RISK,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/alert-channels",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alert-channels",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/alert-rules",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alert-rules",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/alert-rules/{id}",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alerts",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::GET,
        "/v1/admin/alerts/{id}",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::POST,
        "/v1/admin/alerts/{id}/ack",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::POST,
        "/v1/admin/alerts/{id}/resolve",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::POST,
        "/v1/admin/silences",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::GET,
        "/v1/admin/silences",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/silences/{id}",
        Upstream::ALERTING,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
];

impl RouteSpec {
    pub fn is_admin(&self) -> bool {
        self.path.starts_with("/v1/admin/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_an_upstream_the_gateway_has_a_client_and_a_url_for() {
        for route in ROUTES {
            assert!(
                UPSTREAMS.contains(&route.upstream),
                "{} {} forwards to {:?}, which is not in UPSTREAMS",
                route.method,
                route.path,
                route.upstream
            );
        }
        let mut names = UPSTREAM_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), UPSTREAMS.len(), "upstream names are unique");
        assert_eq!(UPSTREAM_NAMES[0], "auth");
        assert_eq!(Upstream::SETTLEMENT.url_variable(), "BOURSE_SETTLEMENT_URL");
    }
}
