//! Requests signed with API keys (SEC-19): verified here, at the edge, and forwarded with the
//! owner's principal like any token.
//!
//! A program sends `X-Bourse-Key: <key_id>`, `X-Bourse-Timestamp: <unix ms>` and
//! `X-Bourse-Signature: hex(HMAC-SHA256(secret, timestamp + METHOD + path-with-query + body))`,
//! optionally `X-Bourse-Recv-Window: <ms>` (at most 60 s; 5 s by default). The gateway:
//!
//! 1. refuses a timestamp further than the window from its clock (401 `stale_request`);
//! 2. reads the key's credential from auth — secret, scopes, networks, and an access token for
//!    the owner marked with the key — and keeps it for a few seconds (a miss is one internal
//!    call; the secret never leaves auth and the gateway's memory);
//! 3. refuses a source outside the key's networks (401 `address_not_allowed`) and a signature
//!    that does not match (401 `invalid_signature`, compared in constant time);
//! 4. in one Redis script, shared by every replica: refuses a key auth marked revoked (401
//!    `api_key_revoked` — at once, whatever any replica still holds) and a signature seen
//!    before (401 `replayed_request`); Redis away means refused (503), never unchecked;
//! 5. then the route table decides: a key reaches only what one of its scopes covers
//!    ([`scope_for`]) — 403 otherwise — and the request goes on with the owner's access token in
//!    place of the signature, so services see a [`Principal`] with `api_key` set.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use access::{ApiKeyScope as Scope, Principal, Role};
use aws_lc_rs::hmac;
use axum::http::{HeaderMap, Method, StatusCode};
use ipnet::IpNet;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_kit::http::Problem;
use service_kit::redis::KeyPrefix;
use uuid::Uuid;

pub const KEY: &str = "x-bourse-key";
pub const TIMESTAMP: &str = "x-bourse-timestamp";
pub const SIGNATURE: &str = "x-bourse-signature";
pub const RECV_WINDOW: &str = "x-bourse-recv-window";

#[derive(Clone, Debug)]
pub struct ApiKeySettings {
    /// How far a request's timestamp may be from the gateway's clock, unless it says otherwise.
    pub recv_window: Duration,
    /// The most a request may ask for with `X-Bourse-Recv-Window`.
    pub max_recv_window: Duration,
    /// How long a key's credential is kept before auth is asked again (revocation does not
    /// wait for it: see the module's step 4).
    pub credential_ttl: Duration,
}

/// The scope that lets a key call `method path` (a route table row), or None when no key may:
/// sessions, keys themselves and administration stay with a signed-in user.
pub fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    if path.starts_with("/v1/auth/") || path.starts_with("/v1/api-keys") {
        return None;
    }
    if *method == Method::POST && path == "/v1/admin/withdrawals" {
        return Some(Scope::Withdraw);
    }
    if path.starts_with("/v1/admin/") {
        return None;
    }
    if path.starts_with("/v1/orders") && (*method == Method::POST || *method == Method::DELETE) {
        return Some(Scope::Trade);
    }
    (*method == Method::GET).then_some(Scope::Read)
}

/// A key's credential as auth gives it (`GET /internal/v1/api-keys/{key_id}/credential`).
#[derive(Deserialize)]
struct Credential {
    owner_id: Uuid,
    roles: Vec<Role>,
    secret: SecretString,
    scopes: Vec<Scope>,
    allowed_ips: Option<Vec<IpNet>>,
    access_token: SecretString,
    expires_in: u64,
}

/// A credential as the gateway keeps it.
struct Fetched {
    credential: Credential,
    /// When its access token expires (Unix seconds).
    token_expires_at: u64,
}

struct Cached {
    fetched: Arc<Fetched>,
    /// Kept until then: the credential TTL, or sooner when its token would expire.
    until: Instant,
}

/// A request whose signature checked out.
pub struct Signed {
    pub principal: Principal,
    pub scopes: Vec<Scope>,
    /// The owner's access token, marked with the key: forwarded in place of the signature.
    pub access_token: SecretString,
    /// Unix seconds.
    pub token_expires_at: u64,
}

