//! TLS (SEC-13): HTTPS listeners, mutual TLS between services, TLS to PostgreSQL and Redis, and
//! what `BOURSE_TLS_REQUIRED` refuses.
//!
//! A service's place in the internal PKI is three files:
//! - `BOURSE_TLS_CERT` / `BOURSE_TLS_KEY`: its certificate chain and private key (PEM). With
//!   them its listener speaks HTTPS, and it presents them when it calls another service.
//! - `BOURSE_TLS_CA`: the CA that signs service certificates. With it, service listeners ask
//!   every client for a certificate signed by that CA and refuse the handshake without one
//!   (mTLS), and service clients trust that CA only — not the public web's roots.
//!
//! The gateway's public listener is HTTPS with its own certificate (`BOURSE_GATEWAY_TLS_*`,
//! usually from a public CA) and never asks browsers for one. mTLS says *which deployment* a
//! caller belongs to; *which service* it is, and what it may do, is still the service token's
//! job (SEC-14). Databases: PostgreSQL's TLS is the URL's (`sslmode=verify-full&sslrootcert=`),
//! Redis's is a `rediss://` URL, verified against `BOURSE_REDIS_TLS_CA` when set.
//!
//! Files are read and parsed while the configuration is read, so a missing or malformed file
//! is reported with every other problem (OPS-01). Private keys are held as secrets.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::Env;

#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// A certificate chain and its private key, read from PEM files.
#[derive(Clone)]
pub struct Identity {
    cert_path: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: SecretString,
}

/// Paths only: the key never reaches a log.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Both variables or neither; each file must hold what its name says.
    pub fn read(env: &mut Env, cert_variable: &str, key_variable: &str) -> Option<Self> {
        match (
            path_setting(env, cert_variable),
            path_setting(env, key_variable),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                env.problem(key_variable, format!("is required with {cert_variable}"));
                None
            }
            (None, Some(_)) => {
                env.problem(cert_variable, format!("is required with {key_variable}"));
                None
            }
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read_certificates(env, cert_variable, &cert_path)?;
                let key_pem = match std::fs::read_to_string(&key_path) {
                    Ok(text) => SecretString::from(text),
                    Err(err) => {
                        env.problem(
                            key_variable,
                            format!("cannot read {}: {}", key_path.display(), err.kind()),
                        );
                        return None;
                    }
                };
                if PrivateKeyDer::from_pem_slice(key_pem.expose_secret().as_bytes()).is_err() {
                    env.problem(
                        key_variable,
                        format!("{} holds no PEM private key", key_path.display()),
                    );
                    return None;
                }
                Some(Self {
                    cert_path,
                    cert_pem,
                    key_pem,
                })
            }
        }
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.cert_pem)
            .filter_map(Result::ok)
            .collect()
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.expose_secret().as_bytes())
            .map_err(|e| TlsError(format!("private key: {e}")))
    }
}

/// Reads a PEM file that must hold at least one certificate; records the problem otherwise.
fn read_certificates(env: &mut Env, variable: &str, path: &Path) -> Option<Vec<u8>> {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(err) => {
            env.problem(
                variable,
                format!("cannot read {}: {}", path.display(), err.kind()),
            );
            return None;
        }
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    if certificates == 0 {
        env.problem(
            variable,
            format!("{} holds no PEM certificate", path.display()),
        );
        return None;
    }
    Some(pem)
}

/// The process's TLS settings, shared by every service it runs.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// This service's certificate: served on its listener, presented to the services it calls.
    pub identity: Option<Identity>,
    /// PEM of the CA that signs service certificates (mTLS).
    ca_pem: Option<Vec<u8>>,
    /// PEM of the CA Redis's certificate is verified against (`rediss://`); system roots when unset.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// Refuse plaintext anywhere: listeners, upstream URLs, PostgreSQL, Redis, trace export.
    pub required: bool,
}

impl TlsSettings {
    /// Reads the settings; with `BOURSE_TLS_REQUIRED=true`, also checks that the connection
    /// strings ask for TLS (their values never appear in a problem).
    pub fn read(env: &mut Env, database_url: &SecretString, redis_url: &SecretString) -> Self {
        let settings = Self::read_files(env);
        if settings.required {
            let url = database_url.expose_secret();
            if !postgres_url_requires_tls(url) && !postgres_url_stays_on_host(url) {
                env.problem(
                    "DATABASE_URL",
                    "must set sslmode=verify-full (or verify-ca, require), or connect over a Unix \
                     socket (host=/path/to/socket/dir), when BOURSE_TLS_REQUIRED=true",
                );
            }
            if !redis_url.expose_secret().starts_with("rediss://") {
                env.problem(
                    "REDIS_URL",
                    "must be a rediss:// URL when BOURSE_TLS_REQUIRED=true",
                );
            }
        }
        settings
    }

