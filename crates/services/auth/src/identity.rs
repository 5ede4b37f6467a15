//! The use cases of auth: register, log in, refresh, log out, revoke, read and change roles.
//! No HTTP here; handlers translate requests into these calls.

use std::net::IpAddr;
use std::sync::Arc;

use access::Role;
use axum::http::StatusCode;
use secrecy::SecretString;
use service_kit::http::{FieldError, Problem};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::config::TokenSettings;
use crate::error::{Error, Result};
use crate::password::{self, Passwords, Verification};
use crate::signing_keys::Keyring;
use crate::store::{self, UserRow};
use crate::throttle::LoginThrottle;
use crate::tokens;

/// A user as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub roles: Vec<Role>,
}

/// What a successful login or refresh returns.
pub struct TokenPair {
    pub access_token: SecretString,
    pub expires_in: u64,
    pub refresh_token: SecretString,
}

/// Whether registering an existing email should say so. The public endpoint must not (SEC-01);
/// the operator's CLI should.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDuplicate {
    Conceal,
    Report,
}

#[derive(Clone)]
pub struct Identity {
    pool: PgPool,
    passwords: Passwords,
    keyring: Arc<Keyring>,
    throttle: LoginThrottle,
    tokens: TokenSettings,
}

impl Identity {
    pub fn new(
        pool: PgPool,
        passwords: Passwords,
        keyring: Arc<Keyring>,
        throttle: LoginThrottle,
        tokens: TokenSettings,
    ) -> Self {
        Self {
            pool,
            passwords,
            keyring,
            throttle,
            tokens,
        }
    }

