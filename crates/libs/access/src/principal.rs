//! The authenticated caller, as handlers see it.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use service_kit::http::Problem;
use uuid::Uuid;

use crate::roles::Role;
use crate::verifier::{TokenVerifier, VerifyError};

/// A verified caller. Taking it as a handler argument makes the route authenticated; calling
/// [`Principal::require_any`] makes it role-guarded.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
    /// The API key the request was signed with, if it was (its `key_id`).
    pub api_key: Option<String>,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Ok when the caller holds at least one of `roles`; otherwise 403.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.iter().any(|role| self.has(*role)) {
            Ok(())
        } else {
            Err(Problem::forbidden("your role does not allow this"))
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl From<VerifyError> for Problem {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::KeysUnavailable(_) => {
                tracing::error!(error = %err, "cannot verify tokens");
                Problem::unavailable("auth_unavailable", "tokens cannot be verified right now", 5)
            }
            VerifyError::Missing => Problem::unauthorized("a bearer token is required"),
            other => {
                tracing::info!(reason = %other, "token refused");
                Problem::unauthorized("the token is invalid or expired")
            }
        }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let token = bearer_token(parts).ok_or(VerifyError::Missing)?;
        let verifier = Arc::<TokenVerifier>::from_ref(state);
        let claims = verifier.verify(token).await?;
        let principal = Principal {
            user_id: claims.sub,
            roles: claims.roles,
            api_key: claims.api_key,
        };
        let span = tracing::Span::current();
        span.record("principal", tracing::field::display(principal.user_id));
        if let Some(key_id) = &principal.api_key {
            span.record("api_key", tracing::field::display(key_id));
        }
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}