    /// The certificates and the TLS-required switch alone: what a process that only calls a
    /// service needs (`bourse probe`, the container healthcheck under mTLS).
    pub fn read_files(env: &mut Env) -> Self {
        let identity = Identity::read(env, "BOURSE_TLS_CERT", "BOURSE_TLS_KEY");
        let ca_pem = path_setting(env, "BOURSE_TLS_CA")
            .and_then(|path| read_certificates(env, "BOURSE_TLS_CA", &path));
        if ca_pem.is_some() && identity.is_none() {
            env.problem(
                "BOURSE_TLS_CA",
                "needs BOURSE_TLS_CERT and BOURSE_TLS_KEY: under mTLS a service presents its own certificate",
            );
        }
        let redis_ca_pem = path_setting(env, "BOURSE_REDIS_TLS_CA")
            .and_then(|path| read_certificates(env, "BOURSE_REDIS_TLS_CA", &path));
        let required = env.or("BOURSE_TLS_REQUIRED", false);
        if required {
            let why = "is required when BOURSE_TLS_REQUIRED=true";
            if identity.is_none() {
                env.problem("BOURSE_TLS_CERT", why);
            }
            if ca_pem.is_none() {
                env.problem("BOURSE_TLS_CA", why);
            }
        }
        Self {
            identity,
            ca_pem,
            redis_ca_pem,
            required,
        }
    }

    /// `https` when services listen with TLS, for the URLs one service gives another.
    pub fn scheme(&self) -> &'static str {
        if self.identity.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether `url` (one base URL or several, [`crate::http::base_urls`]) is acceptable
    /// under these settings: anything, unless TLS is required.
    pub fn allows_url(&self, url: &str) -> bool {
        !self.required || crate::http::base_urls::all_https(url)
    }

    /// A service listener: HTTPS with this service's certificate, and a client certificate
    /// signed by the CA required when one is configured. `None`: plaintext.
    pub fn service_listener(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        server_config(identity, self.ca_pem.as_deref()).map(Some)
    }

    /// A public listener: HTTPS with `identity` (or this service's certificate), never asking
    /// clients for one. `None`: plaintext.
    pub fn public_listener(
        &self,
        identity: Option<&Identity>,
    ) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        match identity.or(self.identity.as_ref()) {
            Some(identity) => server_config(identity, None).map(Some),
            None => Ok(None),
        }
    }

    /// An HTTP client for calls to other services: it trusts the service CA only and presents
    /// this service's certificate. Without a CA, the platform's roots (a public or mesh CA).
    pub fn service_client(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| TlsError(format!("service CA: {}", e.without_url())))?;
            builder = builder.tls_certs_only(roots);
        }
        if let Some(identity) = &self.identity {
            let mut pem = identity.cert_pem.clone();
            pem.push(b'\n');
            pem.extend_from_slice(identity.key_pem.expose_secret().as_bytes());
            let client_identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| TlsError(format!("service certificate: {}", e.without_url())))?;
            builder = builder.identity(client_identity);
        }
        Ok(builder)
    }
}

