//! The `bourse` binary as an operator runs it: configuration errors, JSON logs, and a SIGTERM
//! that lets an in-flight request finish (OPS-01, OBS-01, REL-02).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use service_kit::testing::eventually;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::mpsc;

mod served;
use served::{BOURSE, Served, balances, demo_login, demo_seed, operator_command, place_limit};

const PASSWORD: &str = "correct horse battery staple";

/// Runs `bourse serve all` with only `env`, expects it to refuse to start with exit code 2,
/// and checks that every one of `variables` is named in what it printed. Returns stderr.
async fn refuses_to_start(env: &[(&str, &str)], variables: &[&str]) -> String {
    let output = Command::new(BOURSE)
        .args(["serve", "all"])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for variable in variables {
        assert!(
            stderr.contains(variable),
            "{variable} not reported in:\n{stderr}"
        );
    }
    stderr
}

#[tokio::test]
async fn invalid_configuration_lists_every_problem_and_exits_2() {
    let stderr = refuses_to_start(
        &[
            ("BOURSE_ENV", "staging"),
            ("BOURSE_AUTH_PORT", "eighty"),
            ("BOURSE_AUTH_ACCESS_TTL_SECS", "86400"),
            ("BOURSE_GATEWAY_CORS_ORIGINS", "*"),
            ("BOURSE_GATEWAY_ADMIN_ALLOWLIST", "everyone"),
        ],
        &[
            "BOURSE_ENV",
            "BOURSE_AUTH_PORT",
            "BOURSE_AUTH_ACCESS_TTL_SECS",
            "BOURSE_GATEWAY_CORS_ORIGINS",
            "BOURSE_GATEWAY_ADMIN_ALLOWLIST",
        ],
    )
    .await;
    assert!(stderr.contains("5 problems"), "{stderr}");
}

#[tokio::test]
async fn production_refuses_to_start_without_explicit_settings() {
    refuses_to_start(
        &[
            ("BOURSE_ENV", "production"),
            ("BOURSE_AUTH_GENERATE_SIGNING_KEY", "true"),
        ],
        &[
            "DATABASE_URL",
            "REDIS_URL",
            "BOURSE_AUTH_GENERATE_SIGNING_KEY",
            "BOURSE_SERVICE_SECRET_ORDERS",
            "BOURSE_SERVICE_SECRET_SETTLEMENT",
            "BOURSE_SERVICE_SECRET_RISK",
            "BOURSE_SERVICE_SECRET_GATEWAY",
            "BOURSE_MASTER_KEYS",
        ],
    )
    .await;
}

/// Settings that start but work against each other are said at start: a gateway that stops
/// waiting for orders before orders stops booking answers 504 to placements that are then
/// booked, so raising the bound on risk checks alone is warned of, with both figures.
#[sqlx::test(migrations = false)]
async fn a_gateway_that_would_give_up_on_placements_orders_still_books_warns_at_start(
    pool: PgPool,
) {
    let mut served = Served::start_with(&pool, &[("BOURSE_RISK_CHECK_VALID_FOR_MS", "3000")]).await;

    let warning = served
        .wait_for("the timeout warning", |v| {
            v["level"] == "WARN"
                && v["message"].as_str().is_some_and(|message| {
                    message.starts_with("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS is not above")
                })
        })
        .await;
    assert_eq!(warning["orders_timeout_ms"], 2500, "{warning}");
    assert_eq!(warning["check_valid_for_ms"], 3000, "{warning}");

    served.terminate();
    let (code, _) = served.finish().await;
    assert_eq!(code, Some(0));
}

#[sqlx::test(migrations = false)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0(pool: PgPool) {
    let mut served = Served::start(&pool).await;
    let gateway = served.address_of("gateway").await;

    // A client starts a registration and is slow to send its body. `Expect: 100-continue`
    // tells us the moment the server has started working on the request.
    let body = format!(r#"{{"email": "slow@example.com", "password": "{PASSWORD}"}}"#);
    let (first, rest) = body.split_at(10);
    let mut stream = TcpStream::connect(&gateway).await.unwrap();
    let head = format!(
        "POST /v1/auth/register HTTP/1.1\r\nhost: {gateway}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert!(String::from_utf8_lossy(&interim).starts_with("HTTP/1.1 100 Continue"));
    stream.write_all(first.as_bytes()).await.unwrap();

    // The operator stops the process while the request is in flight.
    served.terminate();
    served
        .wait_for("the shutdown signal", |v| {
            v["message"] == "shutdown signal received; draining"
        })
        .await;

    // New connections are refused now...
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(&gateway).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener kept accepting after SIGTERM");

    // ...but the request in flight completes, upstream call included.
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let (code, _) = served.finish().await;
    assert_eq!(code, Some(0));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "the drained request's effect is there");
}

