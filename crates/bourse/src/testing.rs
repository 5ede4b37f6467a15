//! The platform as tests start it, compiled only with the `testing` feature (enabled by test
//! crates' dev-dependencies, never in a release build): one environment for every suite that
//! runs `serve all` in-process — the api tests, the load generator's invariant run.

#![allow(clippy::expect_used)]

use sqlx::PgPool;

/// A file of the repository (README, deploy files, docs), for tests that hold the code to what
/// the repository says.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// `X-Bourse-Signature` for a request signed with an API key's `secret` (docs/api-keys.md):
/// lowercase hex of HMAC-SHA256 over timestamp + METHOD + path-with-query + body.
pub fn api_key_signature(
    secret: &str,
    timestamp: &str,
    method: &str,
    path: &str,
    body: &str,
) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let message = format!("{timestamp}{method}{path}{body}");
    aws_lc_rs::hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The URL of the test database `pool` points at (`#[sqlx::test]` makes one per test).
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    database_url_named(options.get_database().expect("test database has a name"))
}

/// The URL of database `name` on the test server, with the base URL's parameters (`sslmode`).
pub fn database_url_named(name: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set by .cargo/config.toml");
    let (scheme, rest) = base.split_once("://").expect("url has a scheme");
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match base.split_once('?') {
        Some((_, query)) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// The environment every in-process test platform starts from: its own database and Redis
/// prefix, every port 0, cheap argon2 (the OWASP parameters are exercised by the rehash test).
pub fn test_env(pool: &PgPool) -> Vec<(String, String)> {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    [
        ("DATABASE_URL", database_url(pool)),
        ("BOURSE_REDIS_KEY_PREFIX", prefix),
        ("BOURSE_BIND_HOST", "127.0.0.1".to_owned()),
        ("BOURSE_TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        (
            "BOURSE_GATEWAY_CORS_ORIGINS",
            "https://app.example.com".to_owned(),
        ),
        ("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096".to_owned()),
        ("BOURSE_AUTH_ARGON2_ITERATIONS", "1".to_owned()),
        ("BOURSE_DATABASE_MAX_CONNECTIONS", "5".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(any_free_port())
    .collect()
}

/// Every service on a port of the system's choosing (`<SERVICE>_PORT=0`), so parallel tests
/// never collide — derived from [`crate::SERVICES`], so a new service is covered by adding it
/// there.
pub fn any_free_port() -> impl Iterator<Item = (String, String)> {
    crate::SERVICES
        .iter()
        .map(|spec| (spec.service.port_variable.to_owned(), "0".to_owned()))
}
