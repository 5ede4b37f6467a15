//! The breaker's state machine, retries, timeouts and the bulkhead against a real HTTP server
//! on loopback whose answers each test scripts; and the in-process path a `serve all` process
//! takes to a service it serves itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use resilience::{
    Backoff, BreakerSettings, BreakerState, Call, CallError, FAILED_UPSTREAM, Mode, Policy,
    Upstream,
};
use service_kit::http::RequestContext;
use tokio::sync::{Semaphore, mpsc};

/// What the stand-in upstream does: answers from `script` (then `otherwise`), optionally
/// holding each request until the test releases it through `gate`.
struct Script {
    answers: Mutex<VecDeque<u16>>,
    otherwise: u16,
    gate: Option<Arc<Semaphore>>,
    seen: Mutex<Vec<HeaderMap>>,
    arrived: mpsc::UnboundedSender<()>,
}

struct Server {
    url: String,
    script: Arc<Script>,
    arrivals: mpsc::UnboundedReceiver<()>,
}

impl Server {
    async fn start(answers: &[u16], otherwise: u16, gate: Option<Arc<Semaphore>>) -> Server {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let script = Arc::new(Script {
            answers: Mutex::new(answers.iter().copied().collect()),
            otherwise,
            gate,
            seen: Mutex::default(),
            arrived,
        });
        let state = script.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let script = state.clone();
            async move {
                script.seen.lock().unwrap().push(headers);
                let _ = script.arrived.send(());
                if let Some(gate) = &script.gate {
                    gate.acquire().await.unwrap().forget();
                }
                let status = script
                    .answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(script.otherwise);
                StatusCode::from_u16(status).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            url,
            script,
            arrivals,
        }
    }

    fn hits(&self) -> usize {
        self.script.seen.lock().unwrap().len()
    }

    /// Waits until `n` more requests have reached the server.
    async fn arrivals(&mut self, n: usize) {
        for _ in 0..n {
            self.arrivals.recv().await.unwrap();
        }
    }
}

/// A policy whose breaker decides after `minimum_calls` and never retries unless asked.
fn policy(minimum_calls: usize, open_for: Duration) -> Policy {
    Policy {
        timeout: Duration::from_secs(5),
        retries: 0,
        backoff: Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        },
        max_concurrent: 64,
        breaker: BreakerSettings {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call: Duration::from_secs(60),
            window: Duration::from_secs(60),
            minimum_calls,
            open_for,
            half_open_calls: 2,
        },
    }
}

fn upstream(server: &Server, policy: Policy) -> Upstream {
    Upstream::new(
        "orders",
        "risk",
        &server.url,
        reqwest::Client::new(),
        policy,
    )
    .unwrap()
}

async fn status(upstream: &Upstream, call: Call) -> Result<u16, CallError> {
    upstream.send(call).await.map(|r| r.status().as_u16())
}

const AN_HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn failures_above_the_rate_open_the_breaker_which_then_fails_fast_with_503() {
    let server = Server::start(&[], 500, None).await;
    let risk = upstream(&server, policy(4, AN_HOUR));
    let mut transitions = risk.transitions();

    for _ in 0..4 {
        assert_eq!(
            status(&risk, Call::post_json("/check", "{}"))
                .await
                .unwrap(),
            500
        );
    }
    assert_eq!(risk.state(), BreakerState::Open);
    let transition = transitions.recv().await.unwrap();
    assert_eq!(
        (transition.upstream, transition.from, transition.to),
        ("risk", BreakerState::Closed, BreakerState::Open)
    );

    // Open: refused without touching the network, as a 503 with Retry-After.
    let refused = risk
        .send(Call::post_json("/check", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(refused, CallError::Open { .. }), "{refused:?}");
    assert_eq!(server.hits(), 4);
    let problem = refused.problem();
    assert_eq!(problem.details().status, StatusCode::SERVICE_UNAVAILABLE);
    let response = axum::response::IntoResponse::into_response(problem);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 60, "the breaker stays open for an hour here");
}