impl Signed {
    /// 403 unless one of the key's scopes covers `method path`.
    pub fn require_scope_for(&self, method: &Method, path: &str) -> Result<(), Problem> {
        match scope_for(method, path) {
            None => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "api_key_not_allowed",
                "API keys cannot call this route; sign in",
            )),
            Some(scope) if !self.scopes.contains(&scope) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this key lacks the {} scope", scope.as_str()),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Revoked → 2, replayed → 1, fresh (and now remembered) → 0.
const CHECK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return 1
";

#[derive(Clone)]
pub struct ApiKeyVerifier {
    auth: resilience::Upstream,
    redis: ConnectionManager,
    keys: KeyPrefix,
    settings: ApiKeySettings,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    script: Arc<redis::Script>,
}

impl ApiKeyVerifier {
    /// `auth` must carry the gateway's service token (scope `auth:api-keys`).
    pub fn new(
        auth: resilience::Upstream,
        redis: ConnectionManager,
        keys: KeyPrefix,
        settings: ApiKeySettings,
    ) -> Self {
        Self {
            auth,
            redis,
            keys,
            settings,
            cache: Arc::default(),
            script: Arc::new(redis::Script::new(CHECK)),
        }
    }

    /// Whether the request says it is signed (then it is judged as signed, whatever else it
    /// carries).
    pub fn is_signed(headers: &HeaderMap) -> bool {
        headers.contains_key(KEY)
    }

    /// Verifies a signed request: `path_and_query` as the client sent it, `body` whole.
    #[tracing::instrument(skip_all, fields(api_key))]
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
        ip: IpAddr,
    ) -> Result<Signed, Problem> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let key_id = header(KEY)
            .filter(|k| {
                (1..=64).contains(&k.len())
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .ok_or_else(|| refused("invalid_api_key", "X-Bourse-Key is not a key id"))?;
        tracing::Span::current().record("api_key", key_id);
        let timestamp_text = header(TIMESTAMP)
            .filter(|t| (1..=16).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                refused(
                    "invalid_signature",
                    "X-Bourse-Timestamp must be unix milliseconds",
                )
            })?;
        let signature = header(SIGNATURE).and_then(decode_hex).ok_or_else(|| {
            refused(
                "invalid_signature",
                "X-Bourse-Signature must be 64 hex digits",
            )
        })?;
        let window = match header(RECV_WINDOW) {
            None => self.settings.recv_window,
            Some(text) => text
                .parse::<u64>()
                .ok()
                .map(Duration::from_millis)
                .filter(|w| !w.is_zero() && *w <= self.settings.max_recv_window)
                // A 401 like every other refusal of a signature: the routes' documented answers.
                .ok_or_else(|| {
                    refused(
                        "invalid_recv_window",
                        "X-Bourse-Recv-Window must be 1-60000 milliseconds",
                    )
                })?,
        };
        let timestamp: u128 = timestamp_text.parse().unwrap_or(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if now.abs_diff(timestamp) > window.as_millis() {
            return Err(refused(
                "stale_request",
                "X-Bourse-Timestamp is outside the receive window; check the clock",
            ));
        }
        let fetched = self.credential(key_id).await?;
        let credential = &fetched.credential;
        if let Some(networks) = &credential.allowed_ips
            && !networks.iter().any(|n| n.contains(&ip))
        {
            tracing::warn!(%ip, "signed request from an address the key does not allow");
            return Err(refused(
                "address_not_allowed",
                "this key may not be used from this address",
            ));
        }
        let secret = hmac::Key::new(
            hmac::HMAC_SHA256,
            credential.secret.expose_secret().as_bytes(),
        );
        let mut signed = hmac::Context::with_key(&secret);
        signed.update(timestamp_text.as_bytes());
        signed.update(method.as_str().as_bytes());
        signed.update(path_and_query.as_bytes());
        signed.update(body);
        let expected = signed.sign();
        if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &signature).is_err()
        {
            return Err(refused(
                "invalid_signature",
                "the signature does not match the request",
            ));
        }
        self.remember(key_id, &signature).await?;
        Ok(Signed {
            principal: Principal {
                user_id: credential.owner_id,
                roles: credential.roles.clone(),
                api_key: Some(key_id.to_owned()),
            },
            scopes: credential.scopes.clone(),
            access_token: credential.access_token.clone(),
            token_expires_at: fetched.token_expires_at,
        })
    }