fn path_setting(env: &mut Env, variable: &str) -> Option<PathBuf> {
    let path: String = env.or(variable, String::new());
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// One crypto provider for everything, the one reqwest uses (docs/development.md).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    identity: &Identity,
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let failed = |what: &str, e: &dyn fmt::Display| TlsError(format!("{what}: {e}"));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("protocol versions", &e))?;
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            let (_, unparsable) = roots.add_parsable_certificates(
                CertificateDer::pem_slice_iter(pem).filter_map(Result::ok),
            );
            if roots.is_empty() || unparsable > 0 {
                return Err(TlsError(
                    "the client CA holds an unusable certificate".into(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| failed("client verifier", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain(), identity.key()?)
        .map_err(|e| failed("certificate", &e))?;
    // HTTP/1.1 only: the routers are built for it, and WebSocket upgrades need it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How sqlx will reach PostgreSQL for this URL, read by sqlx's own parser (with the `PG*`
/// environment variables it falls back on), so the checks below cannot disagree with the
/// driver about a parameter's spelling, its percent-encoding or which of two hosts wins. A URL
/// it cannot parse is refused here and reported when the pool connects.
fn postgres_link(url: &str) -> Option<PgConnectOptions> {
    url.parse().ok()
}

/// Whether a PostgreSQL URL insists on TLS: `sslmode` of require, verify-ca or verify-full.
/// (libpq's default, `prefer`, falls back to plaintext.)
fn postgres_url_requires_tls(url: &str) -> bool {
    postgres_link(url).is_some_and(|link| {
        matches!(
            link.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        )
    })
}

/// Whether a PostgreSQL URL connects over a Unix socket (a `host` that is a directory, as a
/// parameter or percent-encoded in the URL's authority; sqlx then uses the socket whatever other
/// host is named). Such a link never leaves the machine, so there is no network for TLS to
/// protect; the socket file's permissions and the server's `peer` authentication guard it
/// instead (ADR 0012's addendum).
fn postgres_url_stays_on_host(url: &str) -> bool {
    postgres_link(url)
        .is_some_and(|link| link.get_socket().is_some() || link.get_host().starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rule` holds for every URL of `holds` and for none of `fails`.
    fn assert_rule(rule: fn(&str) -> bool, holds: &[&str], fails: &[&str]) {
        for url in holds {
            assert!(rule(url), "should hold for {url}");
        }
        for url in fails {
            assert!(!rule(url), "should not hold for {url}");
        }
    }

    #[test]
    fn a_unix_socket_counts_as_staying_on_the_host_and_a_network_host_does_not() {
        assert_rule(
            postgres_url_stays_on_host,
            &[
                "postgres://u@localhost/x?host=/var/run/postgresql",
                "postgres://u@db/x?application_name=a&host=/tmp",
                "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
                // sqlx connects to the socket once one is named, whatever host comes after it.
                "postgres://u@db/x?host=/var/run/postgresql&host=db.internal",
            ],
            &[
                "postgres://u@db/x",
                "postgres://u@db/x?host=db.internal",
                "postgres://u@db/x?application_name=host=/tmp",
                "not a url",
            ],
        );
    }

    /// Reads the settings with `BOURSE_TLS_REQUIRED=true` and no certificates: the settings,
    /// the problems found and the variables they name.
    fn read_with_tls_required(
        database: &str,
        redis: &str,
    ) -> (TlsSettings, crate::config::ConfigError, Vec<String>) {
        let mut env = Env::from_pairs([("BOURSE_TLS_REQUIRED", "true")]);
        let settings = TlsSettings::read(
            &mut env,
            &SecretString::from(database.to_owned()),
            &SecretString::from(redis.to_owned()),
        );
        let err = env.finish().expect_err("no certificates given");
        let variables = err.problems.iter().map(|p| p.variable.clone()).collect();
        (settings, err, variables)
    }

    #[test]
    fn required_tls_accepts_a_database_over_a_unix_socket() {
        let (_, _, variables) = read_with_tls_required(
            "postgres://u@localhost/x?host=/var/run/postgresql",
            "rediss://cache",
        );
        assert_eq!(variables, ["BOURSE_TLS_CERT", "BOURSE_TLS_CA"]);
    }

    #[test]
    fn only_tls_modes_that_cannot_fall_back_count_as_required() {
        assert_rule(
            postgres_url_requires_tls,
            &[
                "postgres://u@db/x?sslmode=verify-full&sslrootcert=/ca.pem",
                "postgres://u@db/x?application_name=a&sslmode=require",
            ],
            &[
                "postgres://u@db/x?sslmode=prefer",
                "postgres://u@db/x?sslmode=disable",
            ],
        );
        // A URL that names no mode leaves it to `PGSSLMODE`, as the driver does (`prefer` when
        // unset): the rule follows the environment the test runs in, rather than assuming one.
        let environment_requires = matches!(
            std::env::var("PGSSLMODE").as_deref(),
            Ok("require" | "verify-ca" | "verify-full")
        );
        for url in [
            "postgres://u@db/x",
            "postgres://u@db/x?application_name=sslmode=require",
        ] {
            assert_eq!(
                postgres_url_requires_tls(url),
                environment_requires,
                "{url}"
            );
        }
    }

    #[test]
    fn required_tls_refuses_every_plaintext_link_without_echoing_urls() {
        let (settings, err, variables) = read_with_tls_required(
            "postgres://u:hunter2@db/x?sslmode=prefer",
            "redis://:hunter2@cache",
        );
        assert!(settings.required && !settings.allows_url("http://orders:8082"));
        assert!(settings.allows_url("https://orders:8082"));
        assert!(!settings.allows_url("https://orders-a:8082,http://orders-b:8082"));
        assert_eq!(
            variables,
            [
                "BOURSE_TLS_CERT",
                "BOURSE_TLS_CA",
                "DATABASE_URL",
                "REDIS_URL"
            ]
        );
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn missing_or_malformed_files_are_configuration_problems() {
        let dir = std::env::temp_dir().join(format!("bourse-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let not_pem = not_pem.display().to_string();
        let mut env = Env::from_pairs([
            ("BOURSE_TLS_CERT", not_pem.as_str()),
            ("BOURSE_TLS_KEY", "/nonexistent/key.pem"),
            ("BOURSE_REDIS_TLS_CA", not_pem.as_str()),
        ]);
        let empty = SecretString::from(String::new());
        let settings = TlsSettings::read(&mut env, &empty, &empty);
        assert!(settings.identity.is_none() && settings.scheme() == "http");
        let err = env.finish().expect_err("bad files");
        let variables: Vec<_> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(variables, ["BOURSE_TLS_CERT", "BOURSE_REDIS_TLS_CA"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
