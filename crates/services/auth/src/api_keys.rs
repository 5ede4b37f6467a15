//! API keys for programs (SEC-19): created, listed and revoked by their owner.
//!
//! A key is a public `key_id` and a secret shown once. Programs sign requests with the secret
//! (HMAC-SHA256), so it is kept sealed with the field-encryption envelope rather than hashed:
//! the verifier must be able to compute the same signature. Revocation is a timestamp, so the
//! key stays on record; every creation and revocation is in the audit chain.
//!
//! The gateway verifies signed requests (`gateway/src/api_keys.rs`): it asks auth once for a
//! key's [`KeyCredential`] — the secret, scopes, networks, and an access token for the owner
//! marked with the key — and keeps it briefly. A revocation writes a marker to Redis before it
//! commits, which every gateway replica checks on every signed request: revoked means refused
//! at once, everywhere, not when a cache expires.

use std::net::IpAddr;

use ipnet::IpNet;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use secrets::MasterKeys;
use serde::{Deserialize, Serialize};
use service_kit::http::FieldError;
use service_kit::redis::KeyPrefix;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::config::TokenSettings;
use crate::error::{Error, Result};
use crate::signing_keys::Keyring;
use crate::{store, tokens};

/// Active keys a user may hold at once: enough for a few programs and a rotation.
pub const MAX_ACTIVE_KEYS: i64 = 10;

/// What a key may do: the type auth stores and the gateway checks.
pub use access::ApiKeyScope as Scope;

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Your label for it, 1-64 characters, not only spaces.
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    pub name: String,
    /// One to three of `read`, `trade`, `withdraw` (a repeat counts once).
    #[schema(min_items = 1, max_items = 3)]
    pub scopes: Vec<Scope>,
    /// Addresses (`192.0.2.7`, `2001:db8::1`) or networks (`10.1.0.0/16`, `2001:db8::/32`) the
    /// key may be used from; any when absent.
    #[schema(min_items = 1, max_items = 16)]
    pub allowed_ips: Option<Vec<String>>,
}

/// A key as listed: never its secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    /// Sent as `X-Bourse-Key` with every signed request.
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Vec<IpNet>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// Signs requests; shown once, keep it like a password.
    #[schema(value_type = String)]
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
}

fn expose<S: serde::Serializer>(
    secret: &SecretString,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// What the gateway needs to verify a key's signed requests and forward them
/// (`GET /internal/v1/api-keys/{key_id}/credential`, service token `auth:api-keys`).
#[derive(Serialize)]
pub struct KeyCredential {
    pub key_id: String,
    pub owner_id: Uuid,
    /// The owner's roles now (the access token carries the same).
    pub roles: Vec<access::Role>,
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    pub scopes: Vec<Scope>,
    pub allowed_ips: Option<Vec<IpNet>>,
    /// An access token for the owner, with the owner's roles and `api_key` set: what the gateway
    /// forwards in place of the signature, so services see a principal as for any token.
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
}

/// Where a revoked key is marked for the gateways: `{prefix}api-keys:revoked:{key_id}`.
pub fn revoked_marker(keys: &KeyPrefix, key_id: &str) -> String {
    keys.key(&["api-keys", "revoked", key_id])
}

/// A marker outlives any gateway's copy of a credential (seconds to a minute) by far.
const REVOKED_MARKER_SECS: u64 = 24 * 3600;

#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
    master_keys: std::sync::Arc<MasterKeys>,
    keyring: std::sync::Arc<Keyring>,
    tokens: TokenSettings,
    redis: ConnectionManager,
    keys: KeyPrefix,
}

impl ApiKeys {
    pub fn new(
        pool: PgPool,
        master_keys: std::sync::Arc<MasterKeys>,
        keyring: std::sync::Arc<Keyring>,
        tokens: TokenSettings,
        redis: ConnectionManager,
        keys: KeyPrefix,
    ) -> Self {
        Self {
            pool,
            master_keys,
            keyring,
            tokens,
            redis,
            keys,
        }
    }