    pub async fn register(
        &self,
        email: &str,
        password: &SecretString,
        roles: &[Role],
        on_duplicate: OnDuplicate,
        ip: Option<IpAddr>,
    ) -> Result<UserView> {
        register(
            &self.pool,
            &self.passwords,
            email,
            password,
            roles,
            on_duplicate,
            ip,
        )
        .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &SecretString,
        ip: IpAddr,
    ) -> Result<TokenPair> {
        let email = normalize_email(email);
        self.throttle.check(&email, ip).await?;
        let user = store::user_by_email(&self.pool, &email).await?;
        let verification = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let user = match (verification, user) {
            (Verification::Mismatch, user) | (_, user @ None) => {
                self.throttle.record_failure(&email, ip).await?;
                let mut event = AuditEvent::new("login_failed").ip(ip);
                if let Some(user) = &user {
                    event = event.subject(user.id);
                }
                let mut tx = self.pool.begin().await?;
                audit::append(
                    &mut tx,
                    event.details(serde_json::json!({ "email": email })),
                )
                .await?;
                tx.commit().await?;
                return Err(Error::InvalidCredentials);
            }
            (Verification::MatchNeedsRehash, Some(user)) => {
                self.rehash(&user, password).await;
                user
            }
            (Verification::Match, Some(user)) => user,
        };
        self.throttle.clear_account(&email).await?;
        let mut tx = self.pool.begin().await?;
        let pair = self.issue_pair(&mut tx, &user, Uuid::now_v7()).await?;
        audit::append(
            &mut tx,
            AuditEvent::new("login_succeeded").subject(user.id).ip(ip),
        )
        .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Upgrades a stored hash to the current parameters. A failure only delays the upgrade to
    /// the next login, so it is logged, not returned.
    async fn rehash(&self, user: &UserRow, password: &SecretString) {
        let result = async {
            let hash = self.passwords.hash(password).await?;
            store::update_password_hash(&self.pool, user.id, &hash).await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(user_id = %user.id, "password rehashed with current parameters")
            }
            Err(err) => tracing::warn!(user_id = %user.id, error = %err, "password rehash failed"),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &SecretString, ip: IpAddr) -> Result<TokenPair> {
        let hash = tokens::refresh_token_hash(refresh_token);
        let mut tx = self.pool.begin().await?;
        let Some(token) = store::lock_refresh_token(&mut tx, &hash).await? else {
            return Err(Error::InvalidRefreshToken);
        };
        if token.revoked_at.is_some() {
            return Err(Error::InvalidRefreshToken);
        }
        if token.rotated_at.is_some() {
            // A rotated token presented again: someone holds a copy. End the whole session.
            let revoked = store::revoke_family(&mut tx, token.family_id).await?;
            audit::append(
                &mut tx,
                AuditEvent::new("refresh_token_reused")
                    .subject(token.user_id)
                    .ip(ip)
                    .details(
                        serde_json::json!({ "family_id": token.family_id, "revoked": revoked }),
                    ),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(user_id = %token.user_id, family_id = %token.family_id, "refresh token reuse; family revoked");
            return Err(Error::InvalidRefreshToken);
        }
        if token.expires_at <= OffsetDateTime::now_utc() {
            return Err(Error::InvalidRefreshToken);
        }
        let user = store::user_by_id(&mut tx, token.user_id)
            .await?
            .ok_or(Error::InvalidRefreshToken)?;
        store::mark_rotated(&mut tx, token.id).await?;
        let pair = self.issue_pair(&mut tx, &user, token.family_id).await?;
        tx.commit().await?;
        Ok(pair)
    }

    async fn issue_pair(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
        family_id: Uuid,
    ) -> Result<TokenPair> {
        let refresh_token = tokens::new_refresh_token()?;
        store::insert_refresh_token(
            conn,
            family_id,
            user.id,
            &tokens::refresh_token_hash(&refresh_token),
            self.tokens.refresh_ttl,
        )
        .await?;
        let key = self.keyring.active()?;
        let access_token =
            tokens::sign_access_token(&key, &self.tokens, user.id, parse_roles(&user.roles), None)?;
        Ok(TokenPair {
            access_token,
            expires_in: self.tokens.access_ttl.as_secs(),
            refresh_token,
        })
    }

    /// Ends the session the refresh token belongs to. Answers the same whether or not the token
    /// was the caller's, so it cannot be used to probe tokens.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn logout(&self, user_id: Uuid, refresh_token: &SecretString) -> Result<()> {
        let hash = tokens::refresh_token_hash(refresh_token);
        let mut tx = self.pool.begin().await?;
        if let Some(token) = store::lock_refresh_token(&mut tx, &hash).await?
            && token.user_id == user_id
        {
            store::revoke_family(&mut tx, token.family_id).await?;
            audit::append(
                &mut tx,
                AuditEvent::new("logout").subject(user_id).actor(user_id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn revoke_all_sessions(&self, user_id: Uuid) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let revoked = store::revoke_user_tokens(&mut tx, user_id).await?;
        audit::append(
            &mut tx,
            AuditEvent::new("sessions_revoked")
                .subject(user_id)
                .actor(user_id)
                .details(serde_json::json!({ "revoked": revoked })),
        )
        .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn user(&self, user_id: Uuid) -> Result<UserView> {
        let mut conn = self.pool.acquire().await?;
        store::user_by_id(&mut conn, user_id)
            .await?
            .map(view)
            .ok_or(Error::UserNotFound)
    }

    #[tracing::instrument(skip_all, fields(actor = %actor, user_id = %user_id))]
    pub async fn set_roles(&self, actor: Uuid, user_id: Uuid, roles: &[Role]) -> Result<UserView> {
        if roles.is_empty() {
            return Err(Error::Validation(vec![FieldError {
                field: "roles".to_owned(),
                message: "at least one role is required".to_owned(),
            }]));
        }
        let mut tx = self.pool.begin().await?;
        let user = store::lock_user(&mut tx, user_id)
            .await?
            .ok_or(Error::UserNotFound)?;
        let names = role_names(roles);
        store::set_roles(&mut tx, user_id, &names).await?;
        audit::append(
            &mut tx,
            AuditEvent::new("roles_changed")
                .actor(actor)
                .subject(user_id)
                .details(serde_json::json!({ "from": user.roles, "to": names })),
        )
        .await?;
        tx.commit().await?;
        Ok(UserView {
            id: user.id,
            email: user.email,
            roles: parse_roles(&names),
        })
    }
}

/// Creates an account. Used by the public endpoint (concealing duplicates) and by the operator
/// CLI (reporting them).
#[tracing::instrument(skip_all)]
pub async fn register(
    pool: &PgPool,
    passwords: &Passwords,
    email: &str,
    password: &SecretString,
    roles: &[Role],
    on_duplicate: OnDuplicate,
    ip: Option<IpAddr>,
) -> Result<UserView> {
    // Checked as given, so what the API document's pattern accepts is exactly what passes.
    let mut errors = check_email(email);
    let email = normalize_email(email);
    errors.extend(password::check_policy(&email, password));
    if roles.is_empty() {
        errors.push(FieldError {
            field: "roles".to_owned(),
            message: "at least one role is required".to_owned(),
        });
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    // Hash before looking at the table, so a taken email costs the same time as a new one.
    let hash = passwords.hash(password).await?;
    let id = Uuid::now_v7();
    let role_names = role_names(roles);
    let mut tx = pool.begin().await?;
    let inserted = store::insert_user(&mut tx, id, &email, &hash, &role_names).await?;
    let mut event = if inserted {
        AuditEvent::new("user_registered")
            .subject(id)
            .details(serde_json::json!({ "email": email, "roles": role_names }))
    } else {
        AuditEvent::new("registration_for_existing_email")
            .details(serde_json::json!({ "email": email }))
    };
    if let Some(ip) = ip {
        event = event.ip(ip);
    }
    audit::append(&mut tx, event).await?;
    tx.commit().await?;
    if inserted {
        tracing::info!(user_id = %id, "user registered");
    } else if on_duplicate == OnDuplicate::Report {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "email_taken",
            "a user with this email exists",
        )
        .into());
    }
    // For a taken email the public answer looks exactly like a success (see ADR 0003): the
    // id is fresh and unused, and nothing about the existing account is revealed.
    Ok(UserView {
        id,
        email,
        roles: roles.to_vec(),
    })
}

fn view(row: UserRow) -> UserView {
    UserView {
        roles: parse_roles(&row.roles),
        id: row.id,
        email: row.email,
    }
}

fn role_names(roles: &[Role]) -> Vec<String> {
    let mut names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

pub(crate) fn parse_roles(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A deliberately modest check: one `@`, something on each side, a dot in the domain, no
/// spaces or control characters, at most 254 bytes. Deliverability is the mailer's business.
fn check_email(email: &str) -> Vec<FieldError> {
    let valid = email.chars().count() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Vec::new()
    } else {
        vec![FieldError {
            field: "email".to_owned(),
            message: "must be a valid email address".to_owned(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("  Alice@Example.COM "), "alice@example.com");
        assert!(check_email("alice@example.com").is_empty());
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "a@b@c.com",
            "alice@.com",
        ] {
            assert_eq!(check_email(bad).len(), 1, "{bad}");
        }
    }
}
