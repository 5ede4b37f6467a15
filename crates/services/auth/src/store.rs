//! Every SQL statement of the auth service. All parameterized (SEC-17); tables live in the
//! `auth` schema, which is the pool's search path.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use ipnet::IpNet;

use crate::api_keys::{ApiKeyView, scopes_from_rows};
use crate::signing_keys::NewSigningKey;

#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub roles: Vec<String>,
}

/// Inserts a user; `Ok(false)` when the email is taken. The unique constraint decides (no
/// check-then-insert race), and `ON CONFLICT` keeps the transaction usable afterwards, which a
/// caught unique violation would not.
pub async fn insert_user(
    conn: &mut PgConnection,
    id: Uuid,
    email: &str,
    password_hash: &str,
    roles: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, roles) VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT users_email_key DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(roles)
    .execute(conn)
    .await
    .map(|result| result.rows_affected() == 1)
}

pub async fn user_by_email(pool: &PgPool, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, password_hash, roles FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await
}

pub async fn user_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, password_hash, roles FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn lock_user(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, password_hash, roles FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn update_password_hash(
    pool: &PgPool,
    id: Uuid,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(pool)
        .await
        .map(|_| ())
}

pub async fn set_roles(
    conn: &mut PgConnection,
    id: Uuid,
    roles: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET roles = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(roles)
        .execute(conn)
        .await
        .map(|_| ())
}

#[derive(Debug, sqlx::FromRow)]
pub struct RefreshTokenRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub rotated_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    family_id: Uuid,
    user_id: Uuid,
    token_hash: &[u8],
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(Uuid::now_v7())
    .bind(family_id)
    .bind(user_id)
    .bind(token_hash)
    .bind(ttl.as_secs_f64())
    .execute(conn)
    .await
    .map(|_| ())
}

/// The token with this hash, locked for the rest of the transaction so two refreshes with the
/// same token serialize (the second then sees it rotated, i.e. reused).
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, family_id, user_id, expires_at, rotated_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

pub async fn mark_rotated(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn revoke_family(conn: &mut PgConnection, family_id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

pub async fn revoke_user_tokens(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

#[derive(Debug, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub retired_at: Option<OffsetDateTime>,
}

/// The active key and the retired keys still inside the overlap window, newest first.
pub async fn published_signing_keys(
    pool: &PgPool,
    overlap: Duration,
) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, private_key, public_key, retired_at FROM signing_keys
         WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
         ORDER BY created_at DESC",
    )
    .bind(overlap.as_secs_f64())
    .fetch_all(pool)
    .await
}

pub async fn retire_active_signing_key(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
        .execute(conn)
        .await
        .map(|_| ())
}

/// Stores a key; `sealed_private` is its private half as sealed by the caller (SEC-12).
pub async fn insert_signing_key(
    conn: &mut PgConnection,
    key: &NewSigningKey,
    sealed_private: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO signing_keys (kid, private_key, public_key) VALUES ($1, $2, $3)")
        .bind(&key.kid)
        .bind(sealed_private)
        .bind(&key.public_key)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Every key's id and stored private half (sealed, or raw from before encryption).
pub async fn signing_key_secrets(pool: &PgPool) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT kid, private_key FROM signing_keys")
        .fetch_all(pool)
        .await
}

pub async fn replace_signing_key_secret(
    pool: &PgPool,
    kid: &str,
    sealed_private: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET private_key = $2 WHERE kid = $1")
        .bind(kid)
        .bind(sealed_private)
        .execute(pool)
        .await
        .map(|_| ())
}

#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub occurred_at: OffsetDateTime,
    pub event_type: String,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub source_ip: Option<String>,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Serializes appends to the chain for the rest of the transaction.
pub async fn lock_audit_log(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // An arbitrary constant naming "the auth audit chain".
    sqlx::query("SELECT pg_advisory_xact_lock(7368125001)")
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn last_audit_link(
    conn: &mut PgConnection,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await
}

pub async fn insert_audit_row(conn: &mut PgConnection, row: &AuditRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log
           (seq, occurred_at, event_type, actor_id, subject_id, source_ip, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.seq)
    .bind(row.occurred_at)
    .bind(&row.event_type)
    .bind(row.actor_id)
    .bind(row.subject_id)
    .bind(&row.source_ip)
    .bind(&row.details)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn audit_rows(pool: &PgPool) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, occurred_at, event_type, actor_id, subject_id, source_ip, details, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )
    .fetch_all(pool)
    .await
}

// --- API keys ---------------------------------------------------------------------------