#[sqlx::test(migrations = false)]
async fn logs_are_json_lines_with_request_context_and_never_secrets(pool: PgPool) {
    let mut served = Served::start(&pool).await;
    let gateway = served.address_of("gateway").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{gateway}{path}");

    let register = serde_json::json!({ "email": "logged@example.com", "password": PASSWORD });
    assert_eq!(
        client
            .post(url("/v1/auth/register"))
            .json(&register)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let tokens: Value = client
        .post(url("/v1/auth/login"))
        .json(&register)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let me = client
        .get(url("/v1/auth/me"))
        .bearer_auth(&access)
        .header("x-request-id", "trace-me-123")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let refreshed = client
        .post(url("/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    // A program's request, signed with an API key: every hop logs which key acted.
    let key: Value = client
        .post(url("/v1/api-keys"))
        .bearer_auth(&access)
        .json(&serde_json::json!({ "name": "logged bot", "scopes": ["read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (key_id, secret) = (
        key["key_id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let signature =
        bourse::testing::api_key_signature(&secret, &timestamp, "GET", "/v1/balances", "");
    let signed = client
        .get(url("/v1/balances"))
        .header("x-request-id", "signed-456")
        .header("x-bourse-key", &key_id)
        .header("x-bourse-timestamp", &timestamp)
        .header("x-bourse-signature", &signature)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);

    served.terminate();
    let (code, lines) = served.finish().await;
    assert_eq!(code, Some(0));

    let mut completed = Vec::new();
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for secret in [PASSWORD, access.as_str(), refresh.as_str(), secret.as_str()] {
            assert!(
                !line.contains(secret),
                "a secret leaked into the logs: {line}"
            );
        }
        if value["message"] == "request completed" {
            completed.push(value);
        }
    }
    // Both hops of the /me call logged it with the client's request id and trace, and the
    // authenticated principal.
    let me_lines: Vec<&Value> = completed
        .iter()
        .filter(|v| v["span"]["request_id"] == "trace-me-123")
        .collect();
    assert_eq!(me_lines.len(), 2, "{completed:#?}");
    for line in me_lines {
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span"]["span_id"].as_str().unwrap().len(), 16);
        assert!(line["span"]["principal"].is_string(), "{line}");
    }
    let signed_lines: Vec<&Value> = completed
        .iter()
        .filter(|v| v["span"]["request_id"] == "signed-456" && v["span"]["route"] == "/v1/balances")
        .collect();
    assert_eq!(
        signed_lines.len(),
        2,
        "gateway and settlement: {completed:#?}"
    );
    for line in signed_lines {
        assert_eq!(line["span"]["api_key"], key_id.as_str(), "{line}");
        assert!(line["span"]["principal"].is_string(), "{line}");
    }
    assert!(
        completed
            .iter()
            .all(|v| v["span"]["request_id"].is_string())
    );
}

async fn bourse_admin(pool: &PgPool, args: &[&str], stdin: &str) -> std::process::Output {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let mut child = Command::new(BOURSE)
        .arg("admin")
        .args(args)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )
        .env("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096")
        .env("BOURSE_AUTH_ARGON2_ITERATIONS", "1")
        .env("BOURSE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn operators_create_users_rotate_keys_and_verify_the_audit_chain(pool: PgPool) {
    let created = bourse_admin(
        &pool,
        &[
            "create-user",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
            "--role",
            "auditor",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    assert!(
        stdout.contains("ops@example.com") && stdout.contains("admin,auditor"),
        "{stdout}"
    );
    assert!(!stdout.contains(PASSWORD));
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT roles FROM auth.users WHERE email = 'ops@example.com'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(roles, ["admin", "auditor"]);

    // The CLI, unlike the public endpoint, says when the email is taken.
    let again = bourse_admin(
        &pool,
        &["create-user", "--email", "ops@example.com"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("email"));

    let weak = bourse_admin(
        &pool,
        &["create-user", "--email", "weak@example.com"],
        "short\n",
    )
    .await;
    assert!(!weak.status.success());
    let weak_users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM auth.users WHERE email = 'weak@example.com'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(weak_users, 0);

    let first = bourse_admin(&pool, &["rotate-signing-key"], "").await;
    let second = bourse_admin(&pool, &["rotate-signing-key"], "").await;
    assert!(first.status.success() && second.status.success());
    let keys: Vec<(String, bool)> =
        sqlx::query_as("SELECT kid, retired_at IS NULL FROM auth.signing_keys ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        keys.iter().filter(|(_, active)| *active).count(),
        1,
        "exactly one key signs"
    );
    assert_eq!(keys.len(), 2);

    let verified = bourse_admin(&pool, &["verify-audit"], "").await;
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).contains("intact"));
}

/// A real OTLP/HTTP trace receiver on loopback: decodes each export and forwards its spans.
async fn otlp_collector() -> (
    String,
    mpsc::UnboundedReceiver<opentelemetry_proto::tonic::trace::v1::Span>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                for span in request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    let _ = tx.send(span);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[sqlx::test(migrations = false)]
async fn traces_are_exported_over_otlp_across_the_gateway_hop(pool: PgPool) {
    let (collector, mut spans) = otlp_collector().await;
    let mut served = Served::start_with(
        &pool,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str())],
    )
    .await;
    let gateway = served.address_of("gateway").await;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = reqwest::Client::new()
        .post(format!("http://{gateway}/v1/auth/login"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({ "email": "nobody@example.com", "password": "not a real password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Spans are batched; SIGTERM makes the process flush them before it exits.
    served.terminate();
    let (code, lines) = served.finish().await;
    assert_eq!(code, Some(0));

    let mut http_spans = Vec::new();
    while let Ok(span) = spans.try_recv() {
        if span.name == "http_request" && hex(&span.trace_id) == trace_id {
            http_spans.push(span);
        }
    }
    let find = |service: &str| {
        http_spans
            .iter()
            .find(|s| attribute(s, "service").as_deref() == Some(service))
            .unwrap_or_else(|| panic!("no {service} span exported"))
    };
    let (edge, auth) = (find("gateway"), find("auth"));
    assert_eq!(
        hex(&edge.parent_span_id),
        "b7ad6b7169203331",
        "the gateway continues the client's trace"
    );
    assert_eq!(
        auth.parent_span_id, edge.span_id,
        "auth's span is a child of the gateway's"
    );

    // The ids in the logs are the exported ones.
    let logged = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| {
            v["message"] == "request completed"
                && v["span"]["span_id"] == hex(&auth.span_id).as_str()
        });
    assert!(logged, "auth's log line carries the exported span id");
}

#[sqlx::test(migrations = false)]
async fn a_trace_runs_from_an_order_into_the_consumers_of_its_events(pool: PgPool) {
    let (collector, mut spans) = otlp_collector().await;
    demo_seed(&pool).await;
    let mut served = Served::start_with(
        &pool,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str())],
    )
    .await;
    let gateway = served.address_of("gateway").await;
    let client = reqwest::Client::new();
    let [alice, bob] = bourse::demo::DEMO_TRADERS;
    let (alice, bob) = (
        demo_login(&client, &gateway, alice).await,
        demo_login(&client, &gateway, bob).await,
    );

    // Bob's ask rests; Alice's bid takes it, under a trace of the client's own.
    place_limit(&client, &gateway, &bob, "sell", None).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    place_limit(&client, &gateway, &alice, "buy", Some(&traceparent)).await;
    // Settled once Alice holds the 0.01 BTC she bought (10 before).
    eventually("the trade settled", || async {
        balances(&client, &gateway, &alice).await["BTC"].0 != "10.00000000"
    })
    .await;

    served.terminate();
    let (code, _) = served.finish().await;
    assert_eq!(code, Some(0));
    let mut consumed = Vec::new();
    let mut checks_linked = 0;
    while let Ok(span) = spans.try_recv() {
        if span.name == "consume" && hex(&span.trace_id) == trace_id {
            consumed.push(attribute(&span, "event_type").unwrap_or_default());
        }
        // Risk's checks go out in batches (ADR 0029): the call follows from each order in it.
        if span.name == "risk checks" && span.links.iter().any(|l| hex(&l.trace_id) == trace_id) {
            checks_linked += 1;
        }
    }
    assert_eq!(
        checks_linked, 1,
        "the call that checked the order links back to its trace"
    );
    // Settlement settling the trade and risk projecting it both continue the order's trace.
    assert!(
        consumed.iter().filter(|t| *t == "TradeExecuted").count() >= 2,
        "consumers of the order's events in its trace: {consumed:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn demo_seed_creates_the_demo_market_and_is_idempotent(pool: PgPool) {
    let seed = || operator_command(&pool).args(["demo", "seed"]).output();
    let first = seed().await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("instrument BTC-USD: created"));
    let second = seed().await.unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report = String::from_utf8(second.stdout).unwrap();
    assert!(
        report.contains("instrument BTC-USD: exists")
            && report.contains("trader alice@demo.bourse: exists")
            && report.contains("balance alice@demo.bourse 100000 USD: deposited before"),
        "{report}"
    );

    let instruments: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT symbol, tick_size, lot_size FROM orders.instruments ORDER BY symbol",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        instruments,
        [
            ("BTC-USD".to_owned(), 1, 10_000),
            ("ETH-USD".to_owned(), 1, 100_000)
        ]
    );
    let traders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM auth.users WHERE email LIKE '%@demo.bourse'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(traders, 2);
    // Funded once, however often it runs: 2 traders × 3 assets.
    let deposits: Vec<(String, i64)> = sqlx::query_as(
        "SELECT asset, sum(amount)::int8 FROM settlement.transfers GROUP BY asset ORDER BY asset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        deposits,
        [
            ("BTC".to_owned(), 2 * 10 * 100_000_000),
            ("ETH".to_owned(), 2 * 100 * 100_000_000),
            ("USD".to_owned(), 2 * 100_000 * 100)
        ]
    );
}

/// Two loopback ports nothing listens on (bound together, then let go).
/// `bourse probe /health/ready` probes the service of its own container — the one whose port
/// variable is set — so one probe definition serves every deployment; with no single such
/// variable it refuses (exit 2) rather than guess.
#[tokio::test]
async fn a_probe_of_a_path_alone_calls_the_service_whose_port_is_set() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (requests, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0; 1024];
            let read = socket.read(&mut head).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&head[..read]);
            let _ = requests.send(line.lines().next().unwrap_or_default().to_owned());
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = socket.write_all(answer).await;
        }
    });
    let probe = |vars: &[(&str, &str)]| {
        Command::new(BOURSE)
            .args(["probe", "/health/ready"])
            .env_clear()
            .envs(vars.iter().copied())
            .output()
    };

    let own = probe(&[("BOURSE_RISK_PORT", &port)]).await.unwrap();
    assert!(own.status.success(), "{own:?}");
    assert_eq!(seen.recv().await.unwrap(), "GET /health/ready HTTP/1.1");

    let ambiguous = probe(&[("BOURSE_RISK_PORT", &port), ("BOURSE_AUTH_PORT", &port)])
        .await
        .unwrap();
    assert_eq!(ambiguous.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("exactly one"));
    assert!(
        seen.try_recv().is_err(),
        "an ambiguous probe called nothing"
    );
}

fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The variables `.cargo/config.toml` gives every `cargo run` and `cargo test`, as written there.
fn cargo_config_env() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cargo/config.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip_while(|line| line.trim() != "[env]")
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once(" = "))
        .map(|(name, value)| {
            (
                name.trim().to_owned(),
                value.trim().trim_matches('"').to_owned(),
            )
        })
        .collect()
}

