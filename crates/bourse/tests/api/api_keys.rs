//! API keys for programs (SEC-19): made, listed and revoked by their owner, the secret shown
//! once and kept sealed, every change in the audit chain.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, Tokens, assert_problem, spawn_app, spawn_replica_of};

impl TestApp {
    async fn create_api_key(&self, who: &Tokens, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/api-keys"))
            .bearer_auth(&who.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn api_keys(&self, who: &Tokens) -> Vec<Value> {
        let response = self.get_authed("/v1/api-keys", &who.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn revoke_api_key(&self, who: &Tokens, id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/v1/api-keys/{id}")))
            .bearer_auth(&who.access_token)
            .send()
            .await
            .unwrap()
    }
}

#[sqlx::test(migrations = false)]
async fn a_key_is_shown_once_kept_sealed_listed_without_its_secret_and_revoked_by_its_owner(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;

    // Created: the secret is in this answer only.
    let created = app
        .create_api_key(
            &alice,
            &json!({ "name": "market maker", "scopes": ["trade", "read", "read"],
                     "allowed_ips": ["10.1.2.3/24", "192.0.2.7"] }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40, "256 bits of secret");
    assert!(created["key_id"].as_str().unwrap().starts_with("bk_"));
    assert_eq!(created["scopes"], json!(["read", "trade"]));
    // Networks as PostgreSQL keeps them: no host bits.
    assert_eq!(
        created["allowed_ips"],
        json!(["10.1.2.0/24", "192.0.2.7/32"])
    );
    let id = created["id"].as_str().unwrap().to_owned();

    // Sealed at rest: the secret is nowhere in the row.
    let stored: String = sqlx::query_scalar("SELECT secret_sealed FROM auth.api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        !stored.contains(&secret) && stored.starts_with("bse1."),
        "{stored}"
    );

    // Listed by its owner without the secret; nobody else sees it.
    let listed = app.api_keys(&alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("secret").is_none(), "{}", listed[0]);
    assert!(!listed[0].to_string().contains(&secret));
    assert!(app.api_keys(&bob).await.is_empty());

    // Bob cannot revoke it; Alice can, once.
    assert_problem(
        app.revoke_api_key(&bob, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.revoke_api_key(&alice, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.revoke_api_key(&alice, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let listed = app.api_keys(&alice).await;
    assert!(listed[0]["revoked_at"].is_string(), "{}", listed[0]);

    // Both changes are in the audit chain, with who did them.
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM auth.audit_log WHERE event_type LIKE 'api_key_%' ORDER BY seq",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(audited, ["api_key_created", "api_key_revoked"]);
}

#[sqlx::test(migrations = false)]
async fn hostile_key_requests_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;

    for (body, status, code) in [
        (
            json!({ "name": "x", "scopes": ["admin"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "name": "x", "scopes": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "   ", "scopes": ["read"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x".repeat(65), "scopes": ["read"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "allowed_ips": ["not-an-ip"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "allowed_ips": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "owner": Uuid::now_v7() }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let refused = app.create_api_key(&alice, &body).await;
        assert_problem(refused, status, code).await;
    }
    let anonymous = app
        .client
        .post(app.url("/v1/api-keys"))
        .json(&json!({ "name": "x", "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_problem(
        app.revoke_api_key(&alice, "not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0);

    // At most ten active keys: the eleventh waits for a revocation.
    for n in 0..10 {
        let made = app
            .create_api_key(
                &alice,
                &json!({ "name": format!("bot {n}"), "scopes": ["read"] }),
            )
            .await;
        assert_eq!(made.status(), StatusCode::CREATED);
    }
    assert_problem(
        app.create_api_key(&alice, &json!({ "name": "one more", "scopes": ["read"] }))
            .await,
        StatusCode::CONFLICT,
        "too_many_api_keys",
    )
    .await;
}

/// A program holding an API key: signs each request as the docs show (SEC-19).
struct Program<'a> {
    app: &'a TestApp,
    key_id: String,
    secret: String,
}

/// How a test bends a signed request.
#[derive(Default)]
struct Bend {
    /// Milliseconds added to the clock the program signs with.
    skew_ms: i64,
    recv_window: Option<&'static str>,
    /// Signs this body but sends the real one.
    signed_body: Option<&'static str>,
    key_id: Option<&'static str>,
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

impl<'a> Program<'a> {
    async fn of(app: &'a TestApp, owner: &Tokens, body: &Value) -> Program<'a> {
        let created = app.create_api_key(owner, body).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        Program {
            app,
            key_id: created["key_id"].as_str().unwrap().to_owned(),
            secret: created["secret"].as_str().unwrap().to_owned(),
        }
    }

    /// The headers of a request signed now (bent by `bend`).
    fn headers(&self, method: &str, path: &str, body: &str, bend: &Bend) -> Vec<(String, String)> {
        let timestamp = (now_ms() + bend.skew_ms).to_string();
        let signed = bend.signed_body.unwrap_or(body);
        let mut headers = vec![
            (
                "x-bourse-key".to_owned(),
                bend.key_id.unwrap_or(&self.key_id).to_owned(),
            ),
            ("x-bourse-timestamp".to_owned(), timestamp.clone()),
            (
                "x-bourse-signature".to_owned(),
                bourse::testing::api_key_signature(&self.secret, &timestamp, method, path, signed),
            ),
        ];
        if let Some(window) = bend.recv_window {
            headers.push(("x-bourse-recv-window".to_owned(), window.to_owned()));
        }
        headers
    }

    async fn send_bent(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        bend: &Bend,
    ) -> Response {
        let body = body.map(Value::to_string).unwrap_or_default();
        let headers = self.headers(method, path, &body, bend);
        self.send_with(method, path, body, &headers).await
    }

    async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: String,
        headers: &[(String, String)],
    ) -> Response {
        let mut request = self
            .app
            .client
            .request(method.parse().unwrap(), self.app.url(path))
            .header("idempotency-key", Uuid::now_v7().to_string());
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }

    /// Its owner revokes this key (through `app`, which may be another replica).
    async fn revoke_through(&self, app: &TestApp, owner: &Tokens) {
        let keys = app.api_keys(owner).await;
        let mine = keys
            .iter()
            .find(|k| k["key_id"] == self.key_id.as_str())
            .expect("the owner lists this key");
        let revoked = app
            .revoke_api_key(owner, mine["id"].as_str().unwrap())
            .await;
        assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.send_bent(method, path, body, &Bend::default()).await
    }
}

fn buy() -> Value {
    json!({ "symbol": "BTC-USD", "side": "buy", "type": "limit", "price": "30000.00",
            "quantity": "0.01", "time_in_force": "gtc" })
}

#[sqlx::test(migrations = false)]
async fn a_signed_request_acts_as_the_keys_owner_within_its_scopes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, alice, bob) = app.funded_market().await;
    let alice_id = app.user_id(&alice).await;
    let trader = Program::of(
        &app,
        &alice,
        &json!({ "name": "bot", "scopes": ["read", "trade"] }),
    )
    .await;

    // Reads and orders as Alice, through the key's own rate-limit tier.
    let balances = trader.send("GET", "/v1/balances", None).await;
    assert_eq!(balances.status(), StatusCode::OK);
    let policy = balances.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("api-key"), "{policy}");
    let placed = trader.send("POST", "/v1/orders", Some(&buy())).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["account_id"], json!(alice_id));
    let own = trader
        .send(
            "GET",
            &format!("/v1/orders/{}", placed["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    // A query is part of what is signed.
    let listed = trader.send("GET", "/v1/orders?limit=5", None).await;
    assert_eq!(listed.status(), StatusCode::OK);
    // Another user's order stays another user's.
    let bobs = app.placed_order(&bob, &buy()).await;
    let theirs = trader
        .send(
            "GET",
            &format!("/v1/orders/{}", bobs["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    // A key manages nothing and opens no session routes.
    assert_problem(
        trader
            .send(
                "POST",
                "/v1/api-keys",
                Some(&json!({ "name": "x", "scopes": ["read"] })),
            )
            .await,
        StatusCode::FORBIDDEN,
        "api_key_not_allowed",
    )
    .await;
    assert_problem(
        trader.send("GET", "/v1/auth/me", None).await,
        StatusCode::FORBIDDEN,
        "api_key_not_allowed",
    )
    .await;
    // A read-only key cannot trade.
    let reader = Program::of(
        &app,
        &alice,
        &json!({ "name": "dashboard", "scopes": ["read"] }),
    )
    .await;
    assert_problem(
        reader.send("POST", "/v1/orders", Some(&buy())).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    // Only the one order of Alice's went through.
    assert_eq!(
        crate::helpers::count(
            &app.db,
            &format!("SELECT count(*) FROM orders.orders WHERE account_id = '{alice_id}'")
        )
        .await,
        1
    );
}

#[sqlx::test(migrations = false)]
async fn replayed_stale_tampered_and_unknown_signatures_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, alice, _) = app.funded_market().await;
    let trader = Program::of(
        &app,
        &alice,
        &json!({ "name": "bot", "scopes": ["read", "trade"] }),
    )
    .await;
    let body = buy().to_string();

    // The same signed request twice: the second is a replay, whatever replica gets it.
    let headers = trader.headers("POST", "/v1/orders", &body, &Bend::default());
    let first = trader
        .send_with("POST", "/v1/orders", body.clone(), &headers)
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_problem(
        trader
            .send_with("POST", "/v1/orders", body.clone(), &headers)
            .await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
    )
    .await;

    // Ten seconds off: outside the default 5 s window, inside an asked-for 30 s one.
    let late = Bend {
        skew_ms: -10_000,
        ..Bend::default()
    };
    assert_problem(
        trader.send_bent("GET", "/v1/balances", None, &late).await,
        StatusCode::UNAUTHORIZED,
        "stale_request",
    )
    .await;
    let ahead = Bend {
        skew_ms: 10_000,
        ..Bend::default()
    };
    assert_problem(
        trader.send_bent("GET", "/v1/balances", None, &ahead).await,
        StatusCode::UNAUTHORIZED,
        "stale_request",
    )
    .await;
    let patient = Bend {
        skew_ms: -10_000,
        recv_window: Some("30000"),
        ..Bend::default()
    };
    assert_eq!(
        trader
            .send_bent("GET", "/v1/balances", None, &patient)
            .await
            .status(),
        StatusCode::OK
    );
    let greedy = Bend {
        recv_window: Some("61000"),
        ..Bend::default()
    };
    assert_problem(
        trader.send_bent("GET", "/v1/balances", None, &greedy).await,
        StatusCode::UNAUTHORIZED,
        "invalid_recv_window",
    )
    .await;

    // A body other than the one signed, a forged signature, an unknown key.
    let tampered = Bend {
        signed_body: Some(r#"{"symbol":"BTC-USD"}"#),
        ..Bend::default()
    };
    assert_problem(
        trader
            .send_bent("POST", "/v1/orders", Some(&buy()), &tampered)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    )
    .await;
    let mut forged = trader.headers("GET", "/v1/balances", "", &Bend::default());
    forged[2].1 = "0".repeat(64);
    assert_problem(
        trader
            .send_with("GET", "/v1/balances", String::new(), &forged)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    )
    .await;
    let unknown = Bend {
        key_id: Some("bk_no_such_key"),
        ..Bend::default()
    };
    assert_problem(
        trader
            .send_bent("GET", "/v1/balances", None, &unknown)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    // Only the first order exists.
    let alice_id = app.user_id(&alice).await;
    assert_eq!(
        crate::helpers::count(
            &app.db,
            &format!("SELECT count(*) FROM orders.orders WHERE account_id = '{alice_id}'")
        )
        .await,
        1
    );
}

#[sqlx::test(migrations = false)]
async fn a_revoked_key_is_refused_at_once_and_a_keys_networks_are_enforced(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;
    let program = Program::of(&app, &alice, &json!({ "name": "bot", "scopes": ["read"] })).await;
    // Used once, so the gateway holds its credential.
    assert_eq!(
        program.send("GET", "/v1/balances", None).await.status(),
        StatusCode::OK
    );
    program.revoke_through(&app, &alice).await;
    assert_problem(
        program.send("GET", "/v1/balances", None).await,
        StatusCode::UNAUTHORIZED,
        "api_key_revoked",
    )
    .await;

    // A key for another network is refused from here (loopback).
    let elsewhere = Program::of(
        &app,
        &alice,
        &json!({ "name": "office", "scopes": ["read"], "allowed_ips": ["192.0.2.0/24"] }),
    )
    .await;
    assert_problem(
        elsewhere.send("GET", "/v1/balances", None).await,
        StatusCode::UNAUTHORIZED,
        "address_not_allowed",
    )
    .await;
    let here = Program::of(
        &app,
        &alice,
        &json!({ "name": "local", "scopes": ["read"], "allowed_ips": ["127.0.0.0/8", "::1"] }),
    )
    .await;
    assert_eq!(
        here.send("GET", "/v1/balances", None).await.status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrations = false)]
async fn replicas_share_what_was_used_and_what_was_revoked(pool: PgPool) {
    // Two platforms on one database and one Redis prefix: two gateway replicas, as deployed.
    let first = spawn_app(pool).await;
    let second = spawn_replica_of(&first).await;
    let alice = first.signed_up("alice@example.com").await;
    let on_first = Program::of(
        &first,
        &alice,
        &json!({ "name": "bot", "scopes": ["read"] }),
    )
    .await;
    let on_second = Program {
        app: &second,
        key_id: on_first.key_id.clone(),
        secret: on_first.secret.clone(),
    };

    // Accepted by one replica, a replay at the other.
    let headers = on_first.headers("GET", "/v1/balances", "", &Bend::default());
    let accepted = on_first
        .send_with("GET", "/v1/balances", String::new(), &headers)
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_problem(
        on_second
            .send_with("GET", "/v1/balances", String::new(), &headers)
            .await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
    )
    .await;
    // The second replica holds the key's credential now; a revocation through the first
    // reaches it at once.
    assert_eq!(
        on_second.send("GET", "/v1/balances", None).await.status(),
        StatusCode::OK
    );
    on_first.revoke_through(&first, &alice).await;
    assert_problem(
        on_second.send("GET", "/v1/balances", None).await,
        StatusCode::UNAUTHORIZED,
        "api_key_revoked",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_program_opens_the_stream_with_a_signed_upgrade(pool: PgPool) {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;
    let alice_id = app.user_id(&alice).await;
    let program = Program::of(&app, &alice, &json!({ "name": "feed", "scopes": ["read"] })).await;
    let url = format!("{}/v1/stream", app.gateway.replacen("http", "ws", 1));
    let open = |bend: Bend| {
        let mut request = url.clone().into_client_request().unwrap();
        for (name, value) in program.headers("GET", "/v1/stream", "", &bend) {
            request.headers_mut().insert(
                axum::http::HeaderName::try_from(name).unwrap(),
                value.parse().unwrap(),
            );
        }
        tokio_tungstenite::connect_async(request)
    };
    let (mut socket, _) = open(Bend::default()).await.unwrap();
    let first = loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(first["type"], "authenticated");
    assert_eq!(first["account_id"], json!(alice_id));
    // A stale upgrade is refused before it is upgraded.
    let refused = open(Bend {
        skew_ms: -60_000,
        ..Bend::default()
    })
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("a stale upgrade was not refused: {:?}", other.map(|_| ())),
    }
}

#[sqlx::test(migrations = false)]
async fn the_python_signing_example_in_the_docs_runs(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;
    let program = Program::of(
        &app,
        &alice,
        &json!({ "name": "script", "scopes": ["read"] }),
    )
    .await;
    let doc = std::fs::read_to_string(bourse::testing::repo_file("docs/api-keys.md")).unwrap();
    let block = doc
        .split("<!-- python-signing:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- python-signing:end -->").next())
        .expect("the Python block between its markers");
    let code = block
        .trim()
        .strip_prefix("```python")
        .and_then(|code| code.strip_suffix("```"))
        .expect("a fenced python block");

    let ran = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .env("BOURSE_API", &app.gateway)
        .env("BOURSE_KEY_ID", &program.key_id)
        .env("BOURSE_SECRET", &program.secret)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // Its signed GET was accepted as Alice's: her balances, a JSON list.
    let (status, balances) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(status, "200");
    assert!(serde_json::from_str::<Value>(balances).unwrap().is_array());
}
