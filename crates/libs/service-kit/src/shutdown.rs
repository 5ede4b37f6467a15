//! Graceful shutdown (REL-02).
//!
//! One [`Shutdown`] token per process. SIGTERM or SIGINT triggers it; readiness then answers
//! 503, listeners stop accepting, in-flight requests finish within the grace period, background
//! tasks watching the token stop, and `main` returns normally (exit 0).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// Triggers this token on the first SIGTERM or SIGINT.
    pub fn trigger_on_signals(&self) {
        let token = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            token.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("binding {address}: {source}")]
    Io { address: String, source: io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A bound listener and the router it serves. Binding is separate from running so callers
/// (tests, `serve all`) learn the real address of a `:0` listener before traffic starts.
pub struct Server {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    grace: Duration,
    /// HTTPS (and mTLS, when the config verifies clients) instead of plaintext (SEC-13).
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    pub async fn bind(
        name: &'static str,
        address: &str,
        router: Router,
        grace: Duration,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(Self {
            name,
            listener,
            router,
            grace,
            tls: None,
        })
    }

    /// A service's listener on `bind_host:port`: HTTPS with mTLS when `common.tls` has a
    /// certificate and a CA, plaintext without one (SEC-13).
    pub async fn for_service(
        name: &'static str,
        common: &crate::CommonConfig,
        port: u16,
        router: Router,
    ) -> Result<Self, BindError> {
        let tls = common.tls.service_listener()?;
        let address = format!("{}:{}", common.bind_host, port);
        let server = Self::bind(name, &address, router, common.shutdown_grace)
            .await
            .map_err(|source| BindError::Io { address, source })?;
        Ok(server.with_tls(tls))
    }

    /// Serves HTTPS with `tls` (from [`crate::tls::TlsSettings`]); `None` keeps plaintext.
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then lets in-flight requests finish for at most the grace period.
    pub async fn run(self, shutdown: Shutdown) -> io::Result<()> {
        let address = self.local_addr()?;
        tracing::info!(service = self.name, %address, tls = self.tls.is_some(), "listening");
        if let Some(tls) = self.tls.clone() {
            return self.run_tls(tls, shutdown).await;
        }
        let stop = shutdown.clone();
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.triggered().await });
        let grace = self.grace;
        let deadline = async {
            shutdown.triggered().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = serve => result?,
            () = deadline => {
                tracing::warn!(service = self.name, grace_ms = grace.as_millis() as u64,
                    "grace period over; dropping unfinished connections");
            }
        }
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }

    /// The same contract over TLS: axum-server does the handshakes (bounded by its handshake
    /// timeout, off the accept loop) and drains within the grace period on shutdown.
    async fn run_tls(self, tls: Arc<rustls::ServerConfig>, shutdown: Shutdown) -> io::Result<()> {
        let handle = axum_server::Handle::new();
        let draining = handle.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            shutdown.triggered().await;
            draining.graceful_shutdown(Some(grace));
        });
        axum_server::from_tcp_rustls(
            self.listener.into_std()?,
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )?
        .handle(handle)
        .serve(
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await?;
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}