/// The README's run command, `cargo run --release -p bourse -- serve all`, on a machine where nothing
/// runs yet: with no `DATABASE_URL` or `REDIS_URL` of the operator's and nothing answering on
/// the local ports, `bourse serve all` starts a private PostgreSQL and Redis from the machine's
/// binaries, says so, serves on them — other `bourse` commands find them too — and stops them
/// when it stops; PostgreSQL's data stays in the folder it named. It runs with what `cargo run`
/// adds to the environment, `.cargo/config.toml`'s `[env]`: the test suite's `DATABASE_URL`,
/// which must not count as the operator's. (The local ports are the test's own free ones
/// instead of 5432 and 6379, which the machine's shared servers hold.)
#[tokio::test]
async fn with_nothing_running_serve_starts_private_datastores_and_stops_them() {
    let cargo_run_env = cargo_config_env();
    let value = |name: &str| {
        cargo_run_env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert!(
        value("DATABASE_URL").is_some()
            && value("DATABASE_URL") == value("BOURSE_SUITE_DATABASE_URL"),
        ".cargo/config.toml gives the suite's DATABASE_URL and the same in \
         BOURSE_SUITE_DATABASE_URL: {cargo_run_env:?}"
    );
    let data_dir = std::env::temp_dir().join(format!("bourse-local-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&data_dir).unwrap();
    // Run as root, PostgreSQL runs as its own user, who must reach the folder.
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (postgres_port, redis_port) = free_ports();
    let local_env = [
        (
            "BOURSE_LOCAL_DATA_DIR",
            data_dir.to_str().unwrap().to_owned(),
        ),
        ("BOURSE_LOCAL_POSTGRES_PORT", postgres_port.to_string()),
        ("BOURSE_LOCAL_REDIS_PORT", redis_port.to_string()),
    ];
    let without_datastores = |command: &mut Command| {
        command
            .env_remove("REDIS_URL")
            .envs(cargo_run_env.iter().map(|(k, v)| (k, v)))
            .envs(local_env.iter().map(|(k, v)| (*k, v.as_str())));
    };
    let mut command = Served::command(&[]);
    without_datastores(&mut command);
    command.stderr(Stdio::piped());
    let mut served = Served::spawn(command);

    let said = served
        .stderr_line(&format!(
            "no PostgreSQL answered on 127.0.0.1:{postgres_port} and DATABASE_URL is not set: started a private one"
        ))
        .await;
    assert!(
        said.contains(data_dir.join("postgres").to_str().unwrap()),
        "names the folder: {said}"
    );
    served
        .stderr_line(&format!(
            "no Redis answered on 127.0.0.1:{redis_port} and REDIS_URL is not set: started a private one"
        ))
        .await;
    let gateway = served.ready_gateway().await;
    // Another command run beside it finds the same PostgreSQL, told nothing but the ports.
    let mut seed = Command::new(BOURSE);
    seed.args(["demo", "seed"])
        .env("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096")
        .env("BOURSE_AUTH_ARGON2_ITERATIONS", "1")
        .env("BOURSE_LOG", "warn");
    without_datastores(&mut seed);
    let seeded = seed.output().await.unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    // And the platform works on them: a demo trader logs in (PostgreSQL, and Redis for the
    // login throttle) and finds the seed's deposit.
    let client = reqwest::Client::new();
    let token = demo_login(&client, &gateway, "alice@demo.bourse").await;
    assert_eq!(
        balances(&client, &gateway, &token).await["USD"],
        ("100000.00".to_owned(), "0.00".to_owned()),
        "the seed's deposit"
    );

    served.terminate();
    let (code, _) = served.finish().await;
    assert_eq!(code, Some(0));
    assert!(
        !answers(postgres_port) && !answers(redis_port),
        "the private servers stop with bourse"
    );
    assert!(
        data_dir.join("postgres/PG_VERSION").is_file(),
        "PostgreSQL's data stays in the folder it named"
    );
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn operators_list_and_replay_dead_letters() {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let dead_letter = |event_id: String| {
        redis::cmd("XADD")
            .arg(format!("{prefix}.orders.dlq"))
            .arg("*")
            .arg("event_id")
            .arg(event_id)
            .arg("type")
            .arg("TradeExecuted")
            .arg("group")
            .arg("settlement")
            .arg("reason")
            .arg("too many failed deliveries")
            .arg("envelope")
            .arg("{}")
            .clone()
    };
    let id: String = dead_letter(uuid::Uuid::now_v7().to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    // Made in July 2024: longer ago than the consumers keep their inbox rows.
    let old: String = dead_letter("0190b7a2-0000-7000-8000-000000000001".to_owned())
        .query_async(&mut redis)
        .await
        .unwrap();
    let dlq = |args: &[&str]| {
        Command::new(BOURSE)
            .args(["admin", "dlq"])
            .args(args)
            .env("BOURSE_REDIS_KEY_PREFIX", &prefix)
            .env("BOURSE_LOG", "warn")
            .output()
    };
    let listed = dlq(&["list", "--stream", "orders"]).await.unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("TradeExecuted") && listed.contains("settlement"),
        "{listed}"
    );

    let replayed = dlq(&["replay", "--stream", "orders", "--id", &id])
        .await
        .unwrap();
    assert!(replayed.status.success());
    let stream_length = |redis: &mut redis::aio::MultiplexedConnection| {
        let mut redis = redis.clone();
        let key = format!("{prefix}.orders");
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<usize>(&mut redis)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        stream_length(&mut redis).await,
        1,
        "the event is back on its stream"
    );
    let again = dlq(&["replay", "--stream", "orders", "--id", &id])
        .await
        .unwrap();
    assert!(!again.status.success(), "a dead letter is replayed once");

    let refused = dlq(&["replay", "--stream", "orders", "--id", &old])
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8(refused.stdout)
            .unwrap()
            .contains("not replayed"),
        "the operator is told why"
    );
    assert_eq!(stream_length(&mut redis).await, 1, "nothing more went back");
    let listed = dlq(&["list", "--stream", "orders"]).await.unwrap();
    assert!(
        String::from_utf8(listed.stdout).unwrap().contains(&old),
        "the old dead letter stays"
    );
}

#[sqlx::test(migrations = false)]
async fn alert_channel_secrets_never_reach_the_logs(pool: PgPool) {
    // A Slack URL whose path is its credential and a webhook's HMAC key, both channels pointed
    // at a closed port: every delivery fails, is retried and given up — all of it logged.
    let nowhere = format!("http://127.0.0.1:{}", service_kit::testing::closed_port());
    let slack_path = "/services/T0/B0/XyzSlackSecretPath";
    let hmac_key = "webhook-hmac-secret-value";
    let mut served = Served::start_with(
        &pool,
        &[
            ("BOURSE_ALERTING_DELIVERY_MAX_ATTEMPTS", "2"),
            ("BOURSE_ALERTING_DELIVERY_BACKOFF_BASE_MS", "10"),
            ("BOURSE_ALERTING_DELIVERY_BACKOFF_CAP_MS", "20"),
        ],
    )
    .await;
    let gateway = served.address_of("gateway").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{gateway}{path}");
    let admin = serde_json::json!({ "email": "ops@example.com", "password": PASSWORD });
    let registered = client.post(url("/v1/auth/register")).json(&admin).send();
    assert_eq!(registered.await.unwrap().status(), 201);
    sqlx::query("UPDATE auth.users SET roles = '{admin}' WHERE email = 'ops@example.com'")
        .execute(&pool)
        .await
        .unwrap();
    let tokens: Value = client
        .post(url("/v1/auth/login"))
        .json(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let post = |path: &str, body: Value| {
        client
            .post(url(path))
            .bearer_auth(access)
            .json(&body)
            .send()
    };
    for channel in [
        serde_json::json!({ "name": "slack", "kind": "slack", "target": format!("{nowhere}{slack_path}") }),
        serde_json::json!({ "name": "hook", "kind": "webhook", "target": format!("{nowhere}/hook"), "secret": hmac_key }),
    ] {
        assert_eq!(
            post("/v1/admin/alert-channels", channel)
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let rule = serde_json::json!({ "event_type": "*", "severity": "critical", "channels": ["slack", "hook"] });
    assert_eq!(
        post("/v1/admin/alert-rules", rule).await.unwrap().status(),
        201
    );
    let kill = serde_json::json!({ "scope": "global", "reason": "log test" });
    assert_eq!(
        post("/v1/admin/kill-switches", kill)
            .await
            .unwrap()
            .status(),
        201
    );

    for _ in 0..2 {
        served
            .wait_for("a delivery given up", |v| {
                v["message"] == "alert delivery failed" && v["outcome"] == "failed"
            })
            .await;
    }
    served.terminate();
    let (code, lines) = served.finish().await;
    assert_eq!(code, Some(0));
    for line in &lines {
        assert!(
            !line.contains("XyzSlackSecretPath") && !line.contains(hmac_key),
            "a channel secret leaked into the logs: {line}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn secret_settings_are_resolved_from_vault_at_start(pool: PgPool) {
    let bao = secrets::testing::OpenBao::start().await;
    let master = "1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    bao.put("bourse/keys", serde_json::json!({ "master": master }))
        .await;
    let vault = [
        ("BOURSE_VAULT_ADDR", bao.address.as_str()),
        ("BOURSE_VAULT_TOKEN", bao.token.as_str()),
    ];

    // A reference that names nothing: refused at start, by variable and reference, no value.
    let mut missing = vault.to_vec();
    missing.push(("BOURSE_MASTER_KEYS", "vault:secret/bourse/keys#nothing"));
    let stderr = refuses_to_start(&missing, &["BOURSE_MASTER_KEYS"]).await;
    assert!(
        stderr.contains("vault:secret/bourse/keys#nothing: not found"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(master) && !stderr.contains(&bao.token),
        "{stderr}"
    );

    // A reference that resolves: the services start with the value from Vault, and seal with it.
    let mut found = vault.to_vec();
    found.push(("BOURSE_MASTER_KEYS", "vault:secret/bourse/keys#master"));
    let mut served = Served::start_with(&pool, &found).await;
    served.address_of("gateway").await;
    let (kid, stored): (String, Vec<u8>) =
        sqlx::query_as("SELECT kid, private_key FROM auth.signing_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
    let keys = secrets::MasterKeys::parse(&secrets::SecretString::from(master.to_owned())).unwrap();
    assert!(
        auth::signing_keys::open(&keys, &kid, &stored).is_ok(),
        "sealed with Vault's key"
    );
    served.terminate();
    let (code, lines) = served.finish().await;
    assert_eq!(code, Some(0));
    assert!(
        lines.iter().all(|l| !l.contains(master)),
        "the key never reaches the logs"
    );
}

/// The README's walkthrough (the block between its `walkthrough` markers), run by bash exactly
/// as written against a fresh `serve all` — only the API's address and the way to run the
/// binary differ. Every step that expects success uses `curl -f`, so any answer the README
/// does not promise fails the run (SEC-10, OPS-09: the documented API is the real one).
#[sqlx::test(migrations = false)]
async fn the_readme_walkthrough_runs_as_written(pool: PgPool) {
    let readme = std::fs::read_to_string(bourse::testing::repo_file("README.md")).unwrap();
    let block = readme
        .split("<!-- walkthrough:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("the README marks its walkthrough");
    let written = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the walkthrough is one sh block");

    let mut served = Served::start(&pool).await;
    let gateway = served.ready_gateway().await;
    let script = written
        .replacen(
            "API=http://localhost:8080",
            &format!("API=http://{gateway}"),
            1,
        )
        .replacen(
            r#"bourse() { cargo run -q --release -p bourse -- "$@"; }"#,
            r#"bourse() { "$BOURSE_BIN" "$@"; }"#,
            1,
        );
    assert!(
        script.contains(&format!("API=http://{gateway}")) && script.contains("$BOURSE_BIN"),
        "the walkthrough still sets API and defines bourse() as the test expects"
    );
    // The operator's environment, for the walkthrough's `bourse` commands.
    let operator = operator_command(&pool);
    let ran = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("BOURSE_BIN", BOURSE)
        .envs(
            operator
                .as_std()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .output()
        .await
        .unwrap();
    assert!(
        ran.status.success(),
        "the walkthrough failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    // It did what it says: the order replayed, a fill with its fee, a page acknowledged.
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(stdout.to_lowercase().contains("idempotent-replayed: true"));
    assert!(stdout.contains("\"fee_asset\":\"USD\""), "{stdout}");
    let acknowledged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerting.alerts WHERE acknowledged_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(acknowledged, 1);
}
