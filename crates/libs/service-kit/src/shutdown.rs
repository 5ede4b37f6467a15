//! Graceful shutdown (REL-02).
//!
//! One [`Shutdown`] token per process. SIGTERM or SIGINT triggers it; readiness then answers
//! 503, listeners stop accepting, in-flight requests finish within the grace period, background
//! tasks (owned by the service's [`Supervisor`]) stop within what is left of it, and `main`
//! returns normally (exit 0). A service that cannot go on — a task it cannot work without died —
//! [`Shutdown::fail`]s instead: the same drain, then an error and a non-zero exit, so the
//! orchestrator starts a fresh process.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tasks::Supervisor;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// Why the service failed, when it did (the first reason wins).
    failure: Arc<OnceLock<String>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Stops the service because it cannot work any more: readiness answers 503 `failed`, and
    /// the server's `run` ends with an error naming `reason`.
    pub fn fail(&self, reason: impl Into<String>) {
        let _ = self.failure.set(reason.into());
        self.trigger();
    }

    /// Why the service failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Triggers this token on the first SIGTERM or SIGINT.
    pub fn trigger_on_signals(&self) {
        let token = self.clone();
        // Detached on purpose: it lives as long as the process, holds nothing and can only
        // ever trigger the token; there is no shutdown to wait for it in.
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

/// A socket bound ahead of its service (see `CommonConfig::listener`), handed over once.
#[derive(Clone, Debug)]
pub struct PreBound(Arc<std::sync::Mutex<Option<std::net::TcpListener>>>);

impl PreBound {
    /// Binds `host:port` now (port 0: one the system picks).
    pub fn bind(host: &str, port: u16) -> io::Result<Self> {
        Ok(Self::from(std::net::TcpListener::bind((host, port))?))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self
            .0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .as_ref()
        {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::other("listener already taken")),
        }
    }

    /// The listener, to the first caller.
    fn take(&self) -> Option<std::net::TcpListener> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl From<std::net::TcpListener> for PreBound {
    fn from(listener: std::net::TcpListener) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(listener))))
    }
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
    /// The service's background tasks, waited for after the listener has drained.
    tasks: Option<Supervisor>,
}

impl Server {
    pub async fn bind(
        name: &'static str,
        address: &str,
        router: Router,
        grace: Duration,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(Self::on(name, listener, router, grace))
    }

    /// A service's listener on `bind_host:port`, or the one bound for it beforehand
    /// (`common.listener`); plaintext until [`Server::with_tls`].
    pub async fn listen(
        name: &'static str,
        common: &crate::CommonConfig,
        port: u16,
        router: Router,
    ) -> Result<Self, BindError> {
        let address = format!("{}:{}", common.bind_host, port);
        let bound = match common.listener.as_ref().and_then(PreBound::take) {
            Some(listener) => listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener)),
            None => TcpListener::bind(&address).await,
        };
        let listener = bound.map_err(|source| BindError::Io { address, source })?;
        Ok(Self::on(name, listener, router, common.shutdown_grace))
    }

    fn on(name: &'static str, listener: TcpListener, router: Router, grace: Duration) -> Self {
        Self {
            name,
            listener,
            router,
            grace,
            tls: None,
            tasks: None,
        }
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
        Ok(Self::listen(name, common, port, router)
            .await?
            .with_tls(tls))
    }

    /// Serves HTTPS with `tls` (from [`crate::tls::TlsSettings`]); `None` keeps plaintext.
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// Waits for `tasks` when stopping, within what is left of the grace period, and fails
    /// `run` when the supervisor failed the service.
    pub fn with_tasks(mut self, tasks: Supervisor) -> Self {
        self.tasks = Some(tasks);
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then lets in-flight requests finish and background tasks stop,
    /// for at most the grace period in all. An error when the service failed
    /// ([`Shutdown::fail`]).
    pub async fn run(mut self, shutdown: Shutdown) -> io::Result<()> {
        let address = self.local_addr()?;
        tracing::info!(service = self.name, %address, tls = self.tls.is_some(), "listening");
        let (name, grace, tasks) = (self.name, self.grace, self.tasks.take());
        // The grace period counts from the moment shutdown starts: tasks stop while the
        // listener drains, and together they get no more than the grace period.
        let deadline = async {
            shutdown.triggered().await;
            tokio::time::Instant::now() + grace
        };
        let served = async {
            let served = match self.tls.clone() {
                Some(tls) => self.run_tls(tls, shutdown.clone()).await,
                None => self.run_plain(shutdown.clone()).await,
            };
            // A listener that ended on its own ends the service: its tasks stop too.
            shutdown.trigger();
            served
        };
        let (served, deadline) = tokio::join!(served, deadline);
        served?;
        if let Some(tasks) = tasks
            && !tasks.wait_until(deadline).await
        {
            tracing::warn!(
                service = name,
                "grace period over; background tasks left running"
            );
        }
        tracing::info!(service = name, "stopped");
        match shutdown.failure() {
            Some(reason) => Err(io::Error::other(format!("{name} failed: {reason}"))),
            None => Ok(()),
        }
    }

    async fn run_plain(self, shutdown: Shutdown) -> io::Result<()> {
        // Callers in this process reach the same router without the socket, while it serves.
        let _in_process = crate::http::in_process::register(
            self.listener.local_addr()?,
            self.router.clone(),
            shutdown.clone(),
        );
        let stop = shutdown.clone();
        // Answers leave at once, never held by Nagle's algorithm for the ACK of what went
        // before (docs/performance.md, "Forty milliseconds a statement").
        let listener = self.listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
            }
        });
        let serve = axum::serve(
            listener,
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
        Ok(())
    }

    /// The same contract over TLS: axum-server does the handshakes (bounded by its handshake
    /// timeout, off the accept loop) and drains within the grace period on shutdown.
    async fn run_tls(self, tls: Arc<rustls::ServerConfig>, shutdown: Shutdown) -> io::Result<()> {
        let handle = axum_server::Handle::new();
        let draining = handle.clone();
        let grace = self.grace;
        let drain = async {
            shutdown.triggered().await;
            draining.graceful_shutdown(Some(grace));
            // Serving ends once drained; this side has nothing more to do.
            std::future::pending::<()>().await;
        };
        // TCP_NODELAY on every accepted connection, as on the plaintext listener.
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
        let serve = axum_server::from_tcp(self.listener.into_std()?)?
            .acceptor(acceptor)
            .handle(handle)
            .serve(
                self.router
                    .into_make_service_with_connect_info::<SocketAddr>(),
            );
        tokio::select! {
            served = serve => served?,
            () = drain => {}
        }
        Ok(())
    }
}
