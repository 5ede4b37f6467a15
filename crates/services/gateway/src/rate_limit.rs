//! Rate limits (SEC-07).
//!
//! Two layers, because they answer different threats:
//! - per client IP, in memory (tower_governor): cheap, protects every replica from a single
//!   noisy source before any token is parsed;
//! - per principal, in Redis (GCRA in a Lua script): one budget per user shared by every
//!   replica, with tiers by role. A replica takes a busy principal's tokens a few at a time
//!   and spends them in memory for a moment ([`Leases`], ADR 0033): one Redis call per lease
//!   instead of one per request, never more admitted than the budget allows.
//!
//! Every 429 is problem+json with `Retry-After`, `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers), and successful authenticated responses carry the
//! remaining budget too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// from the Redis server so replicas with skewed clocks agree.
///
/// Takes up to `want` tokens at once (a lease, [`Leases`]) — as many as the budget has, so a
/// lease never admits more than the same requests one by one would — after giving back
/// `refund` tokens an earlier lease took and did not spend. `ARGV`: interval (µs), burst,
/// want, refund. Returns {taken, retry_after_us, remaining, reset_us}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local refund = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) - refund * interval
if tat < now then tat = now end
local taken = math.min(want, math.floor((now - tat) / interval) + burst)
if taken < 1 then
  if refund > 0 then
    redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return {0, tat + interval - burst * interval - now, 0, tat - now}
end
local new_tat = tat + taken * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((now - (new_tat - burst * interval)) / interval)
return {taken, 0, remaining, new_tat - now}
";

/// How long tokens taken from Redis stay spendable in this replica. Short on purpose: a token
/// is admitted when it is taken, and one spent much later would let a burst through after the
/// budget had refilled. What a lease did not spend goes back with the next take.
pub const LEASE_FOR: Duration = Duration::from_millis(100);

/// Leases that a replica stops hearing from are dropped once this many are held (their
/// unspent tokens are not given back; the budget refills anyway).
const LEASES_HELD: usize = 100_000;

/// Tokens of one principal's budget taken from Redis and not yet spent.
#[derive(Debug)]
struct Lease {
    left: u64,
    taken: u64,
    spent: u64,
    until: Instant,
    /// What Redis said was left of the budget after the take, and when it is whole again —
    /// for the `RateLimit` header of the requests the lease admits.
    remaining: u64,
    reset_secs: u64,
}

/// This replica's leases, by budget key (ADR 0033). A lease's size follows the principal's
/// pace: the first is one token; one spent before it ran out is followed by one twice its
/// size, one that ran out of time by one the size of what it spent — up to the cap. A quiet
/// principal asks Redis on every request, as without leases.
#[derive(Debug, Default)]
struct Leases {
    held: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// Spends a token of `key`'s lease if it holds one still valid: the remaining budget and
    /// reset for the headers.
    fn spend(&self, key: &str, now: Instant) -> Option<(u64, u64)> {
        let mut held = self.held.lock().ok()?;
        let lease = held.get_mut(key)?;
        if lease.left == 0 || now >= lease.until {
            return None;
        }
        lease.left -= 1;
        lease.spent += 1;
        Some((lease.remaining + lease.left, lease.reset_secs))
    }

    /// Ends `key`'s lease: how many tokens to ask for next, up to `cap`, and how many to give
    /// back.
    fn renew(&self, key: &str, cap: u64) -> (u64, u64) {
        let Some(old) = self.held.lock().ok().and_then(|mut held| held.remove(key)) else {
            return (1, 0);
        };
        let want = if old.left == 0 {
            old.taken.saturating_mul(2)
        } else {
            old.spent
        };
        (want.clamp(1, cap), old.left)
    }

