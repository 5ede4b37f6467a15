//! The public API, as the gateway routes it: one row per method and path, naming the upstream
//! and who may call it. This table is the single source of truth at the edge — the router is
//! built from it, the authentication decision is read from it (SEC-02), and tests check every
//! row against the OpenAPI document (OPS-09). A path that is not here is a 404, which is how
//! `/internal/*` stays unreachable from outside (SEC-14).

use access::Role;
use axum::http::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Auth,
    Orders,
    Settlement,
    Risk,
    Alerting,
}

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
        Upstream::Auth,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/login",
        Upstream::Auth,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/refresh",
        Upstream::Auth,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/auth/logout",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/auth/sessions",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/auth/me",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::POST,
        "/v1/api-keys",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/api-keys",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/api-keys/{id}",
        Upstream::Auth,
        Access::Authenticated,
    ),
    route(
        Method::PUT,
        "/v1/admin/users/{id}/roles",
        Upstream::Auth,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/.well-known/jwks.json",
        Upstream::Auth,
        Access::Public,
    ),
    route(Method::GET, "/v1/assets", Upstream::Orders, Access::Public),
    route(
        Method::GET,
        "/v1/instruments",
        Upstream::Orders,
        Access::Public,
    ),
    route(
        Method::POST,
        "/v1/admin/instruments",
        Upstream::Orders,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::PATCH,
        "/v1/admin/instruments/{symbol}",
        Upstream::Orders,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/orders",
        Upstream::Orders,
        Access::Roles(&[Role::Trader]),
    ),
    route(
        Method::GET,
        "/v1/orders/{id}",
        Upstream::Orders,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/orders/{id}",
        Upstream::Orders,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/orders",
        Upstream::Orders,
        Access::Authenticated,
    ),
    route(
        Method::DELETE,
        "/v1/orders",
        Upstream::Orders,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/trades",
        Upstream::Orders,
        Access::Authenticated,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/book",
        Upstream::Orders,
        Access::Public,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/trades",
        Upstream::Orders,
        Access::Public,
    ),
    route(
        Method::GET,
        "/v1/markets/{symbol}/ticker",
        Upstream::Orders,
        Access::Public,
    ),
    route(
        Method::GET,
        "/v1/balances",
        Upstream::Settlement,
        Access::Roles(&[Role::Trader]),
    ),
    route(
        Method::POST,
        "/v1/admin/deposits",
        Upstream::Settlement,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/withdrawals",
        Upstream::Settlement,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/reconciliation",
        Upstream::Settlement,
        Access::Roles(&[Role::Admin, Role::Auditor]),
    ),
    route(
        Method::GET,
        "/v1/positions",
        Upstream::Risk,
        Access::Roles(&[Role::Trader]),
    ),
    route(
        Method::GET,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::Risk,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::PUT,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::Risk,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::PATCH,
        "/v1/admin/risk-limits/{account_id}",
        Upstream::Risk,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/kill-switches",
        Upstream::Risk,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/kill-switches/{id}",
        Upstream::Risk,
        Access::Roles(&[Role::RiskOfficer, Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/alert-channels",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alert-channels",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::POST,
        "/v1/admin/alert-rules",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alert-rules",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/alert-rules/{id}",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin]),
    ),
    route(
        Method::GET,
        "/v1/admin/alerts",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::GET,
        "/v1/admin/alerts/{id}",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::POST,
        "/v1/admin/alerts/{id}/ack",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::POST,
        "/v1/admin/alerts/{id}/resolve",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::POST,
        "/v1/admin/silences",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
    route(
        Method::GET,
        "/v1/admin/silences",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer, Role::Auditor]),
    ),
    route(
        Method::DELETE,
        "/v1/admin/silences/{id}",
        Upstream::Alerting,
        Access::Roles(&[Role::Admin, Role::RiskOfficer]),
    ),
];

impl RouteSpec {
    pub fn is_admin(&self) -> bool {
        self.path.starts_with("/v1/admin/")
    }
}