    /// The credential of the active key `key_id`; [`Error::ApiKeyNotFound`] when unknown or
    /// revoked.
    #[tracing::instrument(skip_all, fields(key_id = %key_id))]
    pub async fn credential(&self, key_id: &str) -> Result<KeyCredential> {
        let (owner, key, roles, sealed) = store::active_api_key(&self.pool, key_id)
            .await?
            .ok_or(Error::ApiKeyNotFound)?;
        let secret = self
            .master_keys
            .open(&sealed, &context(&key.key_id))
            .map_err(|e| {
                Error::Internal(format!("API key {} cannot be opened: {e}", key.key_id))
            })?;
        let signing = self.keyring.active()?;
        let roles = crate::identity::parse_roles(&roles);
        let access_token = tokens::sign_access_token(
            &signing,
            &self.tokens,
            owner,
            roles.clone(),
            Some(key.key_id.clone()),
        )?;
        Ok(KeyCredential {
            key_id: key.key_id,
            owner_id: owner,
            roles,
            secret,
            scopes: key.scopes,
            allowed_ips: key.allowed_ips,
            access_token,
            expires_in: self.tokens.access_ttl.as_secs(),
        })
    }

    /// Creates a key for `owner`: 201 with its secret, once.
    #[tracing::instrument(skip_all, fields(user_id = %owner))]
    pub async fn create(
        &self,
        owner: Uuid,
        request: NewApiKey,
        ip: Option<IpAddr>,
    ) -> Result<CreatedApiKey> {
        let (name, scopes, allowed_ips) = validate(&request)?;
        let id = Uuid::now_v7();
        let key_id = format!("bk_{}", tokens::random_url_safe(15)?);
        let secret = SecretString::from(tokens::random_url_safe(32)?);
        let sealed = self
            .master_keys
            .seal(secret.expose_secret(), &context(&key_id))
            .map_err(|e| Error::Internal(format!("sealing an API key: {e}")))?;
        let view = ApiKeyView {
            id,
            key_id,
            name,
            scopes,
            allowed_ips,
            created_at: OffsetDateTime::now_utc(),
            revoked_at: None,
        };
        let mut tx = self.pool.begin().await?;
        // Counted under the owner's lock, so two creations at once cannot pass the limit.
        if store::lock_and_count_active_api_keys(&mut tx, owner).await? >= MAX_ACTIVE_KEYS {
            return Err(Error::Problem(service_kit::http::Problem::new(
                axum::http::StatusCode::CONFLICT,
                "too_many_api_keys",
                format!("at most {MAX_ACTIVE_KEYS} active API keys; revoke one first"),
            )));
        }
        store::insert_api_key(&mut tx, owner, &view, &sealed).await?;
        let mut event = AuditEvent::new("api_key_created")
            .actor(owner)
            .subject(owner)
            .details(serde_json::json!({
                "key_id": view.key_id, "name": view.name,
                "scopes": view.scopes, "allowed_ips": view.allowed_ips,
            }));
        if let Some(ip) = ip {
            event = event.ip(ip);
        }
        audit::append(&mut tx, event).await?;
        tx.commit().await?;
        tracing::info!(key_id = %view.key_id, "API key created");
        Ok(CreatedApiKey { key: view, secret })
    }

    /// `owner`'s keys, newest first, revoked ones included (with when).
    pub async fn list(&self, owner: Uuid) -> Result<Vec<ApiKeyView>> {
        store::api_keys_of(&self.pool, owner).await
    }

