//! Field encryption (SEC-12): AES-256-GCM envelope encryption.
//!
//! Each value gets its own random data key; the value is sealed with it, and the data key is
//! sealed ("wrapped") with the current master key. What is stored is one ASCII string:
//!
//! ```text
//! bse1.<master key version>.<base64(nonce ‖ wrapped data key)>.<base64(nonce ‖ ciphertext)>
//! ```
//!
//! - The master key version travels with the ciphertext, so after a rotation old values still
//!   open with the old key, and [`MasterKeys::needs_rewrap`] says which to re-seal (lazily on
//!   read, or all at once by a command).
//! - The caller's *context* (e.g. `alerting.channels.secret:<channel id>`) is authenticated
//!   data of both layers: a ciphertext copied to another row or column does not open.
//! - Any change to any byte fails authentication: tampering is an error, never garbage.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use secrecy::{ExposeSecret, SecretBox, SecretString};

const PREFIX: &str = "bse1";
const KEY_LEN: usize = 32;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("master keys: {0}")]
    Keys(String),
    #[error("not a sealed value")]
    NotSealed,
    #[error("sealed with master key version {0}, which is not configured")]
    UnknownKey(u32),
    #[error("the sealed value does not authenticate (tampered, or another context)")]
    Tampered,
    #[error("the system random generator failed")]
    Random,
}

/// The configured master keys by version; new values are sealed with the highest.
pub struct MasterKeys {
    keys: BTreeMap<u32, SecretBox<[u8; KEY_LEN]>>,
    random: SystemRandom,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<&u32> = self.keys.keys().collect();
        f.debug_struct("MasterKeys")
            .field("versions", &versions)
            .finish()
    }
}

impl MasterKeys {
    /// `1:<base64 of 32 bytes>,2:<…>`: every version still needed to open old values.
    pub fn parse(text: &SecretString) -> Result<Self, EnvelopeError> {
        let mut keys = BTreeMap::new();
        for entry in text.expose_secret().split(',').map(str::trim) {
            let (version, key) = entry
                .split_once(':')
                .ok_or_else(|| EnvelopeError::Keys("expected VERSION:BASE64,…".to_owned()))?;
            let version: u32 = version
                .parse()
                .map_err(|_| EnvelopeError::Keys(format!("{version:?} is not a version")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| EnvelopeError::Keys(format!("key {version} is not base64")))?;
            let key: [u8; KEY_LEN] = bytes
                .try_into()
                .map_err(|_| EnvelopeError::Keys(format!("key {version} is not 32 bytes")))?;
            if keys
                .insert(version, SecretBox::new(Box::new(key)))
                .is_some()
            {
                return Err(EnvelopeError::Keys(format!(
                    "version {version} given twice"
                )));
            }
        }
        if keys.is_empty() {
            return Err(EnvelopeError::Keys("no key".to_owned()));
        }
        Ok(Self {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// The version new values are sealed with.
    pub fn current(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    fn key(&self, version: u32) -> Result<&SecretBox<[u8; KEY_LEN]>, EnvelopeError> {
        self.keys
            .get(&version)
            .ok_or(EnvelopeError::UnknownKey(version))
    }

    /// Seals `plaintext` for `context` under the current master key.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, EnvelopeError> {
        let mut data_key = [0u8; KEY_LEN];
        self.random
            .fill(&mut data_key)
            .map_err(|_| EnvelopeError::Random)?;
        let version = self.current();
        let wrapped = self.encrypt(self.key(version)?.expose_secret(), &data_key, context)?;
        let sealed = self.encrypt(&data_key, plaintext.as_bytes(), context)?;
        Ok(format!(
            "{PREFIX}.{version}.{}.{}",
            BASE64.encode(wrapped),
            BASE64.encode(sealed)
        ))
    }

    /// Opens a value sealed for `context` by [`Self::seal`], with whichever master key sealed it.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretString, EnvelopeError> {
        let (version, wrapped, ciphertext) = parts(sealed)?;
        let data_key = decrypt(self.key(version)?.expose_secret(), wrapped, context)?;
        let data_key: [u8; KEY_LEN] = data_key.try_into().map_err(|_| EnvelopeError::Tampered)?;
        let plaintext = decrypt(&data_key, ciphertext, context)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| EnvelopeError::Tampered)
    }

    /// Whether a stored value should be re-sealed: it is plaintext from before encryption,
    /// or sealed under an older master key.
    pub fn needs_rewrap(&self, stored: &str) -> bool {
        parts(stored).map_or(true, |(version, _, _)| version != self.current())
    }

    fn encrypt(
        &self,
        key: &[u8; KEY_LEN],
        plaintext: &[u8],
        context: &str,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| EnvelopeError::Random)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| EnvelopeError::Random)?,
        );
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buffer,
        )
        .map_err(|_| EnvelopeError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(out)
    }
}