    /// Records `taken` tokens for `key`, the first of them spent by the request that took them.
    fn grant(&self, key: &str, taken: u64, remaining: u64, reset_secs: u64, until: Instant) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.len() >= LEASES_HELD {
            let now = Instant::now();
            held.retain(|_, lease| lease.until > now);
        }
        // Two requests that found no lease both took one: the second joins the first.
        let lease = held.entry(key.to_owned()).or_insert(Lease {
            left: 0,
            taken: 0,
            spent: 0,
            until,
            remaining,
            reset_secs,
        });
        lease.left += taken - 1;
        lease.taken += taken;
        lease.spent += 1;
        lease.until = lease.until.max(until);
        (lease.remaining, lease.reset_secs) = (remaining, reset_secs);
    }
}

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
    leases: Arc<Leases>,
    lease_for: Duration,
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
            leases: Arc::default(),
            lease_for: LEASE_FOR,
        })
    }

    /// Keeps leases spendable for `lease_for` instead of [`LEASE_FOR`].
    pub fn with_lease_for(mut self, lease_for: Duration) -> Self {
        self.lease_for = lease_for;
        self
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
        let tier = self.tier(principal);
        // A key's budget is its own, apart from its owner's session and other keys.
        let key = match &principal.api_key {
            Some(key_id) => self.keys.key(&["gateway", "rate", "key", key_id]),
            None => self
                .keys
                .key(&["gateway", "rate", &principal.user_id.to_string()]),
        };
        if let Some((remaining, reset_secs)) = self.leases.spend(&key, Instant::now()) {
            return Ok(Decision {
                allowed: true,
                remaining,
                retry_after_secs: 1,
                reset_secs,
                tier,
            });
        }
        let Ok(admitted) = self.breaker.admit() else {
            metrics::counter!("gateway_rate_limit_skipped_total").increment(1);
            return Err(LimiterUnavailable::Skipped);
        };
        let started = std::time::Instant::now();
        let decision = self.ask(&key, tier).await;
        admitted.finish(decision.is_err(), started.elapsed());
        Ok(decision?)
    }

    /// Takes a lease of `key`'s budget from Redis, giving back what the last one left.
    async fn ask(&self, key: &str, tier: Tier) -> redis::RedisResult<Decision> {
        let interval_us = 1_000_000 / u64::from(tier.per_second.max(1));
        let cap = u64::from(self.limits.lease_max.min(tier.burst / 4).max(1));
        // Should the call fail, the tokens to give back are lost: fewer admitted, never more.
        let (want, refund) = self.leases.renew(key, cap);
        let mut conn = self.redis.clone();
        let (taken, retry_us, remaining, reset_us): (u64, u64, u64, u64) = self
            .script
            .key(key)
            .arg(interval_us)
            .arg(tier.burst)
            .arg(want)
            .arg(refund)
            .invoke_async(&mut conn)
            .await?;
        let reset_secs = reset_us.div_ceil(1_000_000);
        if taken > 0 {
            self.leases.grant(
                key,
                taken,
                remaining,
                reset_secs,
                Instant::now() + self.lease_for,
            );
        }
        Ok(Decision {
            allowed: taken > 0,
            remaining: remaining + taken.saturating_sub(1),
            retry_after_secs: retry_us.div_ceil(1_000_000).max(1),
            reset_secs,
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
            lease_max: 32,
        }
    }

    fn trader() -> Principal {
        Principal {
            user_id: Uuid::now_v7(),
            roles: vec![Role::Trader],
            api_key: None,
        }
    }

    /// A limiter of 1 request/s with bursts of `burst` — nothing refills while a test runs —
    /// on `redis` under `prefix`, its leases never running out of time.
    async fn limiter_on(redis: &RedisServer, prefix: &KeyPrefix, burst: u32) -> PrincipalLimiter {
        let tier = |name| Tier {
            name,
            per_second: 1,
            burst,
        };
        let limits = RateLimits {
            standard: tier("standard"),
            privileged: tier("privileged"),
            api_key: tier("api_key"),
            ..limits()
        };
        let client = redis::Client::open(redis.url()).unwrap();
        let connection = ConnectionManager::new(client).await.unwrap();
        PrincipalLimiter::new(connection, prefix.clone(), limits)
            .unwrap()
            .with_lease_for(Duration::from_secs(3600))
    }

    /// How many scripts the server has run.
    async fn scripts_run(redis: &RedisServer) -> u64 {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap();
        stats
            .lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    #[tokio::test]
    async fn a_busy_principal_takes_its_budget_a_lease_at_a_time_and_never_more_than_it() {
        let redis = RedisServer::start().await;
        let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
        let limiter = limiter_on(&redis, &prefix, 100).await;
        let trader = trader();

        let mut decisions = Vec::new();
        for _ in 0..101 {
            decisions.push(limiter.check(&trader).await.unwrap());
        }

        assert!(decisions[..100].iter().all(|d| d.allowed), "{decisions:?}");
        assert!(
            !decisions[100].allowed,
            "the 101st request of a budget of 100"
        );
        // The `RateLimit` header counts down one request at a time, whether a request took a
        // lease from Redis or spent one in memory.
        let remaining: Vec<u64> = decisions[..100].iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, (0..100).rev().collect::<Vec<u64>>());
        // Leases of 1, 2, 4, 8, 16, then 25 (a quarter of the burst): 9 takes, and a
        // script loaded once. One by one it would be 101.
        let scripts = scripts_run(&redis).await;
        assert!(scripts <= 12, "{scripts} scripts for 101 requests");
    }

    #[tokio::test]
    async fn tokens_a_lease_did_not_spend_go_back_to_the_budget() {
        let redis = RedisServer::start().await;
        let prefix = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
        // Two gateway replicas sharing one principal's budget of 40 (leases of up to 10).
        let (one, other) = (
            limiter_on(&redis, &prefix, 40).await,
            limiter_on(&redis, &prefix, 40).await,
        );
        let trader = trader();
        // Eight requests through the first: leases of 1, 2, 4 and 8 — 15 taken, 7 unspent.
        for _ in 0..8 {
            assert!(one.check(&trader).await.unwrap().allowed);
        }
        // Its lease runs out of time; its next request gives the 7 back and takes 1.
        for lease in one.leases.held.lock().unwrap().values_mut() {
            lease.until = Instant::now();
        }
        let decision = one.check(&trader).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 40 - 9, "{decision:?}");

        let mut through_other = 0;
        while other.check(&trader).await.unwrap().allowed {
            through_other += 1;
        }
        assert_eq!(through_other, 40 - 9);
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
        let trader = trader();

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
