//! The standard middleware stack, served on a real listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use service_kit::config::HttpSettings;
use service_kit::health::Readiness;
use service_kit::http::{Json, service_router};
use service_kit::{Server, Shutdown};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    #[allow(dead_code)]
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    count: u32,
    nested: Option<Vec<u8>>,
}

async fn panics() -> &'static str {
    panic!("a bug in a handler")
}

async fn spawn(settings: HttpSettings) -> (String, Shutdown) {
    spawn_with_readiness(settings, Shutdown::new()).await
}

/// `draining` is the token readiness watches; the server itself stops with the returned one.
async fn spawn_with_readiness(settings: HttpSettings, draining: Shutdown) -> (String, Shutdown) {
    let api = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route("/panic", get(panics))
        .route("/never", get(std::future::pending::<&'static str>))
        .route("/echo", post(|Json(_): Json<Echo>| async { "parsed" }))
        .route(
            "/count",
            post(|Json(c): Json<Count>| async move {
                format!("{} {:?}", c.count, c.nested.unwrap_or_default())
            }),
        );
    let shutdown = Shutdown::new();
    let router = service_router("test", &settings, Readiness::new(draining), api);
    let server = Server::bind("test", "127.0.0.1:0", router, Duration::from_secs(1))
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.run(shutdown.clone()));
    (url, shutdown)
}

async fn problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code);
    assert_eq!(body["request_id"], id.as_str());
    body
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_process_serves_on() {
    let (url, _shutdown) = spawn(HttpSettings::default()).await;
    let client = reqwest::Client::new();
    let body = problem(
        client.get(format!("{url}/panic")).send().await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    )
    .await;
    assert!(
        !body["detail"].as_str().unwrap().contains("a bug"),
        "panic text stays in the logs"
    );
    for _ in 0..3 {
        assert_eq!(
            client
                .get(format!("{url}/ok"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        problem(
            client.get(format!("{url}/panic")).send().await.unwrap(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        )
        .await;
    }
}

#[tokio::test]
async fn a_request_that_runs_too_long_is_cut_off_with_a_503() {
    let settings = HttpSettings {
        request_timeout: Duration::from_millis(200),
        ..HttpSettings::default()
    };
    let (url, _shutdown) = spawn(settings).await;
    let response = reqwest::get(format!("{url}/never")).await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, StatusCode::SERVICE_UNAVAILABLE, "request_timeout").await;
}

#[tokio::test]
async fn a_body_is_json_of_the_documented_shape_or_a_problem_saying_why() {
    let (url, _shutdown) = spawn(HttpSettings::default()).await;
    let client = reqwest::Client::new();
    let post = |body: &'static str, content_type: &'static str| {
        client
            .post(format!("{url}/count"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // JSON Schema's integers include 3.0: a client generated from the document may send it.
    let ok = post(r#"{"count": 3.0, "nested": [1.0, 2]}"#, "application/json")
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "3 [1, 2]");
    // …but not 3.5, a negative count, an unknown field or a string.
    for refused in [
        r#"{"count": 3.5}"#,
        r#"{"count": -1.0}"#,
        r#"{"count": 1e300}"#,
        r#"{"count": 3, "extra": 1}"#,
        r#"{"count": "3"}"#,
    ] {
        let body = problem(
            post(refused, "application/json").await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("count") || refused.contains("extra"),
            "{body}"
        );
    }
    problem(
        post(r#"{"count": "#, "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    problem(
        post(r#"{"count": 3}"#, "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let vendor = post(
        r#"{"count": 3}"#,
        "application/vnd.bourse+json; charset=utf-8",
    )
    .await
    .unwrap();
    assert_eq!(vendor.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_methods_and_oversized_bodies_are_problems() {
    let settings = HttpSettings {
        body_limit_bytes: 1024,
        ..HttpSettings::default()
    };
    let (url, _shutdown) = spawn(settings).await;
    let client = reqwest::Client::new();
    problem(
        client.get(format!("{url}/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        client.delete(format!("{url}/ok")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(4096));
    let response = client
        .post(format!("{url}/echo"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let ok = client
        .post(format!("{url}/echo"))
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn readiness_turns_503_as_soon_as_shutdown_starts() {
    let draining = Shutdown::new();
    let (url, _shutdown) = spawn_with_readiness(HttpSettings::default(), draining.clone()).await;
    assert_eq!(
        reqwest::get(format!("{url}/health/ready"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    draining.trigger();
    let response = reqwest::get(format!("{url}/health/ready")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "shutting_down");
    // Liveness is unaffected: the process is fine, it is just leaving.
    assert_eq!(
        reqwest::get(format!("{url}/health/live"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn a_drawn_port_stays_reserved_while_its_server_is_down() {
    let ports = service_kit::testing::free_ports(3);
    for port in &ports {
        // Nothing listens on it (its server has not started, or was killed to be restarted),
        // yet no later draw — here or in another test process — may take it.
        assert!(std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok());
        assert!(
            !service_kit::testing::reserve(*port),
            "port {port} drawn twice"
        );
    }
}
