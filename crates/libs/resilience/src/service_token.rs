//! Service tokens for outbound calls (SEC-14): fetched from auth with this service's client
//! credentials, one per audience, reused until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::CallError;
use crate::upstream::{Call, Upstream};

/// Where a service's tokens come from: auth's `/internal/v1/service-tokens`.
pub struct TokenSource {
    auth: Upstream,
    client: &'static str,
    secret: SecretString,
    cached: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    token: SecretString,
    renew_at: Instant,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    audience: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("auth refused the service credentials ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error(transparent)]
    Unavailable(#[from] CallError),
    #[error("auth answered something that is not a token: {0}")]
    Malformed(String),
}

impl TokenSource {
    /// `auth` is the client for the auth service; `client` and `secret` this service's
    /// credentials (`access::service::client_secret`).
    pub fn new(auth: Upstream, client: &'static str, secret: SecretString) -> Self {
        Self {
            auth,
            client,
            secret,
            cached: Mutex::default(),
        }
    }

    /// The service these tokens are for: the caller of every upstream that uses them.
    pub fn client(&self) -> &'static str {
        self.client
    }

    /// The usual source: auth at `auth_url`, called through an upstream of its own with the
    /// default policy, for service `client` with `secret`.
    pub fn from_auth(
        http: &reqwest::Client,
        auth_url: &str,
        client: &'static str,
        secret: SecretString,
    ) -> Result<Self, String> {
        let auth = Upstream::new(
            client,
            "auth",
            auth_url,
            http.clone(),
            crate::Policy::default(),
        )?;
        Ok(Self::new(auth, client, secret))
    }

    /// A token for calling `audience`: the cached one while it has at least a fifth of its
    /// life left, else a new one.
    pub async fn token(&self, audience: &str) -> Result<SecretString, TokenError> {
        if let Some(token) = self.cached(audience) {
            return Ok(token);
        }
        let body = serde_json::to_vec(&TokenRequest {
            client_id: self.client,
            client_secret: self.secret.expose_secret(),
            audience,
        })
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let requested = Instant::now();
        // Asking for a token twice does no harm: the call may be retried.
        let call = Call::post_json("/internal/v1/service-tokens", body).idempotent(true);
        let response = self.auth.send(call).await?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !status.is_success() {
            return Err(TokenError::Refused {
                status: status.as_u16(),
                detail: text,
            });
        }
        let issued: TokenResponse =
            serde_json::from_str(&text).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let token = SecretString::from(issued.access_token);
        let lifetime = Duration::from_secs(issued.expires_in);
        if let Ok(mut cached) = self.cached.lock() {
            cached.insert(
                audience.to_owned(),
                Cached {
                    token: token.clone(),
                    renew_at: requested + lifetime.mul_f64(0.8),
                },
            );
        }
        Ok(token)
    }

    /// Drops the cached token for `audience` (the upstream refused it: a rotated key, say).
    pub fn forget(&self, audience: &str) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.remove(audience);
        }
    }

    fn cached(&self, audience: &str) -> Option<SecretString> {
        let cached = self.cached.lock().ok()?;
        let entry = cached.get(audience)?;
        (Instant::now() < entry.renew_at).then(|| entry.token.clone())
    }
}
