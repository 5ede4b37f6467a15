//! TLS (SEC-13): a deployment that requires it runs end to end over TLS — HTTPS at the gateway,
//! mTLS between the services, TLS to PostgreSQL and to Redis — and refuses any plaintext link.
//! Certificates come from `tools/tls/dev-ca.sh`, the script developers use.

use bourse::Target;
use reqwest::StatusCode;
use serde_json::json;
use service_kit::Env;
use service_kit::testing::eventually;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::helpers::{DevCertificates, count, database_url, dev_certificates, spawn_app_with};

/// A real Redis that speaks only TLS, on a free loopback port, with the development
/// certificates (client certificates not asked for: Redis's password is its authentication).
struct TlsRedis {
    url: String,
    _server: Child,
}

async fn tls_redis(certificates: &DevCertificates) -> TlsRedis {
    let port = service_kit::testing::free_port();
    let server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .args(["--tls-cert-file", &certificates.cert])
        .args(["--tls-key-file", &certificates.key])
        .args(["--tls-ca-cert-file", &certificates.ca])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts (installed by .ci/run)");
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = std::fs::read(&certificates.ca).unwrap();
    eventually("the TLS Redis to answer", || async {
        match service_kit::redis::connect_url(&url.clone().into(), Some(&ca)).await {
            Ok(mut redis) => redis::cmd("PING")
                .query_async::<String>(&mut redis)
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    TlsRedis {
        url,
        _server: server,
    }
}

#[sqlx::test(migrations = false)]
async fn a_deployment_that_requires_tls_trades_end_to_end_over_it(pool: PgPool) {
    let certificates = dev_certificates();
    let redis = tls_redis(&certificates).await;
    let database = format!(
        "{}?sslmode=require",
        database_url(&pool).split('?').next().unwrap()
    );
    let mut settings = certificates.settings().to_vec();
    settings.extend([
        ("BOURSE_TLS_REQUIRED", "true"),
        ("DATABASE_URL", database.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("BOURSE_REDIS_TLS_CA", certificates.ca.as_str()),
    ]);
    let app = spawn_app_with(pool, &settings).await;
    assert!(app.gateway.starts_with("https://") && app.orders.starts_with("https://"));

    // An order through the gateway reaches orders, which asks risk and settlement (service
    // tokens from auth) — every hop over mTLS — and the trade settles through TLS Redis.
    let (_admin, alice, bob) = app.funded_market().await;
    let order = |side: &str| {
        json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
                "quantity": "0.5", "time_in_force": "gtc" })
    };
    app.placed_order(&alice, &order("sell")).await;
    app.placed_order(&bob, &order("buy")).await;
    eventually("the trade to settle", || async {
        count(&app.db, "SELECT count(*) FROM settlement.settled_trades").await == 1
    })
    .await;

    // Each service's database sessions are encrypted.
    for service in ["auth", "orders", "settlement", "risk", "alerting"] {
        let plaintext = count(
            &app.db,
            &format!(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = '{service}'
                   AND NOT s.ssl"
            ),
        )
        .await;
        let encrypted = count(
            &app.db,
            &format!(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = '{service}'
                   AND s.ssl"
            ),
        )
        .await;
        assert!(
            encrypted >= 1 && plaintext == 0,
            "{service}: {encrypted} TLS, {plaintext} plaintext"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn services_refuse_callers_without_a_certificate_from_their_ca(pool: PgPool) {
    let certificates = dev_certificates();
    let app = spawn_app_with(pool, &certificates.settings()).await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certificates.ca).unwrap()).unwrap();
    let health = |base: &str| format!("{base}/health/live");

    // A caller that trusts the CA but has no certificate: the handshake is refused.
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    for service in [&app.auth, &app.orders, &app.settlement, &app.risk] {
        let refused = anonymous.get(health(service)).send().await;
        assert!(
            refused.is_err(),
            "{service} answered a caller without a certificate"
        );
    }

    // A certificate from another CA is no better.
    let strangers = dev_certificates();
    let mut stranger_pem = std::fs::read(&strangers.cert).unwrap();
    stranger_pem.extend(std::fs::read(&strangers.key).unwrap());
    let stranger = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .identity(reqwest::Identity::from_pem(&stranger_pem).unwrap())
        .build()
        .unwrap();
    assert!(stranger.get(health(&app.orders)).send().await.is_err());

    // Plaintext HTTP gets no answer at all.
    let plaintext = app.orders.replace("https://", "http://");
    let answered = reqwest::get(health(&plaintext))
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(!answered, "orders answered plaintext");

    // With the deployment's certificate the same call passes.
    let ok = app.client.get(health(&app.orders)).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // The container healthcheck, `bourse probe`, calls as the service it runs beside: with the
    // deployment's settings it passes, without them it is refused like any stranger.
    let probe = |settings: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bourse"));
        command
            .args(["probe", &health(&app.orders)])
            .env_remove("BOURSE_TLS_CERT")
            .env_remove("BOURSE_TLS_KEY")
            .env_remove("BOURSE_TLS_CA")
            .envs(settings.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        async move { command.status().await.unwrap().success() }
    };
    assert!(
        probe(&certificates.settings()).await,
        "probe with the certificate"
    );
    assert!(!probe(&[]).await, "probe without one");

    // The gateway is public: HTTPS, and no certificate asked of browsers.
    let public = anonymous.get(health(&app.gateway)).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::OK);
}

#[test]
fn required_tls_refuses_to_plan_with_any_plaintext_link() {
    let certificates = dev_certificates();
    let vars: Vec<(String, String)> = [
        ("BOURSE_TLS_REQUIRED", "true"),
        ("BOURSE_TLS_CERT", certificates.cert.as_str()),
        ("BOURSE_TLS_KEY", certificates.key.as_str()),
        ("BOURSE_TLS_CA", certificates.ca.as_str()),
        (
            "DATABASE_URL",
            "postgres://bourse:hunter2@db/bourse?sslmode=prefer",
        ),
        ("REDIS_URL", "redis://:hunter2@cache:6379"),
        ("BOURSE_AUTH_URL", "http://auth:8081"),
        ("BOURSE_SETTLEMENT_URL", "https://settlement:8084"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    // Orders alone calls auth (plaintext given), settlement (https) and risk (not given: the
    // default is plaintext loopback).
    let problems = match bourse::plan(&[Target::Orders], Env::from_pairs(vars)) {
        Ok(_) => panic!("plaintext links were accepted"),
        Err(err) => err,
    };
    let mut variables: Vec<_> = problems
        .problems
        .iter()
        .map(|p| p.variable.clone())
        .collect();
    variables.sort();
    assert_eq!(
        variables,
        [
            "BOURSE_AUTH_URL",
            "BOURSE_RISK_URL",
            "DATABASE_URL",
            "REDIS_URL"
        ]
    );
    assert!(!problems.to_string().contains("hunter2"));
}

/// The development certificate takes its names from compose's services (a service added there
/// is named too): every service of the platform must be among them, as compose calls it.
#[test]
fn the_development_certificate_names_every_service() {
    let certificates = dev_certificates();
    let names = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&certificates.cert)
        .output()
        .expect("openssl runs");
    let names = String::from_utf8_lossy(&names.stdout);
    for spec in &bourse::SERVICES {
        let name = format!("DNS:{}", spec.service.name);
        assert!(
            names.split([',', ' ', '\n']).any(|n| n == name),
            "{name} missing from {names}"
        );
    }
    assert!(names.contains("DNS:localhost") && names.contains("IP Address:127.0.0.1"));
}