/// Takes `owner`'s API-key lock for this transaction and counts their active keys.
pub async fn lock_and_count_active_api_keys(
    conn: &mut PgConnection,
    owner: Uuid,
) -> crate::error::Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('auth.api_keys'), hashtext($1::text))")
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(owner)
    .fetch_one(conn)
    .await?)
}

pub async fn insert_api_key(
    conn: &mut PgConnection,
    owner: Uuid,
    key: &ApiKeyView,
    secret_sealed: &str,
) -> crate::error::Result<()> {
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    let ips: Option<Vec<String>> = key
        .allowed_ips
        .as_ref()
        .map(|ips| ips.iter().map(ToString::to_string).collect());
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, key_id, name, scopes, allowed_ips, secret_sealed, created_at)
         VALUES ($1, $2, $3, $4, $5, $6::cidr[], $7, $8)",
    )
    .bind(key.id)
    .bind(owner)
    .bind(&key.key_id)
    .bind(&key.name)
    .bind(&scopes)
    .bind(ips)
    .bind(secret_sealed)
    .bind(key.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A key as listed: id, key id, name, scopes, networks, created, revoked.
type ApiKeyRow = (
    Uuid,
    String,
    String,
    Vec<String>,
    Option<Vec<String>>,
    OffsetDateTime,
    Option<OffsetDateTime>,
);

fn api_key_view(row: ApiKeyRow) -> crate::error::Result<ApiKeyView> {
    let (id, key_id, name, scopes, ips, created_at, revoked_at) = row;
    let allowed_ips = ips
        .map(|ips| {
            ips.iter()
                .map(|ip| ip.parse::<IpNet>())
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| {
            crate::error::Error::Internal(format!("a stored API key network does not parse: {e}"))
        })?;
    Ok(ApiKeyView {
        id,
        key_id,
        name,
        scopes: scopes_from_rows(&scopes)?,
        allowed_ips,
        created_at,
        revoked_at,
    })
}

/// `owner`'s keys, newest first; never their secrets.
pub async fn api_keys_of(pool: &PgPool, owner: Uuid) -> crate::error::Result<Vec<ApiKeyView>> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(
        "SELECT id, key_id, name, scopes, allowed_ips::text[], created_at, revoked_at
           FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(owner)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(api_key_view).collect()
}

/// An active key by its `key_id`, with its owner's roles and its sealed secret — what signs
/// and authorizes a program's request (SEC-19). None when unknown or revoked.
pub async fn active_api_key(
    pool: &PgPool,
    key_id: &str,
) -> crate::error::Result<Option<(Uuid, ApiKeyView, Vec<String>, String)>> {
    let row: Option<ActiveKeyRow> = sqlx::query_as(
        "SELECT k.user_id, u.roles, k.secret_sealed, k.id, k.key_id, k.name, k.scopes,
                k.allowed_ips::text[] AS allowed_ips, k.created_at, k.revoked_at
           FROM api_keys k JOIN users u ON u.id = k.user_id
          WHERE k.key_id = $1 AND k.revoked_at IS NULL",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let key = (
            r.id,
            r.key_id,
            r.name,
            r.scopes,
            r.allowed_ips,
            r.created_at,
            r.revoked_at,
        );
        Ok((r.user_id, api_key_view(key)?, r.roles, r.secret_sealed))
    })
    .transpose()
}

#[derive(sqlx::FromRow)]
struct ActiveKeyRow {
    user_id: Uuid,
    roles: Vec<String>,
    secret_sealed: String,
    id: Uuid,
    key_id: String,
    name: String,
    scopes: Vec<String>,
    allowed_ips: Option<Vec<String>>,
    created_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
}

/// Revokes `owner`'s active key `id`; its `key_id`, or None when there is no such active key.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    owner: Uuid,
    id: Uuid,
) -> crate::error::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = now()
          WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
          RETURNING key_id",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await?)
}

/// Every key's (id, key_id, sealed secret), for re-sealing.
pub async fn api_key_secrets(pool: &PgPool) -> crate::error::Result<Vec<(Uuid, String, String)>> {
    Ok(
        sqlx::query_as("SELECT id, key_id, secret_sealed FROM api_keys")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn replace_api_key_secret(
    pool: &PgPool,
    id: Uuid,
    sealed: &str,
) -> crate::error::Result<()> {
    sqlx::query("UPDATE api_keys SET secret_sealed = $2 WHERE id = $1")
        .bind(id)
        .bind(sealed)
        .execute(pool)
        .await?;
    Ok(())
}