    /// The key's credential, from memory while fresh, else from auth.
    async fn credential(&self, key_id: &str) -> Result<Arc<Fetched>, Problem> {
        if let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.get(key_id)
            && cached.until > Instant::now()
        {
            return Ok(cached.fetched.clone());
        }
        let call = resilience::Call::new(
            Method::GET,
            format!("/internal/v1/api-keys/{key_id}/credential"),
        );
        let response = self.auth.send(call).await.map_err(|e| e.problem())?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                self.forget(key_id);
                return Err(refused("invalid_api_key", "no such active API key"));
            }
            status => {
                tracing::error!(%status, "auth refused to give an API key's credential");
                return Err(unavailable());
            }
        }
        let credential: Credential = response.json().await.map_err(|err| {
            tracing::error!(error = %err, "auth's API key credential is unreadable");
            unavailable()
        })?;
        // Never kept past the last minute of its token, so a forwarded token is always live.
        let token_life = Duration::from_secs(credential.expires_in.saturating_sub(60));
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let fetched = Arc::new(Fetched {
            token_expires_at: now_secs + credential.expires_in,
            credential,
        });
        if let Ok(mut cache) = self.cache.lock() {
            // Bounded by the keys in use; stale entries go when next read or replaced.
            cache.retain(|_, c| c.until > Instant::now());
            cache.insert(
                key_id.to_owned(),
                Cached {
                    fetched: fetched.clone(),
                    until: Instant::now() + self.settings.credential_ttl.min(token_life),
                },
            );
        }
        Ok(fetched)
    }

    fn forget(&self, key_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(key_id);
        }
    }

    /// The revocation marker and the signature's first use, in one step shared by every
    /// replica. A signature is remembered for twice the longest window: any later copy of it
    /// is either remembered or stale.
    async fn remember(&self, key_id: &str, signature: &[u8]) -> Result<(), Problem> {
        let revoked = self.keys.key(&["api-keys", "revoked", key_id]);
        let used = self
            .keys
            .key(&["gateway", "signatures", key_id, &encode_hex(signature)]);
        let mut conn = self.redis.clone();
        let verdict: u8 = self
            .script
            .key(revoked)
            .key(used)
            .arg(2 * self.settings.max_recv_window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|err| {
                // Fail closed: a signature that cannot be proven unused is not accepted.
                tracing::error!(error = %err, "cannot check signed requests for replays");
                Problem::unavailable(
                    "dependency_unavailable",
                    "signed requests cannot be checked right now",
                    1,
                )
            })?;
        match verdict {
            0 => Ok(()),
            2 => {
                self.forget(key_id);
                Err(refused("api_key_revoked", "this API key was revoked"))
            }
            _ => Err(refused(
                "replayed_request",
                "this signature was already used; sign each request anew",
            )),
        }
    }
}

fn refused(code: &str, detail: &str) -> Problem {
    tracing::info!(code, "signed request refused");
    metrics::counter!("gateway_signed_requests_refused_total", "code" => code.to_owned())
        .increment(1);
    Problem::new(StatusCode::UNAUTHORIZED, code, detail)
}

fn unavailable() -> Problem {
    Problem::unavailable(
        "auth_unavailable",
        "API keys cannot be checked right now",
        1,
    )
}

/// 32 bytes from 64 hex digits (either case).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_reach_reads_orders_and_withdrawals_only() {
        assert_eq!(scope_for(&Method::GET, "/v1/balances"), Some(Scope::Read));
        assert_eq!(
            scope_for(&Method::GET, "/v1/orders/{id}"),
            Some(Scope::Read)
        );
        assert_eq!(scope_for(&Method::POST, "/v1/orders"), Some(Scope::Trade));
        assert_eq!(
            scope_for(&Method::DELETE, "/v1/orders/{id}"),
            Some(Scope::Trade)
        );
        assert_eq!(
            scope_for(&Method::POST, "/v1/admin/withdrawals"),
            Some(Scope::Withdraw)
        );
        assert_eq!(scope_for(&Method::POST, "/v1/api-keys"), None);
        assert_eq!(scope_for(&Method::GET, "/v1/api-keys"), None);
        assert_eq!(scope_for(&Method::GET, "/v1/auth/me"), None);
        assert_eq!(scope_for(&Method::GET, "/v1/admin/alerts"), None);
        assert_eq!(scope_for(&Method::POST, "/v1/admin/deposits"), None);
    }

    #[test]
    fn signatures_are_64_hex_digits() {
        let hex = "00ff".repeat(16);
        assert_eq!(decode_hex(&hex).map(|b| encode_hex(&b)), Some(hex));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
    }
}
