//! `spawn_app()` and typed helpers, so each test reads as setup / act / check.

use std::str::FromStr;

use bourse::Target;
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::{Env, Shutdown};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    /// Base URL of the gateway — the only address a client uses.
    pub gateway: String,
    /// Base URL of auth, for tests that must bypass the gateway.
    pub auth: String,
    /// Base URL of orders, likewise.
    pub orders: String,
    /// Base URL of settlement, likewise (its `/internal/*` routes).
    pub settlement: String,
    /// Base URL of risk, likewise.
    pub risk: String,
    pub client: reqwest::Client,
    /// The test's own database (public schema); services use their schemas in it.
    pub db: PgPool,
    pub redis_prefix: String,
    shutdown: Shutdown,
    /// The services' edge-first stop, awaited by [`TestApp::stop`].
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// A development CA and service certificate issued by `tools/tls/dev-ca.sh` into a fresh
/// directory: (ca.pem, service.pem, service.key) paths.
pub fn dev_certificates() -> DevCertificates {
    let dir = std::env::temp_dir().join(format!("bourse-tls-{}", Uuid::now_v7()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/tls/dev-ca.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("dev-ca.sh runs");
    assert!(status.success(), "dev-ca.sh failed");
    let path = |name: &str| dir.join(name).display().to_string();
    DevCertificates {
        ca: path("ca.pem"),
        cert: path("service.pem"),
        key: path("service.key"),
        dir,
    }
}

pub struct DevCertificates {
    pub ca: String,
    pub cert: String,
    pub key: String,
    dir: std::path::PathBuf,
}

impl DevCertificates {
    /// The settings that put a deployment on these certificates, mTLS between services.
    pub fn settings(&self) -> [(&str, &str); 3] {
        [
            ("BOURSE_TLS_CERT", self.cert.as_str()),
            ("BOURSE_TLS_KEY", self.key.as_str()),
            ("BOURSE_TLS_CA", self.ca.as_str()),
        ]
    }
}

impl Drop for DevCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub use bourse::testing::{database_url, database_url_named};

/// The environment every test app starts from (shared with the load generator's test).
pub fn base_env(pool: &PgPool) -> Vec<(String, String)> {
    bourse::testing::test_env(pool)
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, &[]).await
}

/// Starts every service with `overrides` applied on top of [`base_env`].
pub async fn spawn_app_with(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_without(pool, overrides, &[]).await
}

/// Every service but `absent` (a test runs those as processes of their own and points the
/// others at them with `BOURSE_<TARGET>_URL` overrides); their URLs in [`TestApp`] are empty.
/// More replicas of `first`'s services, on its database and Redis prefix, as deployed — all but
/// risk, which runs as one replica (ADR 0018: its memory, reservations included, would split
/// across two, and so would the streams its consumer group reads): this one calls `first`'s.
pub async fn spawn_replica_of(first: &TestApp) -> TestApp {
    spawn_app_without(
        first.db.clone(),
        &[
            ("BOURSE_REDIS_KEY_PREFIX", first.redis_prefix.as_str()),
            ("BOURSE_RISK_URL", first.risk.as_str()),
        ],
        &[Target::Risk],
    )
    .await
}

pub async fn spawn_app_without(
    pool: PgPool,
    overrides: &[(&str, &str)],
    absent: &[Target],
) -> TestApp {
    let mut vars = base_env(&pool);
    for (key, value) in overrides {
        vars.retain(|(k, _)| k != key);
        vars.push(((*key).to_owned(), (*value).to_owned()));
    }
    let redis_prefix = vars
        .iter()
        .find(|(k, _)| k == "BOURSE_REDIS_KEY_PREFIX")
        .map(|(_, v)| v.clone())
        .expect("prefix is set");
    let targets: Vec<Target> = Target::expand(&[Target::All])
        .into_iter()
        .filter(|t| !absent.contains(t))
        .collect();
    // As the binary does: secret settings given as references are resolved, and kept fresh.
    let Ok(resolved) = secrets::settings::resolve(vars).await else {
        panic!("the test's secret references resolve");
    };
    let mut plan =
        bourse::plan(&targets, Env::from_pairs(resolved.vars)).expect("valid test config");
    // Under TLS the test calls like a service of the deployment: it trusts the service CA and
    // presents the service certificate (the gateway does not ask for it).
    let scheme = plan.common.tls.scheme();
    let client = plan
        .common
        .tls
        .service_client()
        .expect("test client")
        .build()
        .expect("test client");
    let shutdown = Shutdown::new();
    let refresher = bourse::keep_secrets_fresh(&mut plan, &resolved.live, &shutdown).await;
    let running = bourse::start(plan, &shutdown)
        .await
        .expect("services start");
    let address = |target| {
        running
            .address(target)
            .map(|address| format!("{scheme}://{address}"))
            .unwrap_or_default()
    };
    let (gateway, auth, orders) = (
        address(Target::Gateway),
        address(Target::Auth),
        address(Target::Orders),
    );
    let (settlement, risk) = (address(Target::Settlement), address(Target::Risk));
    let stopped = Some(tokio::spawn(async move {
        let result = running.wait().await;
        refresher
            .await
            .expect("the secret refresher ends with the services");
        result
    }));
    TestApp {
        gateway,
        auth,
        orders,
        settlement,
        risk,
        client,
        db: pool,
        redis_prefix,
        shutdown,
        stopped,
    }
}

impl TestApp {
    /// Stops every service and waits until they have: nothing of this app runs afterwards.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.gateway, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// The tokens of a user signed up earlier (with [`PASSWORD`]), logged in again: on a
    /// platform started anew over the same database, say.
    pub async fn logged_in_again(&self, email: &str) -> Tokens {
        self.login(email, PASSWORD)
            .await
            .json::<Tokens>()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json(
            "/v1/auth/refresh",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Registers `email` with [`PASSWORD`] and logs in.
    pub async fn signed_up(&self, email: &str) -> Tokens {
        let registered = self.register(email, PASSWORD).await;
        assert_eq!(registered.status(), StatusCode::CREATED);
        let login = self.login(email, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::OK);
        login.json().await.expect("token body")
    }

    /// A signed-up user given `roles` directly in the database (as `bourse admin` would), then
    /// logged in again so the token carries them.
    pub async fn signed_up_with_roles(&self, email: &str, roles: &[&str]) -> Tokens {
        self.signed_up(email).await;
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        sqlx::query("UPDATE auth.users SET roles = $2 WHERE email = $1")
            .bind(email)
            .bind(&roles)
            .execute(&self.db)
            .await
            .expect("roles set");
        self.login(email, PASSWORD)
            .await
            .json()
            .await
            .expect("token body")
    }

    pub async fn get_authed(&self, path: &str, access_token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    /// The first entry of this app's stream `name` (`orders`, `ops`…), awaited with
    /// `XREAD BLOCK` — the test wakes when it is published: (`type`, parsed envelope).
    pub async fn first_event(&self, name: &str) -> (String, Value) {
        self.first_event_where(name, |_| true).await
    }

    /// The first entry of type `event_type` in this app's stream `name`: its parsed envelope.
    /// A connection to the shared Redis the app runs on, and the app's own keys in it: for a
    /// test that plays a part the platform's Redis traffic plays (a late publisher, a relay).
    pub async fn redis(&self) -> (redis::aio::ConnectionManager, service_kit::redis::KeyPrefix) {
        let redis = service_kit::redis::connect_url(&"redis://127.0.0.1:6379".into(), None)
            .await
            .unwrap();
        (
            redis,
            service_kit::redis::KeyPrefix::new(&self.redis_prefix),
        )
    }

    pub async fn first_event_of(&self, name: &str, event_type: &str) -> Value {
        self.first_event_where(name, |t| t == event_type).await.1
    }

    /// The first entry of stream `name` whose type `wanted` accepts, read from the start and
    /// awaited entry by entry with `XREAD BLOCK` (20 s without a new entry fails the test).
    async fn first_event_where(
        &self,
        name: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> (String, Value) {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        // The client's default response timeout is shorter than the block.
        redis.set_response_timeout(std::time::Duration::from_secs(25));
        let mut after = "0".to_owned();
        loop {
            let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(20_000)
                .arg("STREAMS")
                .arg(format!("{}.{name}", self.redis_prefix))
                .arg(&after)
                .query_async(&mut redis)
                .await
                .unwrap();
            let entries = &reply.keys.first().expect("an event within 20 s").ids;
            for entry in entries {
                let event_type: String = entry.get("type").unwrap();
                if wanted(&event_type) {
                    let envelope: String = entry.get("envelope").unwrap();
                    return (event_type, serde_json::from_str(&envelope).unwrap());
                }
            }
            after.clone_from(&entries.last().expect("XREAD answers entries").id);
        }
    }

    /// An unauthenticated GET through the gateway.
    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// The gateway's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get_authed("/v1/auth/me", access_token).await
    }

    /// BTC-USD (tick 0.01, lot 0.0001), created by `admin`; an existing one is fine.
    pub async fn btc_usd(&self, admin: &Tokens) {
        let created = self
            .client
            .post(self.url("/v1/admin/instruments"))
            .bearer_auth(&admin.access_token)
            .json(&json!({ "symbol": "BTC-USD", "base_asset": "BTC", "quote_asset": "USD", "tick_size": "0.01", "lot_size": "0.0001" }))
            .send()
            .await
            .unwrap();
        assert!(
            created.status() == StatusCode::CREATED || created.status() == StatusCode::CONFLICT
        );
    }

    /// BTC-USD, an admin, and Alice and Bob each funded with 1,000,000 USD and 100 BTC:
    /// (admin, alice, bob).
    pub async fn funded_market(&self) -> (Tokens, Tokens, Tokens) {
        let admin = self
            .signed_up_with_roles("treasury@example.com", &["admin"])
            .await;
        self.btc_usd(&admin).await;
        let alice = self.signed_up("alice@example.com").await;
        let bob = self.signed_up("bob@example.com").await;
        for who in [&alice, &bob] {
            let account = self.user_id(who).await;
            self.deposit(&admin, account, "USD", "1000000").await;
            self.deposit(&admin, account, "BTC", "100").await;
        }
        (admin, alice, bob)
    }

    /// `POST /v1/orders` as `who`, with a fresh Idempotency-Key.
    pub async fn place_order(&self, who: &Tokens, order: &Value) -> Response {
        self.client
            .post(self.url("/v1/orders"))
            .bearer_auth(&who.access_token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(order)
            .send()
            .await
            .unwrap()
    }

    /// [`Self::place_order`], expecting 201; the order.
    pub async fn placed_order(&self, who: &Tokens, order: &Value) -> Value {
        let response = self.place_order(who, order).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// `POST /v1/admin/reconciliation` as `admin`: the report.
    pub async fn reconciliation(&self, admin: &Tokens) -> Value {
        self.client
            .post(self.url("/v1/admin/reconciliation"))
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The user id (= account id) behind `tokens`.
    pub async fn user_id(&self, tokens: &Tokens) -> Uuid {
        let me: Value = self.me(&tokens.access_token).await.json().await.unwrap();
        me["id"].as_str().unwrap().parse().unwrap()
    }

    /// An admin's deposit of `amount` `asset` into `account`, through the gateway.
    pub async fn deposit(&self, admin: &Tokens, account: Uuid, asset: &str, amount: &str) {
        let response = self
            .client
            .post(self.url("/v1/admin/deposits"))
            .bearer_auth(&admin.access_token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&json!({ "account_id": account, "asset": asset, "amount": amount }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "deposit");
        // Risk refuses what its own view of the account cannot fund (ADR 0023), and that view
        // follows the ledger through a stream: wait for the deposit to be credited there, as
        // a client waits for a deposit to be credited before trading with it.
        self.risk_caught_up(admin, account, asset).await;
    }

    /// A service token of `client` (its development secret) for `audience`, minted by this
    /// app's auth: what the client service itself would send.
    pub async fn service_token(&self, client: &'static str, audience: &str) -> String {
        use secrecy::ExposeSecret as _;
        let auth = resilience::Upstream::new(
            client,
            "auth",
            &self.auth,
            reqwest::Client::new(),
            resilience::Policy::default(),
        )
        .unwrap();
        let secret = access::service::client_secret(
            &mut Env::from_pairs(Vec::<(String, String)>::new()),
            client,
            false,
        );
        resilience::TokenSource::new(auth, client, secret)
            .token(audience)
            .await
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    /// Waits until risk's pre-trade stage sees `account`'s `asset` as the ledger books it
    /// (`available`), read as `reader` (an admin or risk officer). Returns at once when
    /// risk is not running; waits while it loads balances (it refuses orders until it decides).
    pub async fn risk_caught_up(&self, reader: &Tokens, account: Uuid, asset: &str) {
        let booked: Option<(i64, i16)> = sqlx::query_as(
            "SELECT a.available, s.scale
               FROM settlement.accounts a JOIN settlement.assets s ON s.code = a.asset
              WHERE a.owner_id = $1 AND a.asset = $2",
        )
        .bind(account)
        .bind(asset)
        .fetch_optional(&self.db)
        .await
        .unwrap();
        let Some((units, scale)) = booked else {
            return;
        };
        let scale = u32::try_from(scale).unwrap();
        let booked = contracts::format_units(units, scale);
        service_kit::testing::eventually(
            &format!("risk to see {booked} {asset} for {account}"),
            || async {
                let Some(view) = risk_funds(self, reader, account).await else {
                    return true;
                };
                view.get(asset).map_or_else(
                    || contracts::format_units(0, scale),
                    |figures| figures.balance.clone(),
                ) == booked
            },
        )
        .await;
    }
}

impl TestApp {
    /// The alert alerting raised for `event_type`, once it has (ALR-07), read as `reader`.
    pub async fn alert_of(&self, reader: &Tokens, event_type: &str) -> Value {
        service_kit::testing::eventually_some(&format!("an alert for {event_type}"), || async {
            let response = self
                .get_authed("/v1/admin/alerts", &reader.access_token)
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let alerts: Value = response.json().await.unwrap();
            alerts
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["event_type"] == event_type)
                .cloned()
        })
        .await
    }
}

/// Sends `request` with `token` as its bearer, or with no credentials at all.
pub async fn sent_as(request: reqwest::RequestBuilder, token: Option<String>) -> Response {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

/// An account's figures of one asset, as decimal strings: what it owns, what is promised out of
/// it (open orders' reservations, trades not yet settled), and what is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    pub balance: String,
    pub committed: String,
    pub free: String,
}

pub type FundsView = std::collections::BTreeMap<String, Figures>;

/// What risk says `account` owns, by asset (`GET /v1/admin/risk-funds/{account}`), read as
/// `reader`, once it decides on them; `None` when risk is not running. A risk still loading
/// settlement's snapshot (503 `funds_loading`), or that has its balances but has not yet read
/// the orders committed before its start (`deciding: false`, ADR 0023), is waited for: it is
/// moments away, and until then it refuses every order (503).
pub async fn risk_funds(app: &TestApp, reader: &Tokens, account: uuid::Uuid) -> Option<FundsView> {
    if app.risk.is_empty() {
        return None; // Not running in this app.
    }
    let view = service_kit::testing::eventually_some("risk to decide on funds", || async {
        // Asked of risk itself, not through the gateway: risk's 503s while it loads would
        // count against the gateway's breaker for risk and open it.
        let response = app
            .client
            .get(format!("{}/v1/admin/risk-funds/{account}", app.risk))
            .bearer_auth(&reader.access_token)
            .send()
            .await;
        let Ok(response) = response else {
            return Some(None); // Not answering at all: not running.
        };
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            // Loading after its start: moments away, and orders are refused until then.
            return None;
        }
        assert_eq!(response.status(), StatusCode::OK);
        let view: Value = response.json().await.unwrap();
        view["deciding"].as_bool().unwrap().then_some(Some(view))
    })
    .await?;
    assert_eq!(view["account_id"], account.to_string());
    let text = |b: &Value, field: &str| b[field].as_str().unwrap().to_owned();
    Some(
        view["balances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let figures = Figures {
                    balance: text(b, "balance"),
                    committed: text(b, "committed"),
                    free: text(b, "free"),
                };
                (text(b, "asset"), figures)
            })
            .collect(),
    )
}

/// Asserts a problem+json response with `status` and `code`, and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    assert_eq!(
        body["request_id"].as_str().map(str::to_owned),
        request_id,
        "problem quotes the request id"
    );
    body
}

/// A pool on one service's schema of the test database, for calling that service's library
/// functions directly, as the CLI does.
pub async fn schema_pool(pool: &PgPool, schema: &str) -> PgPool {
    let options = PgConnectOptions::from_str(&database_url(pool))
        .expect("url parses")
        .options([("search_path", schema)]);
    PgPool::connect_with(options)
        .await
        .expect("schema pool connects")
}

/// The master keys a test app seals with (the development default).
pub fn master_keys() -> std::sync::Arc<secrets::MasterKeys> {
    secrets::envelope::read_master_keys(&mut Env::from_pairs(Vec::<(String, String)>::new()), false)
}

/// A pool on auth's schema.
pub async fn auth_pool(app: &TestApp) -> PgPool {
    schema_pool(&app.db, "auth").await
}

/// One number from the test database (`SELECT count(*) …`, or any single int8).
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `gateway_requests_shed_total` of one admission lane and upstream, from the gateway's
/// `/metrics`.
pub fn shed(metrics: &str, lane: &str, upstream: &str) -> f64 {
    let series = format!(r#"gateway_requests_shed_total{{lane="{lane}",upstream="{upstream}"}} "#);
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in:\n{metrics}"))
}
