//! Calls between services of one process without the loopback socket.
//!
//! `bourse serve all` runs every service in one process, and each still calls the others by
//! URL (orders → risk, orders → settlement, gateway → everyone). Over loopback HTTP every call
//! pays twice for the kernel's TCP stack and for HTTP framing on both sides — on a two-core
//! machine a large share of an order's CPU. So a plaintext [`crate::Server`] registers its
//! router here under the addresses it can be reached at, for as long as it accepts
//! connections, and a client in the same process (`resilience::Upstream`) hands a request for
//! such an address straight to the router.
//!
//! The router is the one the socket serves — the whole middleware stack (request id, trace,
//! access log, metrics, timeout, panic guard, body limit) and the routes' own authentication
//! (service tokens) run as they would over HTTP; the client keeps its own resilience (timeout,
//! breaker, bulkhead, retries). What is skipped is only the transport, so a server with TLS
//! does not register: mTLS stays a property of the connection. Separate processes never see
//! each other here and keep real HTTP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock, RwLock};

use axum::Router;
use axum::extract::ConnectInfo;

use crate::Shutdown;

/// The routers of this process's plaintext servers, by `host:port` authority.
static SERVERS: LazyLock<RwLock<HashMap<String, Entry>>> = LazyLock::new(Default::default);

#[derive(Clone)]
struct Entry {
    router: Router,
    /// The server's shutdown: from the moment it begins, the server takes no new requests —
    /// over its socket or from here.
    shutdown: Shutdown,
    /// Which registration this is (a later server may reuse the address).
    id: Arc<()>,
}

/// Marks a request that came in-process rather than over a socket (for tests and logs).
#[derive(Clone, Copy, Debug)]
pub struct InProcess;

/// A router registered under some addresses; deregistered when dropped.
#[must_use = "the registration ends when this is dropped"]
pub struct Registration {
    authorities: Vec<String>,
    id: Arc<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut servers) = SERVERS.write() {
            for authority in &self.authorities {
                // Only our own entry: the address may have been taken over since.
                if servers
                    .get(authority)
                    .is_some_and(|e| Arc::ptr_eq(&e.id, &self.id))
                {
                    servers.remove(authority);
                }
            }
        }
    }
}

/// Registers `router`, served on `address`, until the returned guard is dropped or `shutdown`
/// begins. A server bound to every interface is reached in-process through loopback names.
pub fn register(address: SocketAddr, router: Router, shutdown: Shutdown) -> Registration {
    let port = address.port();
    let authorities = if address.ip().is_unspecified() {
        vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")]
    } else {
        vec![address.to_string()]
    };
    let id = Arc::new(());
    if let Ok(mut servers) = SERVERS.write() {
        for authority in &authorities {
            servers.insert(
                authority.clone(),
                Entry {
                    router: router.clone(),
                    shutdown: shutdown.clone(),
                    id: id.clone(),
                },
            );
        }
    }
    Registration { authorities, id }
}

/// The router serving `authority` (`host:port`) in this process, while it takes requests.
pub fn router_for(authority: &str) -> Option<Router> {
    let servers = SERVERS.read().ok()?;
    let entry = servers.get(authority)?;
    (!entry.shutdown.is_triggered()).then(|| entry.router.clone())
}

/// What a socket would have given the request: the peer address (loopback, as for a call over
/// the loopback interface) and the [`InProcess`] mark.
pub fn prepare(request: &mut axum::extract::Request) {
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    request.extensions_mut().insert(ConnectInfo(peer));
    request.extensions_mut().insert(InProcess);
}
