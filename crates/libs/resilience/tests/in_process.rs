//! In one process, a call to a service served by that process goes to its router without the
//! socket — through the same middleware, and only while the server takes requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use resilience::{Backoff, BreakerSettings, Call, Policy, Upstream};
use service_kit::http::in_process::InProcess;
use service_kit::{Server, Shutdown};

/// The route says how the request came; a middleware stands for the routes' own
/// authentication (a request without the key never reaches the route).
fn router() -> axum::Router {
    async fn how(request: Request) -> &'static str {
        if request.extensions().get::<InProcess>().is_some() {
            "in-process"
        } else {
            "socket"
        }
    }
    async fn require_key(request: Request, next: Next) -> Response {
        if request.headers().get("x-key").is_some_and(|k| k == "open") {
            next.run(request).await
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    axum::Router::new()
        .route("/how", get(how))
        .layer(from_fn(require_key))
}

fn policy() -> Policy {
    Policy {
        timeout: Duration::from_secs(5),
        retries: 0,
        backoff: Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        },
        max_concurrent: 64,
        breaker: BreakerSettings {
            failure_rate: 1.0,
            slow_call_rate: 1.0,
            slow_call: Duration::from_secs(60),
            window: Duration::from_secs(60),
            minimum_calls: 1000,
            open_for: Duration::from_secs(60),
            half_open_calls: 1,
        },
    }
}

fn with_key() -> Call {
    Call::get("/how").header(
        axum::http::HeaderName::from_static("x-key"),
        axum::http::HeaderValue::from_static("open"),
    )
}

#[tokio::test]
async fn a_service_of_this_process_is_called_through_its_router_while_it_serves() {
    let server = Server::bind("echo", "127.0.0.1:0", router(), Duration::from_secs(1))
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let upstream = Upstream::new("orders", "echo", &url, reqwest::Client::new(), policy()).unwrap();

    // The socket serves the router to everyone (and once it answers, the server is running).
    let over_http = reqwest::Client::new()
        .get(format!("{url}/how"))
        .header("x-key", "open")
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.text().await.unwrap(), "socket");

    // A client in this process skips the socket; the middleware still runs.
    let answer = upstream.send(with_key()).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "in-process");
    let refused = upstream.send(Call::get("/how")).await.unwrap();
    assert_eq!(refused.status(), 401, "the route's authentication ran");

    // Once the server stops, nothing reaches its router in-process either.
    shutdown.trigger();
    serving.await.unwrap().unwrap();
    assert!(
        upstream.send(with_key()).await.is_err(),
        "a stopped server is unreachable"
    );
}
