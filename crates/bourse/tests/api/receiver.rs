//! A real HTTP receiver on loopback standing in for the third-party services alerts go to
//! (a webhook endpoint, Slack, PagerDuty) and for a service whose health the watch polls.
//! Every request it gets is handed to the test in arrival order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct Shared {
    /// Requests still to be answered 503 before the receiver accepts.
    failures_left: AtomicUsize,
    /// What `/health/ready` says.
    ready: AtomicBool,
    sent: mpsc::UnboundedSender<Received>,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    received: Mutex<mpsc::UnboundedReceiver<Received>>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::failing_first(0).await
    }

    /// A receiver that answers 503 to its first `failures` requests.
    pub async fn failing_first(failures: usize) -> Self {
        let (sent, received) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            failures_left: AtomicUsize::new(failures),
            ready: AtomicBool::new(true),
            sent,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new()
            .route("/health/ready", axum::routing::get(ready))
            .fallback(record)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            shared,
            received: Mutex::new(received),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// The next request received, waited for up to `within`.
    pub async fn next_within(&self, within: Duration) -> Received {
        tokio::time::timeout(within, self.received.lock().await.recv())
            .await
            .expect("a request within the deadline")
            .expect("receiver open")
    }

    /// The next request to `path` (requests to other paths before it are dropped).
    pub async fn next_at(&self, path: &str) -> Received {
        loop {
            let request = self.next_within(Duration::from_secs(20)).await;
            if request.path == path {
                return request;
            }
        }
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> StatusCode {
    if shared.ready.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn record(State(shared): State<Arc<Shared>>, request: Request) -> StatusCode {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let received = Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let _ = shared.sent.send(received);
    let failing = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::ACCEPTED
    }
}
