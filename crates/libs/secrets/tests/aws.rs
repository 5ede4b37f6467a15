//! AWS Secrets Manager and KMS through the real SDK against moto on loopback (installed by
//! `.ci/run`): read, cached, rotated and seen without a restart; KMS-encrypted settings opened
//! at start; failures name the reference and never a value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use secrets::provider::SecretProvider;
use secrets::testing::Moto;
use secrets::{Error, ExposeSecret, MasterKeys, Providers, Reference, Secrets};

/// The SDK configuration an operator's tooling would use against the same server.
async fn sdk_config(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

fn providers(moto: &Moto) -> Arc<Providers> {
    Arc::new(
        Providers::new(None)
            .unwrap()
            .with_aws(Some(moto.settings())),
    )
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

#[tokio::test]
async fn a_secrets_manager_secret_is_cached_and_its_rotation_is_seen_without_a_restart() {
    let moto = Moto::start().await;
    let store = aws_sdk_secretsmanager::Client::new(&sdk_config(&moto).await);
    store
        .create_secret()
        .name("bourse/db")
        .secret_string(r#"{"password":"first-password","port":5432}"#)
        .send()
        .await
        .unwrap();
    let secrets = Secrets::new(providers(&moto), Duration::from_secs(3600));
    let password = reference("aws-sm:bourse/db#password");

    let mut watched = secrets.watch(&password).await.unwrap();
    assert_eq!(watched.borrow().expose_secret(), "first-password");
    // A non-string value is its JSON.
    let port = secrets
        .get(&reference("aws-sm:bourse/db#port"))
        .await
        .unwrap();
    assert_eq!(port.expose_secret(), "5432");

    // Rotated in Secrets Manager (a new current version): cached until refreshed…
    store
        .put_secret_value()
        .secret_id("bourse/db")
        .secret_string(r#"{"password":"second-password"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        secrets.get(&password).await.unwrap().expose_secret(),
        "first-password"
    );
    // …then every watcher is told, without a restart.
    secrets::testing::rotation_seen(&secrets, &mut watched).await;
    assert_eq!(watched.borrow().expose_secret(), "second-password");
}

#[tokio::test]
async fn missing_secrets_and_keys_are_clear_errors_that_never_show_a_value() {
    let moto = Moto::start().await;
    let store = aws_sdk_secretsmanager::Client::new(&sdk_config(&moto).await);
    store
        .create_secret()
        .name("bourse/api")
        .secret_string(r#"{"token":"s3cr3t-value"}"#)
        .send()
        .await
        .unwrap();
    store
        .create_secret()
        .name("bourse/plain")
        .secret_string("s3cr3t-not-json")
        .send()
        .await
        .unwrap();
    let providers = providers(&moto);

    let missing = providers
        .fetch(&reference("aws-sm:bourse/nothing#token"))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
    assert_eq!(
        missing.to_string(),
        "aws-sm:bourse/nothing#token: not found"
    );
    let no_key = providers
        .fetch(&reference("aws-sm:bourse/api#password"))
        .await
        .unwrap_err();
    assert!(matches!(no_key, Error::NotFound { .. }));
    let not_json = providers
        .fetch(&reference("aws-sm:bourse/plain#token"))
        .await
        .unwrap_err();
    for err in [&missing, &no_key, &not_json] {
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    // Without AWS settings the reference says what is missing.
    let unconfigured = Providers::new(None)
        .unwrap()
        .fetch(&reference("aws-sm:bourse/api#token"))
        .await
        .unwrap_err();
    assert!(matches!(unconfigured, Error::NotConfigured { .. }));
}

#[tokio::test]
async fn master_keys_encrypted_under_kms_are_opened_at_start_and_only_by_kms() {
    let moto = Moto::start().await;
    let kms = aws_sdk_kms::Client::new(&sdk_config(&moto).await);
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    // An operator encrypts the master keys once (`aws kms encrypt`) and ships the ciphertext.
    let master_keys = format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let encrypted = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(master_keys.as_bytes()))
        .send()
        .await
        .unwrap();
    let ciphertext = base64::engine::general_purpose::STANDARD
        .encode(encrypted.ciphertext_blob().unwrap().as_ref());

    let vars = |value: String| {
        vec![
            ("BOURSE_MASTER_KEYS".to_owned(), value),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("BOURSE_AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned()),
        ]
    };
    let resolved = secrets::settings::resolve(vars(format!("aws-kms:{ciphertext}")))
        .await
        .unwrap();
    let opened = &resolved
        .vars
        .iter()
        .find(|(name, _)| name == "BOURSE_MASTER_KEYS")
        .unwrap()
        .1;
    assert_eq!(opened, &master_keys);
    let keys = MasterKeys::parse(&opened.clone().into()).unwrap();
    assert_eq!(keys.current(), 1);

    // A ciphertext KMS did not make (or that was altered) opens nothing, and says which setting.
    let mut forged = encrypted.ciphertext_blob().unwrap().as_ref().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = base64::engine::general_purpose::STANDARD.encode(forged);
    let Err(problems) = secrets::settings::resolve(vars(format!("aws-kms:{forged}"))).await else {
        panic!("an altered ciphertext was opened");
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "BOURSE_MASTER_KEYS");
    assert!(!problems[0].1.contains(&master_keys));
}