    /// Revokes `owner`'s key `id` at once. Another user's key, an unknown or an already revoked
    /// one: 404, the same answer, so ids of other users' keys are not confirmed.
    #[tracing::instrument(skip_all, fields(user_id = %owner, api_key = %id))]
    pub async fn revoke(&self, owner: Uuid, id: Uuid, ip: Option<IpAddr>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let key_id = store::revoke_api_key(&mut tx, owner, id)
            .await?
            .ok_or(Error::ApiKeyNotFound)?;
        // Marked for the gateways before the revocation commits: if the marker cannot be
        // written the revocation rolls back and the owner retries (503); if the commit fails
        // after it, the key is refused a little early, never used a little late.
        let _: () = self
            .redis
            .clone()
            .set_ex(revoked_marker(&self.keys, &key_id), 1, REVOKED_MARKER_SECS)
            .await?;
        let mut event = AuditEvent::new("api_key_revoked")
            .actor(owner)
            .subject(owner)
            .details(serde_json::json!({ "key_id": key_id }));
        if let Some(ip) = ip {
            event = event.ip(ip);
        }
        audit::append(&mut tx, event).await?;
        tx.commit().await?;
        tracing::info!(%key_id, "API key revoked");
        Ok(())
    }
}

/// The envelope's context: a sealed secret opens only as the key it was sealed for.
fn context(key_id: &str) -> String {
    format!("auth.api_keys.secret:{key_id}")
}

/// Re-seals every key's secret stored under an older master key; run at start and by
/// `bourse admin reencrypt`. Returns how many.
pub async fn reseal(pool: &PgPool, keys: &MasterKeys) -> Result<u64> {
    let mut resealed = 0;
    for (id, key_id, sealed) in store::api_key_secrets(pool).await? {
        if keys.needs_rewrap(&sealed) {
            let secret = keys
                .open(&sealed, &context(&key_id))
                .map_err(|e| Error::Internal(format!("API key {key_id} cannot be opened: {e}")))?;
            let again = keys
                .seal(secret.expose_secret(), &context(&key_id))
                .map_err(|e| Error::Internal(format!("sealing API key {key_id}: {e}")))?;
            store::replace_api_key_secret(pool, id, &again).await?;
            resealed += 1;
        }
    }
    Ok(resealed)
}

/// The name trimmed, the scopes once each in order, the networks as stored.
fn validate(request: &NewApiKey) -> Result<(String, Vec<Scope>, Option<Vec<IpNet>>)> {
    let mut errors = Vec::new();
    let name = request.name.trim();
    if name.is_empty() || request.name.chars().count() > 64 {
        errors.push(FieldError {
            field: "name".to_owned(),
            message: "1-64 characters, not only spaces".to_owned(),
        });
    }
    let mut scopes = request.scopes.clone();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() || request.scopes.len() > 3 {
        errors.push(FieldError {
            field: "scopes".to_owned(),
            message: "one to three of read, trade, withdraw".to_owned(),
        });
    }
    let mut allowed_ips = None;
    if let Some(texts) = &request.allowed_ips {
        // A bare address is the network of just that address; stored as PostgreSQL cidr,
        // which keeps no host bits (10.1.2.3/24 is 10.1.2.0/24).
        let parsed: Option<Vec<IpNet>> = texts
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .ok()
                    .map(|network| network.trunc())
            })
            .collect();
        match parsed {
            Some(networks) if (1..=16).contains(&networks.len()) => allowed_ips = Some(networks),
            _ => errors.push(FieldError {
                field: "allowed_ips".to_owned(),
                message: "1-16 IP addresses or CIDR networks, or absent for any".to_owned(),
            }),
        }
    }
    if errors.is_empty() {
        Ok((name.to_owned(), scopes, allowed_ips))
    } else {
        Err(Error::Validation(errors))
    }
}

/// Scopes as stored (text[]) back to their type; anything else is a corrupt row.
pub fn scopes_from_rows(rows: &[String]) -> Result<Vec<Scope>> {
    rows.iter()
        .map(|text| {
            Scope::parse(text)
                .ok_or_else(|| Error::Internal(format!("unknown API key scope {text}")))
        })
        .collect()
}
