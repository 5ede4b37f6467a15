//! Failed-login throttling (SEC-07): brute force against one account, or from one address, is
//! stopped after a few attempts per window, across every replica (counts live in Redis).

use std::net::IpAddr;

use aws_lc_rs::digest::{SHA256, digest};
use redis::aio::ConnectionManager;
use service_kit::redis::KeyPrefix;

use crate::config::ThrottleSettings;
use crate::error::{Error, Result};

/// INCR that starts the window on the first failure; returns the count.
const RECORD_FAILURE: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
";

#[derive(Clone)]
pub struct LoginThrottle {
    redis: ConnectionManager,
    keys: KeyPrefix,
    settings: ThrottleSettings,
    script: std::sync::Arc<redis::Script>,
}

impl LoginThrottle {
    pub fn new(redis: ConnectionManager, keys: KeyPrefix, settings: ThrottleSettings) -> Self {
        Self {
            redis,
            keys,
            settings,
            script: std::sync::Arc::new(redis::Script::new(RECORD_FAILURE)),
        }
    }

    fn account_key(&self, email: &str) -> String {
        // Hashed: emails do not belong in Redis key names (they show up in monitoring).
        let hash = digest(&SHA256, email.as_bytes());
        let hex: String = hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.keys.key(&["auth", "login_failures", "account", &hex])
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        self.keys
            .key(&["auth", "login_failures", "ip", &ip.to_string()])
    }

    /// Refuses the attempt if the account or the address has used up its failures.
    pub async fn check(&self, email: &str, ip: IpAddr) -> Result<()> {
        let account = self.account_key(email);
        let address = self.ip_key(ip);
        let mut conn = self.redis.clone();
        let (account_count, account_ttl, ip_count, ip_ttl): (Option<u32>, i64, Option<u32>, i64) =
            redis::pipe()
                .get(&account)
                .pttl(&account)
                .get(&address)
                .pttl(&address)
                .query_async(&mut conn)
                .await?;
        let over = |count: Option<u32>, max: u32| count.unwrap_or(0) >= max;
        let retry = |ttl_ms: i64| u64::try_from(ttl_ms.max(1000) / 1000).unwrap_or(1);
        if over(account_count, self.settings.max_failures_per_account) {
            return Err(Error::Throttled {
                retry_after_secs: retry(account_ttl),
            });
        }
        if over(ip_count, self.settings.max_failures_per_ip) {
            return Err(Error::Throttled {
                retry_after_secs: retry(ip_ttl),
            });
        }
        Ok(())
    }

    pub async fn record_failure(&self, email: &str, ip: IpAddr) -> Result<()> {
        let window_ms = u64::try_from(self.settings.window.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.redis.clone();
        for key in [self.account_key(email), self.ip_key(ip)] {
            let _: u32 = self
                .script
                .key(key)
                .arg(window_ms)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// A successful login forgives the account's failures (not the address's).
    pub async fn clear_account(&self, email: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let _: u32 = redis::cmd("DEL")
            .arg(self.account_key(email))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
