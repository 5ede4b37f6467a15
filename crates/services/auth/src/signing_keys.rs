//! Ed25519 signing keys: creation, rotation with an overlap window, and the published JWKS.
//!
//! The newest unretired key signs. Rotation retires it and creates a successor in one
//! transaction; the retired key stays in the JWKS until every token it signed has expired, so
//! no client notices. Every replica reloads the keyring periodically and on demand, so keys
//! persist across restarts and a rotation done by the CLI reaches running processes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::future::BoxFuture;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use secrets::{ExposeSecret, MasterKeys};
use sqlx::PgPool;

use crate::audit::{self, AuditEvent};
use crate::error::{Error, Result};
use crate::store::{self, SigningKeyRow};

/// A freshly generated key pair, before it is stored.
pub struct NewSigningKey {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
}

pub fn generate() -> Result<NewSigningKey> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| Error::Internal("cannot generate an Ed25519 key".to_owned()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| Error::Internal("generated key does not parse".to_owned()))?;
    Ok(NewSigningKey {
        kid: uuid::Uuid::now_v7().to_string(),
        private_pkcs8: pkcs8.as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
    })
}

/// The private half as stored: PKCS#8 in base64, sealed for this key's row (SEC-12).
fn seal(keys: &MasterKeys, kid: &str, private_pkcs8: &[u8]) -> Result<Vec<u8>> {
    keys.seal(&STANDARD.encode(private_pkcs8), &context(kid))
        .map(String::into_bytes)
        .map_err(|e| Error::Internal(format!("sealing signing key {kid}: {e}")))
}

fn context(kid: &str) -> String {
    format!("auth.signing_keys.private_key:{kid}")
}

/// The private half (PKCS#8 DER) from what is stored: sealed, or raw from before encryption.
pub fn open(keys: &MasterKeys, kid: &str, stored: &[u8]) -> Result<Vec<u8>> {
    let Some(sealed) = stored
        .starts_with(b"bse1.")
        .then(|| std::str::from_utf8(stored).ok())
        .flatten()
    else {
        return Ok(stored.to_vec());
    };
    let encoded = keys
        .open(sealed, &context(kid))
        .map_err(|e| Error::Internal(format!("signing key {kid} cannot be opened: {e}")))?;
    STANDARD
        .decode(encoded.expose_secret())
        .map_err(|_| Error::Internal(format!("signing key {kid} is not base64")))
}

/// Re-seals every stored private key that is raw or under an older master key; run at start
/// and by `bourse admin reencrypt`. Returns how many.
pub async fn reseal(pool: &PgPool, keys: &MasterKeys) -> Result<u64> {
    let mut resealed = 0;
    for (kid, stored) in store::signing_key_secrets(pool).await? {
        let stale = std::str::from_utf8(&stored).map_or(true, |s| keys.needs_rewrap(s));
        if stale {
            let private = open(keys, &kid, &stored)?;
            store::replace_signing_key_secret(pool, &kid, &seal(keys, &kid, &private)?).await?;
            resealed += 1;
        }
    }
    Ok(resealed)
}

/// Retires the signing key (if any) and makes a new one; returns the new `kid`.
pub async fn rotate(pool: &PgPool, keys: &MasterKeys) -> Result<String> {
    let key = generate()?;
    let sealed = seal(keys, &key.kid, &key.private_pkcs8)?;
    let mut tx = pool.begin().await?;
    store::retire_active_signing_key(&mut tx).await?;
    store::insert_signing_key(&mut tx, &key, &sealed).await?;
    audit::append(
        &mut tx,
        AuditEvent::new("signing_key_rotated").details(serde_json::json!({ "kid": key.kid })),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(kid = %key.kid, "signing key rotated");
    Ok(key.kid)
}

/// The key that signs new tokens.
pub struct ActiveKey {
    pub kid: String,
    pub encoding: EncodingKey,
}

/// The keys this replica signs with and publishes, reloaded from the database.
pub struct Keyring {
    pool: PgPool,
    /// The private halves are stored sealed with these.
    master_keys: Arc<MasterKeys>,
    /// Retired keys stay published this long: the access-token lifetime plus clock leeway.
    overlap: Duration,
    state: RwLock<(Option<Arc<ActiveKey>>, JwkSet)>,
}

impl Keyring {
    pub fn new(pool: PgPool, overlap: Duration, master_keys: Arc<MasterKeys>) -> Self {
        Self {
            pool,
            master_keys,
            overlap,
            state: RwLock::new((None, JwkSet { keys: Vec::new() })),
        }
    }

    /// Reads the keys again. Call at start-up and periodically.
    pub async fn reload(&self) -> Result<()> {
        let rows = store::published_signing_keys(&self.pool, self.overlap).await?;
        let active = rows
            .iter()
            .find(|row| row.retired_at.is_none())
            .map(|row| active_key(&self.master_keys, row))
            .transpose()?;
        let set = JwkSet {
            keys: rows.iter().map(jwk).collect(),
        };
        if let Ok(mut state) = self.state.write() {
            *state = (active.map(Arc::new), set);
        }
        Ok(())
    }

    pub fn active(&self) -> Result<Arc<ActiveKey>> {
        self.state
            .read()
            .ok()
            .and_then(|state| state.0.clone())
            .ok_or(Error::NoSigningKey)
    }

    pub fn jwks(&self) -> JwkSet {
        self.state
            .read()
            .map(|state| state.1.clone())
            .unwrap_or(JwkSet { keys: Vec::new() })
    }

    /// Makes sure a signing key exists: generates one when allowed (development), refuses
    /// otherwise (production must provision keys explicitly).
    pub async fn ensure_active(&self, may_generate: bool) -> Result<()> {
        self.reload().await?;
        if self.active().is_ok() {
            return Ok(());
        }
        if !may_generate {
            return Err(Error::NoSigningKey);
        }
        // Two replicas starting together may both try; the unique index lets one win, and the
        // loser finds the winner's key on reload.
        let created = rotate(&self.pool, &self.master_keys).await;
        self.reload().await?;
        match (created, self.active()) {
            (_, Ok(_)) => Ok(()),
            (Err(err), Err(_)) => Err(err),
            (Ok(_), Err(err)) => Err(err),
        }
    }

    /// Reloads every `period` until shutdown.
    pub async fn refresh_until(self: Arc<Self>, period: Duration, shutdown: service_kit::Shutdown) {
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(err) = self.reload().await {
                        tracing::warn!(error = %err, "signing keys reload failed; keeping the current ones");
                    }
                }
                () = shutdown.triggered() => break,
            }
        }
    }
}

/// Auth verifies its own tokens from the same keyring, reloading on an unknown `kid`.
impl access::KeySource for Keyring {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        Box::pin(async move {
            self.reload().await.map_err(|e| e.to_string())?;
            Ok(self.jwks())
        })
    }
}

fn active_key(keys: &MasterKeys, row: &SigningKeyRow) -> Result<ActiveKey> {
    Ok(ActiveKey {
        kid: row.kid.clone(),
        encoding: EncodingKey::from_ed_der(&open(keys, &row.kid, &row.private_key)?),
    })
}

fn jwk(row: &SigningKeyRow) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(row.kid.clone()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(&row.public_key),
        }),
    }
}
