//! Service tokens by client credentials (SEC-14): a registered service proves itself with its
//! secret and receives a short-lived token for one audience, with the scopes
//! `access::service::GRANTS` gives it there.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};
use crate::signing_keys::Keyring;
use crate::tokens;

/// A service token as issued.
pub struct Issued {
    pub access_token: SecretString,
    pub expires_in: u64,
    pub scope: String,
}

#[derive(Clone)]
pub struct ServiceTokens {
    /// (client, SHA-256 of its secret): comparing digests in constant time reveals neither the
    /// secret nor its length through timing.
    clients: Arc<Vec<(&'static str, Vec<u8>)>>,
    keyring: Arc<Keyring>,
    issuer: String,
    ttl: Duration,
}

fn fingerprint(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

impl ServiceTokens {
    pub fn new(
        clients: &[(&'static str, SecretString)],
        keyring: Arc<Keyring>,
        issuer: String,
        ttl: Duration,
    ) -> Self {
        Self {
            clients: Arc::new(
                clients
                    .iter()
                    .map(|(client, secret)| (*client, fingerprint(secret.expose_secret())))
                    .collect(),
            ),
            keyring,
            issuer,
            ttl,
        }
    }

    #[tracing::instrument(skip_all, fields(client = %client_id, audience = %audience))]
    pub fn issue(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        audience: &str,
    ) -> Result<Issued> {
        let presented = fingerprint(client_secret.expose_secret());
        let known = self.clients.iter().find(|(client, expected)| {
            *client == client_id && verify_slices_are_equal(expected, &presented).is_ok()
        });
        let Some((client, _)) = known else {
            tracing::warn!("service token refused: unknown client or wrong secret");
            return Err(Error::InvalidClient);
        };
        let scope = access::service::scopes(client, audience).ok_or_else(|| {
            tracing::warn!("service token refused: audience not granted");
            Error::AudienceNotGranted {
                client: (*client).to_owned(),
                audience: audience.to_owned(),
            }
        })?;
        let key = self.keyring.active()?;
        let access_token = tokens::sign_service_token(
            &key,
            &self.issuer,
            client,
            audience,
            scope.clone(),
            self.ttl,
        )?;
        Ok(Issued {
            access_token,
            expires_in: self.ttl.as_secs(),
            scope,
        })
    }
}
