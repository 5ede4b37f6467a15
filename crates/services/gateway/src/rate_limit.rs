//! Rate limits (SEC-07).
//!
//! Two layers, because they answer different threats:
//! - per client IP, in memory (tower_governor): cheap, protects every replica from a single
//!   noisy source before any token is parsed;
//! - per principal, in Redis (GCRA in a Lua script): one budget per user shared by every
//!   replica, with tiers by role.
//!
//! Every 429 is problem+json with `Retry-After`, `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers), and successful authenticated responses carry the
//! remaining budget too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use access::{Principal, Role};
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::middleware::NoOpMiddleware;
use redis::aio::ConnectionManager;
use service_kit::http::{Problem, TrustedProxies};
use service_kit::redis::KeyPrefix;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::config::{RateLimits, Tier};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Keys the per-IP limiter by the resolved client address (forwarding headers honoured only
/// from trusted proxies).
#[derive(Clone, Debug)]
pub struct ClientIpKey(pub TrustedProxies);

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(self.0.client_ip(peer, req.headers()))
    }
}

pub type IpLimiterConfig = GovernorConfig<ClientIpKey, NoOpMiddleware>;

pub fn ip_limiter(limits: &RateLimits, trusted: TrustedProxies) -> Option<Arc<IpLimiterConfig>> {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(limits.ip_per_second.max(1)));
    GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limits.ip_burst)
        .key_extractor(ClientIpKey(trusted))
        .finish()
        .map(Arc::new)
}

/// The 429 of the per-IP limiter, in the same shape as every other error.
pub fn ip_limit_response(limits: &RateLimits, err: GovernorError) -> Response {
    match err {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let policy = policy_header("ip", limits.ip_burst, limits.ip_per_second);
            too_many_requests(policy, 0, wait_time.max(1)).into_response()
        }
        GovernorError::UnableToExtractKey => Problem::internal().into_response(),
        GovernorError::Other { code, msg, .. } => Problem::new(
            code,
            "rate_limit_error",
            msg.unwrap_or_else(|| "rate limiting failed".to_owned()),
        )
        .into_response(),
    }
}

/// `"name";q=<burst>;w=<seconds to refill the burst>` — GCRA expressed as a quota.
fn policy_header(name: &str, burst: u32, per_second: u32) -> HeaderValue {
    let window = burst.div_ceil(per_second.max(1)).max(1);
    HeaderValue::from_str(&format!("\"{name}\";q={burst};w={window}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

fn usage_header(name: &str, remaining: u64, reset_secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={reset_secs}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

fn too_many_requests(policy: HeaderValue, remaining: u64, retry_after: u64) -> Problem {
    let name = policy
        .to_str()
        .ok()
        .and_then(|p| p.split(';').next())
        .map(|n| n.trim_matches('"').to_owned())
        .unwrap_or_default();
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; slow down",
    )
    .retry_after(retry_after)
    .with_header(RATELIMIT_POLICY, policy)
    .with_header(RATELIMIT, usage_header(&name, remaining, retry_after))
}

/// GCRA: each request pushes the "theoretical arrival time" (TAT) forward by one emission
/// interval; a request is allowed while TAT stays within `burst` intervals of now. Time comes
/// from the Redis server so replicas with skewed clocks agree. Returns
/// {allowed, retry_after_us, remaining, reset_us}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now, 0, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((now - allow_at) / interval)
return {1, 0, remaining, new_tat - now}
";

/// The outcome of one per-principal check.
#[derive(Debug)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_secs: u64,
    pub reset_secs: u64,
    pub tier: Tier,
}

impl Decision {
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        [
            (
                RATELIMIT_POLICY,
                policy_header(self.tier.name, self.tier.burst, self.tier.per_second),
            ),
            (
                RATELIMIT,
                usage_header(self.tier.name, self.remaining, self.reset_secs),
            ),
        ]
    }

    pub fn rejection(&self) -> Problem {
        too_many_requests(
            policy_header(self.tier.name, self.tier.burst, self.tier.per_second),
            0,
            self.retry_after_secs,
        )
    }
}

#[derive(Clone)]
pub struct PrincipalLimiter {
    redis: ConnectionManager,
    keys: KeyPrefix,
    limits: RateLimits,
    script: Arc<redis::Script>,
}

impl PrincipalLimiter {
    pub fn new(redis: ConnectionManager, keys: KeyPrefix, limits: RateLimits) -> Self {
        Self {
            redis,
            keys,
            limits,
            script: Arc::new(redis::Script::new(GCRA)),
        }
    }

    pub fn tier(&self, principal: &Principal) -> Tier {
        if principal.api_key.is_some() {
            self.limits.api_key
        } else if principal.has(Role::Admin) || principal.has(Role::RiskOfficer) {
            self.limits.privileged
        } else {
            self.limits.standard
        }
    }

    pub async fn check(&self, principal: &Principal) -> redis::RedisResult<Decision> {
        let tier = self.tier(principal);
        let interval_us = 1_000_000 / u64::from(tier.per_second.max(1));
        // A key's budget is its own, apart from its owner's session and other keys.
        let key = match &principal.api_key {
            Some(key_id) => self.keys.key(&["gateway", "rate", "key", key_id]),
            None => self
                .keys
                .key(&["gateway", "rate", &principal.user_id.to_string()]),
        };
        let mut conn = self.redis.clone();
        let (allowed, retry_us, remaining, reset_us): (u8, u64, u64, u64) = self
            .script
            .key(key)
            .arg(interval_us)
            .arg(tier.burst)
            .invoke_async(&mut conn)
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining,
            retry_after_secs: retry_us.div_ceil(1_000_000).max(1),
            reset_secs: reset_us.div_ceil(1_000_000),
            tier,
        })
    }
}