/// (master key version, wrapped data key, ciphertext) of a sealed value.
fn parts(sealed: &str) -> Result<(u32, Vec<u8>, Vec<u8>), EnvelopeError> {
    let mut fields = sealed.split('.');
    if fields.next() != Some(PREFIX) {
        return Err(EnvelopeError::NotSealed);
    }
    let (Some(version), Some(wrapped), Some(ciphertext), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(EnvelopeError::NotSealed);
    };
    let decode = |text: &str| BASE64.decode(text).map_err(|_| EnvelopeError::Tampered);
    Ok((
        version.parse().map_err(|_| EnvelopeError::NotSealed)?,
        decode(wrapped)?,
        decode(ciphertext)?,
    ))
}

fn decrypt(key: &[u8], sealed: Vec<u8>, context: &str) -> Result<Vec<u8>, EnvelopeError> {
    if sealed.len() < NONCE_LEN {
        return Err(EnvelopeError::Tampered);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Tampered)?;
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| EnvelopeError::Tampered)?);
    let mut buffer = ciphertext.to_vec();
    let plaintext = key
        .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
        .map_err(|_| EnvelopeError::Tampered)?;
    Ok(plaintext.to_vec())
}

/// A development master key, so that `bourse serve all` runs with no setup. Production
/// refuses to start without `BOURSE_MASTER_KEYS`.
const DEVELOPMENT_KEY: &[u8; KEY_LEN] = b"bourse-development-master-key-01";

/// `BOURSE_MASTER_KEYS` (`VERSION:BASE64,…`), read by every service that seals fields.
pub fn read_master_keys(
    env: &mut service_kit::Env,
    production: bool,
) -> std::sync::Arc<MasterKeys> {
    let development = format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(DEVELOPMENT_KEY)
    );
    let text = env.secret(
        "BOURSE_MASTER_KEYS",
        (!production).then_some(development.as_str()),
    );
    let parsed = MasterKeys::parse(&text).unwrap_or_else(|err| {
        // A missing value was reported as required already.
        if !text.expose_secret().is_empty() {
            env.problem("BOURSE_MASTER_KEYS", err.to_string());
        }
        #[allow(clippy::expect_used)] // start-up: the development key is a constant that parses
        MasterKeys::parse(&SecretString::from(development)).expect("the development key parses")
    });
    std::sync::Arc::new(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys(versions: &[(u32, u8)]) -> MasterKeys {
        let text: Vec<String> = versions
            .iter()
            .map(|(v, fill)| {
                format!(
                    "{v}:{}",
                    base64::engine::general_purpose::STANDARD.encode([*fill; KEY_LEN])
                )
            })
            .collect();
        MasterKeys::parse(&SecretString::from(text.join(","))).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_in_its_context_only() {
        let keys = keys(&[(1, 7)]);
        let sealed = keys
            .seal("hooks.slack.com/T0/B0/token", "channels.target:a")
            .unwrap();
        assert!(sealed.starts_with("bse1.1.") && !sealed.contains("token"));
        assert_eq!(
            keys.open(&sealed, "channels.target:a")
                .unwrap()
                .expose_secret(),
            "hooks.slack.com/T0/B0/token"
        );
        assert_eq!(
            keys.open(&sealed, "channels.target:b").unwrap_err(),
            EnvelopeError::Tampered,
            "copied to another row"
        );
        // Two seals of one value differ (fresh data key and nonces).
        assert_ne!(
            sealed,
            keys.seal("hooks.slack.com/T0/B0/token", "channels.target:a")
                .unwrap()
        );
    }

    #[test]
    fn tampering_with_any_part_is_refused() {
        let keys = keys(&[(1, 7)]);
        let sealed = keys.seal("secret", "ctx").unwrap();
        for i in 7..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            if tampered == sealed {
                continue;
            }
            assert!(
                keys.open(&tampered, "ctx").is_err(),
                "byte {i} changed and still opened"
            );
        }
        assert_eq!(
            keys.open("plain text", "ctx").unwrap_err(),
            EnvelopeError::NotSealed
        );
    }

    #[test]
    fn after_a_rotation_old_values_open_and_ask_to_be_resealed() {
        let before = keys(&[(1, 7)]);
        let old = before.seal("value", "ctx").unwrap();
        let after = keys(&[(1, 7), (2, 9)]);
        assert_eq!(after.current(), 2);
        assert_eq!(after.open(&old, "ctx").unwrap().expose_secret(), "value");
        assert!(after.needs_rewrap(&old));
        let new = after.seal("value", "ctx").unwrap();
        assert!(new.starts_with("bse1.2.") && !after.needs_rewrap(&new));
        assert!(after.needs_rewrap("legacy plaintext"));
        // Retiring key 1 before re-sealing strands the old value, loudly.
        let retired = keys(&[(2, 9)]);
        assert_eq!(
            retired.open(&old, "ctx").unwrap_err(),
            EnvelopeError::UnknownKey(1)
        );
    }

    #[test]
    fn master_keys_are_checked_and_never_printed() {
        for bad in ["", "1", "x:AAAA", "1:not-base64!", "1:AAAA"] {
            assert!(
                MasterKeys::parse(&SecretString::from(bad.to_owned())).is_err(),
                "{bad}"
            );
        }
        let keys = keys(&[(1, 7), (3, 8)]);
        assert_eq!(format!("{keys:?}"), "MasterKeys { versions: [1, 3] }");
    }
}
