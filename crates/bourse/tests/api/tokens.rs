//! Access-token attacks (SEC-03) and signing-key rotation.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The signing key auth is using, read the way an insider with database access *and* the
/// master key would (the database alone holds it sealed).
async fn active_key(app: &TestApp) -> (String, Vec<u8>) {
    let (kid, stored): (String, Vec<u8>) =
        sqlx::query_as("SELECT kid, private_key FROM auth.signing_keys WHERE retired_at IS NULL")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let private = auth::signing_keys::open(&crate::helpers::master_keys(), &kid, &stored).unwrap();
    (kid, private)
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": "bourse-auth", "aud": "bourse", "sub": sub,
        "exp": now() + 600, "nbf": now() - 1, "iat": now(), "jti": Uuid::now_v7(), "roles": ["trader"]
    })
}

fn sign(kid: Option<&str>, key: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(key)).unwrap()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[sqlx::test(migrations = false)]
async fn forged_and_stale_tokens_are_refused_at_the_gateway_and_at_auth(pool: PgPool) {
    let app = spawn_app(pool).await;
    let tokens = app.signed_up("mallory@example.com").await;
    let me: Value = app.me(&tokens.access_token).await.json().await.unwrap();
    let sub = me["id"].as_str().unwrap().to_owned();
    let (kid, key) = active_key(&app).await;

    // Control: a token built by the test with the real key and correct claims is accepted, so
    // each refusal below is due to the one thing that was changed.
    let control = sign(Some(&kid), &key, &claims(&sub));
    assert_eq!(app.me(&control).await.status(), StatusCode::OK);

    let with = |field: &str, value: Value| {
        let mut c = claims(&sub);
        c[field] = value;
        sign(Some(&kid), &key, &c)
    };
    let header_b64 = |header: Value| URL_SAFE_NO_PAD.encode(header.to_string());
    let payload_b64 = URL_SAFE_NO_PAD.encode(claims(&sub).to_string());

    let alg_none = format!(
        "{}.{}.",
        header_b64(json!({"alg": "none", "typ": "JWT", "kid": kid})),
        payload_b64
    );
    // HS256 "signed" with the public key: the classic key-confusion attack.
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims(&sub),
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    let unknown_key = {
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        sign(Some("not-a-real-kid"), pkcs8.as_ref(), &claims(&sub))
    };
    let tampered = {
        let parts: Vec<&str> = control.split('.').collect();
        let mut escalated = claims(&sub);
        escalated["roles"] = json!(["admin"]);
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(escalated.to_string()),
            parts[2]
        )
    };

    let attacks = [
        ("alg=none", alg_none),
        ("HS256 with the public key", hs256),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("expired", with("exp", json!(now() - 3600))),
        ("not yet valid", with("nbf", json!(now() + 3600))),
        ("unknown kid", unknown_key),
        ("no kid", sign(None, &key, &claims(&sub))),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in &attacks {
        for base in [&app.gateway, &app.auth] {
            let response = app
                .client
                .get(format!("{base}/v1/auth/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{name} via {base}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "unauthenticated", "{name}");
        }
    }
    let missing = app.client.get(app.url("/v1/auth/me")).send().await.unwrap();
    assert_problem(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[sqlx::test(migrations = false)]
async fn the_jwks_publishes_ed25519_keys_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].is_string());
    assert!(key.get("d").is_none(), "never the private part");
}

#[sqlx::test(migrations = false)]
async fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_AUTH_SIGNING_KEY_RELOAD_MS", "50"),
            ("BOURSE_GATEWAY_JWKS_MIN_REFRESH_MS", "0"),
        ],
    )
    .await;
    let before = app.signed_up("rotator@example.com").await;
    let old_kid = kid_of(&before.access_token);

    // The operator rotates (what `bourse admin rotate-signing-key` does).
    let auth_pool = crate::helpers::auth_pool(&app).await;
    let new_kid = auth::signing_keys::rotate(&auth_pool, &crate::helpers::master_keys())
        .await
        .unwrap();
    assert_ne!(new_kid, old_kid);

    // Auth replicas pick the new key up on their next reload; wait for that event, bounded.
    let login = || async {
        app.login("rotator@example.com", crate::helpers::PASSWORD)
            .await
            .json::<crate::helpers::Tokens>()
            .await
            .unwrap()
    };
    eventually("auth to sign with the new key", || async {
        kid_of(&login().await.access_token) == new_kid
    })
    .await;
    let after = login().await;

    assert_eq!(
        app.me(&before.access_token).await.status(),
        StatusCode::OK,
        "old token still valid"
    );
    assert_eq!(
        app.me(&after.access_token).await.status(),
        StatusCode::OK,
        "new token valid"
    );
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "both published during the overlap"
    );
}

#[sqlx::test(migrations = false)]
async fn production_refuses_to_start_until_a_signing_key_is_provisioned(pool: PgPool) {
    let production_vars = |pool: &PgPool| {
        let mut vars = crate::helpers::base_env(pool);
        vars.extend(
            [
                ("BOURSE_ENV", "production"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("BOURSE_MIGRATE_ON_START", "true"),
                (
                    "BOURSE_SERVICE_SECRET_ORDERS",
                    "a production secret of at least 32 characters",
                ),
                (
                    "BOURSE_SERVICE_SECRET_SETTLEMENT",
                    "another production secret of 32 characters or more",
                ),
                (
                    "BOURSE_SERVICE_SECRET_RISK",
                    "risk's production secret of 32 characters or more",
                ),
                (
                    "BOURSE_SERVICE_SECRET_GATEWAY",
                    "the gateway's production secret, 32 characters or more",
                ),
                (
                    "BOURSE_MASTER_KEYS",
                    "1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        vars
    };
    let production = |pool: &PgPool| {
        bourse::plan(
            &[bourse::Target::Auth],
            service_kit::Env::from_pairs(production_vars(pool)),
        )
        .expect("valid production config")
    };

    let shutdown = service_kit::Shutdown::new();
    match bourse::start(production(&pool), &shutdown).await {
        Ok(_) => panic!("production auth started without a signing key"),
        Err(err) => assert!(err.to_string().contains("no signing key"), "{err}"),
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "production never generates one itself");

    // The operator provisions a key (`bourse admin rotate-signing-key`); now it starts.
    // It seals it with the production master keys, as the services will open it.
    let master_keys =
        auth::Config::read(&mut service_kit::Env::from_pairs(production_vars(&pool))).master_keys;
    auth::signing_keys::rotate(
        &crate::helpers::schema_pool(&pool, "auth").await,
        &master_keys,
    )
    .await
    .unwrap();
    let running = bourse::start(production(&pool), &shutdown)
        .await
        .expect("starts with a key");
    assert!(running.address(bourse::Target::Auth).is_some());
    shutdown.trigger();
    running.wait().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn signing_keys_are_sealed_at_rest(pool: PgPool) {
    let app = crate::helpers::spawn_app(pool).await;
    let tokens = app.signed_up("sealed@example.com").await;
    assert_eq!(app.me(&tokens.access_token).await.status(), 200);

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT private_key FROM auth.signing_keys")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(!stored.is_empty());
    for key in stored {
        // An envelope under master key 1, not PKCS#8 DER (which starts with an ASN.1 SEQUENCE).
        assert!(
            key.starts_with(b"bse1.1."),
            "{:?}",
            &key[..8.min(key.len())]
        );
    }
}
