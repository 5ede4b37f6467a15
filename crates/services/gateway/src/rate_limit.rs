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

/// Why the per-principal limit was not asked of Redis; the request is admitted either way
/// (ADR 0004: a Redis outage must not take the API down).
#[derive(Debug, thiserror::Error)]
pub enum LimiterUnavailable {
    /// The call failed: Redis unreachable, or no answer within the connection's timeout.
    #[error(transparent)]
    Failed(#[from] redis::RedisError),
    /// Redis failed recently and is not asked until [`REDIS_BREAKER`]'s open time has passed:
    /// while it stalls, a request would otherwise wait out the client's timeout before being
    /// admitted anyway, and the gateway would shed the requests piling up behind it.
    #[error("Redis failed recently; the limit is not asked for now")]
    Skipped,
}

/// The breaker in front of the limiter's Redis: open after half of at least 10 calls in the
/// last second failed, asked again a second later by one probe. The window is short on
/// purpose: every authenticated request is a call, so a 10 s window would hold thousands of
/// successes from before a stall, and thousands of requests would wait out their timeout
/// before the failures reached half.
pub const REDIS_BREAKER: resilience::BreakerSettings = resilience::BreakerSettings {
    failure_rate: 0.5,
    // A stall shows as failures (the client's response timeout); an answer is never slow.
    slow_call_rate: 1.0,
    slow_call: Duration::from_secs(60),
    window: Duration::from_secs(1),
    minimum_calls: 10,
    open_for: Duration::from_secs(1),
    half_open_calls: 1,
};

#[derive(Clone)]
pub struct PrincipalLimiter {
    redis: ConnectionManager,
    keys: KeyPrefix,
    limits: RateLimits,
    script: Arc<redis::Script>,
    breaker: Arc<resilience::breaker::Breaker>,
}

impl PrincipalLimiter {
    pub fn new(
        redis: ConnectionManager,
        keys: KeyPrefix,
        limits: RateLimits,
    ) -> Result<Self, String> {
        Self::with_breaker(redis, keys, limits, REDIS_BREAKER)
    }

    /// With the Redis breaker's `settings` in place of [`REDIS_BREAKER`]; an error when they
    /// make no sense (a rate outside 0..=1, no calls in a window).
    pub fn with_breaker(
        redis: ConnectionManager,
        keys: KeyPrefix,
        limits: RateLimits,
        settings: resilience::BreakerSettings,
    ) -> Result<Self, String> {
        let breaker = resilience::breaker::Breaker::new(
            settings,
            Box::new(|from, to| {
                tracing::warn!(
                    ?from,
                    ?to,
                    "the principal rate limiter's Redis breaker moved"
                );
            }),
        )?;
        Ok(Self {
            redis,
            keys,
            limits,
            script: Arc::new(redis::Script::new(GCRA)),
            breaker: Arc::new(breaker),
        })
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

    pub async fn check(&self, principal: &Principal) -> Result<Decision, LimiterUnavailable> {
        let Ok(admitted) = self.breaker.admit() else {
            metrics::counter!("gateway_rate_limit_skipped_total").increment(1);
            return Err(LimiterUnavailable::Skipped);
        };
        let started = std::time::Instant::now();
        let decision = self.ask(principal).await;
        admitted.finish(decision.is_err(), started.elapsed());
        Ok(decision?)
    }

    async fn ask(&self, principal: &Principal) -> redis::RedisResult<Decision> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use redis::aio::ConnectionManagerConfig;
    use service_kit::testing::{RedisServer, eventually};
    use uuid::Uuid;

    use super::*;

    fn limits() -> RateLimits {
        let tier = |name| Tier {
            name,
            per_second: 100,
            burst: 100,
        };
        RateLimits {
            ip_per_second: 100,
            ip_burst: 100,
            standard: tier("standard"),
            privileged: tier("privileged"),
            api_key: tier("api_key"),
        }
    }

    /// A Redis that stalls (SIGSTOP: connections open, nothing answered) costs each request
    /// the client's response timeout — until the breaker has seen enough of them. From then
    /// on the limit is skipped without asking Redis (the request is admitted, ADR 0004), and
    /// once Redis answers again a probe finds it and the limit applies again.
    #[tokio::test]
    async fn while_redis_stalls_the_limit_is_skipped_without_waiting_on_it() {
        let redis = RedisServer::start().await;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(100)));
        let client = redis::Client::open(redis.url()).unwrap();
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        let breaker = resilience::BreakerSettings {
            minimum_calls: 4,
            open_for: Duration::from_millis(200),
            ..REDIS_BREAKER
        };
        let limiter = PrincipalLimiter::with_breaker(
            connection,
            KeyPrefix::new(&format!("test:{}", Uuid::now_v7())),
            limits(),
            breaker,
        )
        .unwrap();
        let trader = Principal {
            user_id: Uuid::now_v7(),
            roles: vec![Role::Trader],
            api_key: None,
        };

        redis.pause();
        for _ in 0..4 {
            let failed = limiter.check(&trader).await;
            assert!(
                matches!(failed, Err(LimiterUnavailable::Failed(_))),
                "{failed:?}"
            );
        }
        let skipped = limiter.check(&trader).await;
        assert!(
            matches!(skipped, Err(LimiterUnavailable::Skipped)),
            "{skipped:?}"
        );

        redis.resume();
        eventually("the limit asked of Redis again", || async {
            limiter.check(&trader).await.is_ok()
        })
        .await;
        let decision = limiter.check(&trader).await.unwrap();
        assert!(decision.allowed);
        assert!(decision.remaining < 100, "the budget is being spent");
    }
}