#[tokio::test]
async fn no_verdict_before_the_minimum_number_of_calls() {
    let server = Server::start(&[500, 500, 500], 200, None).await;
    let risk = upstream(&server, policy(4, AN_HOUR));
    for _ in 0..3 {
        assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 500);
    }
    assert_eq!(risk.state(), BreakerState::Closed);
    assert_eq!(risk.window().failures, 3);
    // 3 failures of 4 calls ≥ 50% → opens only now, after the fourth call went through.
    assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 200);
    assert_eq!(risk.state(), BreakerState::Open);
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn client_errors_are_not_the_upstreams_failures() {
    let server = Server::start(&[], 404, None).await;
    let risk = upstream(&server, policy(4, AN_HOUR));
    for _ in 0..10 {
        assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 404);
    }
    assert_eq!(risk.state(), BreakerState::Closed);
}

/// Orders answering 503 because risk, which it calls, is away: orders is up, and its other
/// routes work. The answer names risk ([`FAILED_UPSTREAM`], set by [`CallError::problem`]), so
/// the gateway's breaker for orders does not count it; a 503 of orders' own still does.
#[tokio::test]
async fn a_5xx_naming_a_failed_upstream_of_the_upstream_is_not_its_failure() {
    let app = axum::Router::new()
        .route(
            "/v1/orders",
            axum::routing::post(|| async {
                CallError::Unreachable {
                    upstream: "risk",
                    detail: "connection refused".to_owned(),
                }
                .problem()
            }),
        )
        .route(
            "/v1/book",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let orders = Upstream::new(
        "gateway",
        "orders",
        url,
        reqwest::Client::new(),
        policy(4, AN_HOUR),
    )
    .unwrap();

    for _ in 0..6 {
        let response = orders
            .send(Call::post_json("/v1/orders", "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[FAILED_UPSTREAM], "risk");
    }
    assert_eq!(orders.window().failures, 0);
    assert_eq!(orders.state(), BreakerState::Closed);

    // Its own 503s count: six of twelve calls failed, and the breaker opens.
    for _ in 0..6 {
        assert_eq!(status(&orders, Call::get("/v1/book")).await.unwrap(), 503);
    }
    assert_eq!(orders.state(), BreakerState::Open);
    server.abort();
}

/// Risk paused rather than gone: orders waits for it, then answers 504 naming it. The time was
/// risk's, so the gateway's breaker for orders counts the answer neither as failed nor as slow
/// — here every call takes longer than the slow-call threshold, which is zero.
#[tokio::test]
async fn a_slow_answer_for_a_failed_upstream_is_not_a_slow_call_of_the_upstream() {
    let app = axum::Router::new().route(
        "/v1/orders",
        axum::routing::post(|| async {
            CallError::Timeout {
                upstream: "risk",
                timeout: Duration::from_millis(50),
            }
            .problem()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut impatient = policy(4, AN_HOUR);
    impatient.breaker.slow_call = Duration::ZERO;
    impatient.breaker.slow_call_rate = 0.5;
    let orders =
        Upstream::new("gateway", "orders", url, reqwest::Client::new(), impatient).unwrap();

    for _ in 0..6 {
        assert_eq!(
            status(&orders, Call::post_json("/v1/orders", "{}"))
                .await
                .unwrap(),
            504
        );
    }
    assert_eq!(orders.window().calls, 6);
    assert_eq!(orders.window().slow_calls, 0);
    assert_eq!(orders.state(), BreakerState::Closed);
    server.abort();
}

#[tokio::test]
async fn slow_calls_open_the_breaker_even_when_they_succeed() {
    let server = Server::start(&[], 200, None).await;
    let mut slow = policy(3, AN_HOUR);
    // Every call is "slow" against a zero threshold: deterministic, no timing in the test.
    slow.breaker.slow_call = Duration::ZERO;
    slow.breaker.slow_call_rate = 1.0;
    let risk = upstream(&server, slow);
    for _ in 0..3 {
        assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 200);
    }
    assert_eq!(risk.state(), BreakerState::Open);
}

#[tokio::test]
async fn half_open_lets_a_limited_number_of_probes_through_and_closes_when_they_succeed() {
    let gate = Arc::new(Semaphore::new(0));
    // Two failures open the breaker (it probes at once: no wait in open state here)…
    let mut server = Server::start(&[500, 500], 200, Some(gate.clone())).await;
    let risk = upstream(&server, policy(2, Duration::ZERO));
    let mut transitions = risk.transitions();
    gate.add_permits(2);
    for _ in 0..2 {
        assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 500);
    }
    server.arrivals(2).await;
    assert_eq!(risk.state(), BreakerState::Open);

    // …then exactly two probes may be in flight; a third is refused while they are.
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let risk = risk.clone();
            tokio::spawn(async move { status(&risk, Call::get("/")).await })
        })
        .collect();
    server.arrivals(2).await;
    assert_eq!(risk.state(), BreakerState::HalfOpen);
    let refused = status(&risk, Call::get("/")).await.unwrap_err();
    assert!(matches!(refused, CallError::Open { .. }), "{refused:?}");
    assert_eq!(server.hits(), 4);

    gate.add_permits(2);
    for probe in probes {
        assert_eq!(probe.await.unwrap().unwrap(), 200);
    }
    assert_eq!(risk.state(), BreakerState::Closed);
    let seen: Vec<BreakerState> = std::iter::from_fn(|| transitions.try_recv().ok())
        .map(|t| t.to)
        .collect();
    assert_eq!(
        seen,
        [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let server = Server::start(&[500, 500, 500], 200, None).await;
    let risk = upstream(&server, policy(2, Duration::ZERO));
    for _ in 0..2 {
        status(&risk, Call::get("/")).await.unwrap();
    }
    assert_eq!(risk.state(), BreakerState::Open);
    assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 500);
    assert_eq!(risk.state(), BreakerState::Open);
}

#[tokio::test]
async fn operators_can_force_the_breaker_open_or_disable_it() {
    let server = Server::start(&[], 500, None).await;
    let risk = upstream(&server, policy(2, AN_HOUR));
    let mut transitions = risk.transitions();

    risk.set_mode(Mode::ForcedOpen);
    assert!(matches!(
        risk.send(Call::get("/")).await,
        Err(CallError::Open { .. })
    ));
    assert_eq!(server.hits(), 0);

    // Disabled: every call goes through and failures are not counted.
    risk.set_mode(Mode::Disabled);
    for _ in 0..5 {
        assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 500);
    }
    assert_eq!(server.hits(), 5);
    assert_eq!(risk.state(), BreakerState::Disabled);
    assert_eq!(risk.window().calls, 0, "disabled calls are not measured");

    risk.set_mode(Mode::Automatic);
    assert_eq!(risk.state(), BreakerState::Closed);
    let seen: Vec<BreakerState> = std::iter::from_fn(|| transitions.try_recv().ok())
        .map(|t| t.to)
        .collect();
    assert_eq!(
        seen,
        [
            BreakerState::ForcedOpen,
            BreakerState::Disabled,
            BreakerState::Closed
        ]
    );
}

#[tokio::test]
async fn only_idempotent_calls_are_retried() {
    let server = Server::start(&[503, 503], 200, None).await;
    let mut retrying = policy(100, AN_HOUR);
    retrying.retries = 2;
    let risk = upstream(&server, retrying);

    // A POST is not retried: the caller sees the 503 after one attempt.
    assert_eq!(
        status(&risk, Call::post_json("/orders", "{}"))
            .await
            .unwrap(),
        503
    );
    assert_eq!(server.hits(), 1);

    // Declared idempotent (e.g. keyed by an id), the same POST is retried until it succeeds.
    assert_eq!(
        status(&risk, Call::post_json("/holds", "{}").idempotent(true))
            .await
            .unwrap(),
        200
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn retries_stop_after_the_configured_number() {
    let server = Server::start(&[], 503, None).await;
    let mut retrying = policy(100, AN_HOUR);
    retrying.retries = 2;
    let risk = upstream(&server, retrying);
    assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 503);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn an_attempt_that_gets_no_answer_in_time_ends_as_a_504_problem() {
    // The gate is never opened: the upstream never answers.
    let server = Server::start(&[], 200, Some(Arc::new(Semaphore::new(0)))).await;
    let mut impatient = policy(100, AN_HOUR);
    impatient.timeout = Duration::from_millis(50);
    let risk = upstream(&server, impatient);
    let error = risk.send(Call::get("/")).await.unwrap_err();
    assert!(matches!(error, CallError::Timeout { .. }), "{error:?}");
    assert_eq!(
        error.problem().details().status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_problem() {
    // Nothing listens on this port, and no other test is given it.
    let port = service_kit::testing::closed_port();
    let risk = Upstream::new(
        "orders",
        "risk",
        format!("http://127.0.0.1:{port}"),
        reqwest::Client::new(),
        policy(100, AN_HOUR),
    )
    .unwrap();
    let error = risk.send(Call::get("/")).await.unwrap_err();
    assert!(matches!(error, CallError::Unreachable { .. }), "{error:?}");
    assert_eq!(
        error.problem().details().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Orders, as the gateway calls it, given its replicas' base URLs as one comma-separated list.
fn orders_at(replicas: &[&str], policy: Policy) -> Upstream {
    Upstream::new(
        "gateway",
        "orders",
        replicas.join(","),
        reqwest::Client::new(),
        policy,
    )
    .unwrap()
}

/// The address of a replica that is gone: nothing listens there.
fn gone() -> String {
    format!("http://127.0.0.1:{}", service_kit::testing::closed_port())
}

/// Replicas with nothing in front of them are given as a list: calls take them in turn.
#[tokio::test]
async fn calls_take_the_replicas_of_a_list_in_turn() {
    let (a, b) = (
        Server::start(&[], 200, None).await,
        Server::start(&[], 200, None).await,
    );
    let orders = orders_at(&[&a.url, &format!(" {}/", b.url)], policy(100, AN_HOUR));
    assert_eq!(
        orders.base_urls().collect::<Vec<_>>(),
        [a.url.as_str(), b.url.as_str()]
    );
    for _ in 0..10 {
        let placed = status(&orders, Call::post_json("/v1/orders", "{}")).await;
        assert_eq!(placed.unwrap(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

/// A replica that is gone takes no connection, so nothing was sent to it: the next one takes
/// the call, even one that is never retried (a placement), and the upstream has not failed.
#[tokio::test]
async fn a_replica_that_takes_no_connection_is_stepped_past_and_the_upstream_has_not_failed() {
    let live = Server::start(&[], 201, None).await;
    let orders = orders_at(&[&gone(), &live.url], policy(1, AN_HOUR));
    for _ in 0..6 {
        let placed = status(
            &orders,
            Call::post_json("/v1/orders", "{}").idempotent(false),
        );
        assert_eq!(placed.await.unwrap(), 201);
    }
    assert_eq!(
        live.hits(),
        6,
        "every placement reached the live replica once"
    );
    assert_eq!(orders.window().failures, 0);
    assert_eq!(orders.state(), BreakerState::Closed);
}

/// Once a replica took no connection, calls try it last for the breaker's open interval
/// instead of paying a refused (or, on a real network, timed-out) connection every other call.
#[tokio::test]
async fn a_replica_that_took_no_connection_is_tried_last_for_a_while() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    // This test's runtime runs on its own thread: the calls below record here.
    let _recording = metrics::set_default_local_recorder(&recorder);
    let live = Server::start(&[], 201, None).await;
    let orders = orders_at(&[&gone(), &live.url], policy(100, AN_HOUR));
    for _ in 0..6 {
        let placed = status(&orders, Call::post_json("/v1/orders", "{}")).await;
        assert_eq!(placed.unwrap(), 201);
    }
    let failovers = metrics
        .render()
        .lines()
        .find(|line| line.starts_with("resilience_failovers_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().to_owned());
    assert_eq!(
        failovers.as_deref(),
        Some("1"),
        "only the first call met the gone replica first"
    );
}

/// A replica that takes the request and never answers (paused, stuck) costs the call that
/// waited on it, which is not sent again; the calls after it go to the other replica first, so
/// one stuck replica does not time out every other call and open the breaker for both.
#[tokio::test]
async fn a_replica_that_gave_no_answer_in_time_is_tried_last_and_the_breaker_stays_closed() {
    let stuck = Server::start(&[], 201, Some(Arc::new(Semaphore::new(0)))).await;
    let live = Server::start(&[], 201, None).await;
    let mut impatient = policy(4, AN_HOUR);
    impatient.timeout = Duration::from_millis(50);
    let orders = orders_at(&[&stuck.url, &live.url], impatient);

    let waited = orders.send(Call::post_json("/v1/orders", "{}")).await;
    assert!(
        matches!(waited, Err(CallError::Timeout { .. })),
        "{waited:?}"
    );
    for _ in 0..5 {
        let placed = status(&orders, Call::post_json("/v1/orders", "{}")).await;
        assert_eq!(placed.unwrap(), 201);
    }
    assert_eq!((stuck.hits(), live.hits()), (1, 5));
    assert_eq!(orders.state(), BreakerState::Closed);
}

/// When no replica takes a connection, the attempt failed once, as a single address would.
#[tokio::test]
async fn when_no_replica_takes_a_connection_the_upstream_is_unreachable() {
    let orders = orders_at(&[&gone(), &gone()], policy(100, AN_HOUR));
    let error = orders.send(Call::get("/v1/orders")).await.unwrap_err();
    assert!(matches!(error, CallError::Unreachable { .. }), "{error:?}");
    assert_eq!(orders.window().failures, 1);
}

#[test]
fn an_upstream_needs_at_least_one_address_and_each_must_be_a_url() {
    let new = |urls: &str| {
        Upstream::new(
            "gateway",
            "orders",
            urls,
            reqwest::Client::new(),
            Policy::default(),
        )
    };
    assert!(new(" , ").is_err());
    assert!(new("http://orders-a:8082,orders-b").is_err());
    assert!(new("http://orders-a:8082,https://orders-b:8082").is_ok());
}

#[tokio::test]
async fn the_bulkhead_refuses_calls_beyond_its_limit_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let mut server = Server::start(&[], 200, Some(gate.clone())).await;
    let mut narrow = policy(100, AN_HOUR);
    narrow.max_concurrent = 2;
    let risk = upstream(&server, narrow);
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let risk = risk.clone();
            tokio::spawn(async move { status(&risk, Call::get("/")).await })
        })
        .collect();
    server.arrivals(2).await;

    let refused = risk.send(Call::get("/")).await.unwrap_err();
    assert!(
        matches!(refused, CallError::Saturated { .. }),
        "{refused:?}"
    );
    assert_eq!(server.hits(), 2);

    gate.add_permits(2);
    for call in in_flight {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    // Capacity is back once they are done.
    gate.add_permits(1);
    assert_eq!(status(&risk, Call::get("/")).await.unwrap(), 200);
}

#[tokio::test]
async fn the_request_id_trace_context_and_service_token_travel_with_the_call() {
    let server = Server::start(&[], 200, None).await;
    let risk = upstream(&server, policy(100, AN_HOUR));
    let trace = service_kit::telemetry::TraceContext::parse(Some(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ))
    .unwrap();
    let context = RequestContext {
        request_id: "req-42".to_owned(),
        trace,
    };
    service_kit::http::observe::within(
        Some(context),
        risk.send(Call::get("/").bearer("service-token")),
    )
    .await
    .unwrap();

    let seen = server.script.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["x-request-id"], "req-42");
    assert!(
        seen["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
    );
    assert_eq!(seen["authorization"], "Bearer service-token");
}

// In one process, a call to a service that process serves goes to its router without the
// socket (`bourse serve all`) — through the same middleware, and only while it serves.

/// The route says how the request came; a middleware stands for the routes' own
/// authentication (a request without the key never reaches the route).
fn in_process_router() -> axum::Router {
    async fn how(request: axum::extract::Request) -> &'static str {
        if request
            .extensions()
            .get::<service_kit::http::in_process::InProcess>()
            .is_some()
        {
            "in-process"
        } else {
            "socket"
        }
    }
    async fn require_key(
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        if request.headers().get("x-key").is_some_and(|k| k == "open") {
            next.run(request).await
        } else {
            axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED)
        }
    }
    axum::Router::new()
        .route("/how", axum::routing::get(how))
        .layer(axum::middleware::from_fn(require_key))
}

fn with_key() -> Call {
    Call::get("/how").header(
        axum::http::HeaderName::from_static("x-key"),
        axum::http::HeaderValue::from_static("open"),
    )
}

#[tokio::test]
async fn a_service_of_this_process_is_called_through_its_router_while_it_serves() {
    let server = service_kit::Server::bind(
        "echo",
        "127.0.0.1:0",
        in_process_router(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let shutdown = service_kit::Shutdown::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let upstream = Upstream::new(
        "orders",
        "echo",
        &url,
        reqwest::Client::new(),
        policy(100, AN_HOUR),
    )
    .unwrap();

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
