//! The fault suite (REL-17): the platform, each service its own `bourse serve <service>`
//! process on a PostgreSQL cluster and a Redis server of the suite's own, trades under a
//! steady load while it is broken in every way production breaks it —
//!
//! 1. each service killed with SIGKILL in turn and started again;
//! 2. PostgreSQL stopped (every connection cut) for 45 s, as a managed failover takes;
//! 3. Redis killed for 15 s and started again *empty*, as a Redis without persistence (or a
//!    failover to a replica that lagged) comes back;
//! 4. with two orders replicas, the owner of a symbol killed — also under the load generator's
//!    whole mix, whose invariants must hold afterwards — or paused;
//! 5. the gateway killed under the load generator's mix: its WebSocket subscribers connect
//!    again and catch up on what they missed;
//!
//! — and afterwards: every order answered 2xx is stored exactly once, every executed trade is
//! settled exactly once, nothing was dead-lettered, no request was answered 500 (a dependency
//! away is a 503 that says when to retry, or a 504), the books reconcile, and the outages were
//! alerted and resolved.
//!
//! The outages touch only the suite's own servers (`service_kit::testing::{PgCluster,
//! RedisServer}`): the shared PostgreSQL and Redis other tests use are never stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Shutdown;
use service_kit::testing::{PgCluster, RedisServer, eventually, eventually_some, free_ports};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
/// Upstreams first: each starts once what it calls answers.
const SERVICES: [&str; 6] = [
    "auth",
    "risk",
    "settlement",
    "orders",
    "alerting",
    "gateway",
];
/// How long the database is away: a managed PostgreSQL failover takes 30-120 s.
const DATABASE_OUTAGE: Duration = Duration::from_secs(45);
/// How long Redis is away before it comes back empty.
const REDIS_OUTAGE: Duration = Duration::from_secs(15);

/// Every service as a process of its own, on servers of the suite's own. An instance is named
/// by its service, or `<service>-<n>` for a further replica of it (`orders-2`).
struct Platform {
    database: PgCluster,
    redis: RedisServer,
    ports: BTreeMap<&'static str, u16>,
    processes: BTreeMap<&'static str, Child>,
    db: PgPool,
}

impl Platform {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Every service, then the `replicas` (further instances) in order.
    async fn start_with(replicas: &[&'static str]) -> Self {
        let database = PgCluster::start().await;
        let redis = RedisServer::start().await;
        let instances: Vec<&'static str> = SERVICES.iter().chain(replicas).copied().collect();
        let ports = instances
            .iter()
            .copied()
            .zip(free_ports(instances.len()))
            .collect();
        let mut platform = Self {
            db: PgPool::connect_lazy(&database.url("bourse")).unwrap(),
            database,
            redis,
            ports,
            processes: BTreeMap::new(),
        };
        for instance in instances {
            platform.spawn(instance);
            platform.until_ready(instance).await;
        }
        platform
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    /// The settings every process gets: the suite's servers, every service's address.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), self.database.url("bourse")),
            ("REDIS_URL".into(), self.redis.url()),
            ("BOURSE_BIND_HOST".into(), "127.0.0.1".into()),
            ("BOURSE_LOG".into(), "warn".into()),
            ("BOURSE_AUTH_ARGON2_MEMORY_KIB".into(), "4096".into()),
            ("BOURSE_AUTH_ARGON2_ITERATIONS".into(), "1".into()),
            ("BOURSE_DATABASE_MAX_CONNECTIONS".into(), "5".into()),
            ("BOURSE_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
            // Trades are compared with settlement the moment both have them.
            (
                "BOURSE_SETTLEMENT_RECONCILIATION_GRACE_SECS".into(),
                "0".into(),
            ),
            // The health watch notices an outage within about a second.
            ("BOURSE_ALERTING_WATCH_INTERVAL_MS".into(), "500".into()),
            (
                "BOURSE_ALERTING_WATCH".into(),
                SERVICES
                    .iter()
                    .filter(|s| **s != "alerting")
                    .map(|s| format!("{s}={}", self.url(s)))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        for service in SERVICES {
            let upper = service.to_uppercase();
            env.push((
                format!("BOURSE_{upper}_PORT"),
                self.ports[service].to_string(),
            ));
            if service != "gateway" {
                // Callers are given every replica (`orders`, `orders-2`), as a deployment with
                // nothing in front of them lists theirs.
                let replicas: Vec<String> = self
                    .ports
                    .keys()
                    .filter(|instance| instance.split('-').next() == Some(service))
                    .map(|instance| self.url(instance))
                    .collect();
                env.push((format!("BOURSE_{upper}_URL"), replicas.join(",")));
            }
        }
        env
    }

    fn spawn(&mut self, instance: &'static str) {
        let service = instance.split('-').next().unwrap();
        let port = (
            format!("BOURSE_{}_PORT", service.to_uppercase()),
            self.ports[instance].to_string(),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_bourse"))
            .args(["serve", service])
            .env_clear()
            .envs(self.env())
            .envs([port])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.processes.insert(instance, child);
    }

    async fn until_ready(&self, service: &str) {
        let url = format!("{}/health/ready", self.url(service));
        eventually(&format!("{service} to be ready"), || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    async fn until_all_ready(&self) {
        for service in SERVICES {
            self.until_ready(service).await;
        }
    }

    /// SIGKILL: no drain, no flush, no acknowledgement; then a fresh process.
    async fn kill_and_restart(&mut self, service: &'static str) {
        let mut child = self.processes.remove(service).unwrap();
        child.kill().await.unwrap();
        self.spawn(service);
        self.until_ready(service).await;
    }

    /// The load generator's mix on BTC-USD through the gateway for `seconds` — 60 actions a
    /// second from 4 traders, 2 WebSocket subscribers — with an operator of its own; its report
    /// when the run is over.
    async fn load_generator_running(
        &self,
        seconds: u64,
        seed: u64,
    ) -> tokio::task::JoinHandle<Result<loadgen::Report, loadgen::Error>> {
        let operator = "loadgen-operator@example.com";
        trader(self, operator, &["admin"]).await;
        let config = loadgen::Config {
            gateway: self.url("gateway"),
            rate: 60,
            duration_secs: seconds,
            accounts: 4,
            subscribers: 2,
            symbol: "BTC-USD".to_owned(),
            admin_email: operator.to_owned(),
            admin_password: PASSWORD.to_owned(),
            seed,
            max_in_flight: 1_000,
            settle_timeout_secs: 60,
        };
        tokio::spawn(async move { loadgen::run(&config).await })
    }

    async fn until_every_trade_settled(&self) {
        eventually("every executed trade settled", || async {
            self.count(
                "SELECT count(*) FROM orders.trades t
                  WHERE NOT EXISTS (SELECT 1 FROM settlement.settled_trades s
                                     WHERE s.trade_id = t.id)",
            )
            .await
                == 0
        })
        .await;
    }

    /// Settlement's reconciliation, asked by `admin`, finds nothing wrong: the ledger balances,
    /// nothing is held in it, every trade is counted.
    async fn assert_reconciled(&self, admin: &str) {
        let report: Value = reqwest::Client::new()
            .post(format!("{}/v1/admin/reconciliation", self.url("gateway")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["ok"], true, "{report}");
    }

    /// One number from the platform's database.
    /// What two books for one symbol would leave behind, checked in what orders stored: a
    /// crossed market, a book sequence written twice, or one that went back across a takeover.
    async fn assert_one_book_per_symbol(&self) {
        // Never a crossed market: no open bid at or above an open ask of the same symbol.
        let crossed = self
            .count(
                "SELECT count(*) FROM orders.orders b JOIN orders.orders a
                ON a.symbol = b.symbol AND a.side = 'sell' AND b.side = 'buy'
             WHERE a.status IN ('open', 'partially_filled')
               AND b.status IN ('open', 'partially_filled') AND b.price >= a.price",
            )
            .await;
        assert_eq!(crossed, 0, "crossed market");
        // One sequence per book: no two events of a symbol share a book sequence.
        let forked = self
            .count(
                "SELECT count(*) FROM (SELECT symbol, book_sequence FROM orders.orders
                                    WHERE book_sequence IS NOT NULL
                                    GROUP BY 1, 2 HAVING count(*) > 1) AS doubled",
            )
            .await;
        assert_eq!(forked, 0, "two books wrote the same sequence");
        // And across every takeover the book's numbering only went forward — the kill after a
        // cancel included: each acceptance, trade and cancel of a book, in the order the outbox
        // took them, carries a sequence above the one before it, never one given out already. (A
        // fill's completions share their trade's, so they are left out.)
        let went_back = self
        .count(
            "SELECT count(*) FROM (
                 SELECT (envelope::jsonb ->> 'sequence')::int8 <= lag((envelope::jsonb ->> 'sequence')::int8)
                            OVER (PARTITION BY envelope::jsonb -> 'payload' ->> 'symbol' ORDER BY position) AS back
                   FROM orders.outbox
                  WHERE event_type IN ('OrderAccepted', 'OrderCancelled', 'TradeExecuted')
             ) AS steps WHERE back",
        )
        .await;
        assert_eq!(went_back, 0, "a book's sequence was given out twice");
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// What one request of the load got.
#[derive(Clone, Debug)]
enum Outcome {
    Placed(Uuid),
    /// Not placed: the status, and whether the answer said when to retry (`Retry-After`).
    Refused(StatusCode, bool),
    /// No HTTP answer at all (the gateway itself was down).
    Unreachable,
}

/// A steady trading load through the gateway: each pair of traders crosses each other, taking
/// turns on each side so neither position grows. Every outcome is kept.
struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &str, pairs: Vec<(String, String)>) -> Self {
        let (outcomes, stop) = (Arc::new(Mutex::new(Vec::new())), Shutdown::new());
        let tasks = pairs
            .into_iter()
            .map(|(first, second)| {
                let (recorded, stopping) = (outcomes.clone(), stop.clone());
                let gateway = gateway.to_owned();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(15))
                        .build()
                        .unwrap();
                    let mut first_sells = true;
                    while !stopping.is_triggered() {
                        let (seller, buyer) = if first_sells {
                            (&first, &second)
                        } else {
                            (&second, &first)
                        };
                        for (who, side) in [(seller, "sell"), (buyer, "buy")] {
                            let outcome = place(&client, &gateway, who, side).await;
                            recorded.lock().unwrap().push(outcome);
                        }
                        first_sells = !first_sells;
                        // The load's own pace, not a wait for anything.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Self {
            outcomes,
            stop,
            tasks,
        }
    }

    fn placed(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Outcome::Placed(_)))
            .count()
    }

    /// Waits until `more` orders beyond what has been placed so far are placed: trading goes on.
    async fn until_trading_goes_on(&self, more: usize, after: &str) {
        let target = self.placed() + more;
        eventually(&format!("orders placed again after {after}"), || async {
            self.placed() >= target
        })
        .await;
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.trigger();
        for task in self.tasks {
            task.await.unwrap();
        }
        self.outcomes.lock().unwrap().clone()
    }
}

async fn place(client: &reqwest::Client, gateway: &str, token: &str, side: &str) -> Outcome {
    let sent = client
        .post(format!("{gateway}/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({ "symbol": "BTC-USD", "side": side, "type": "limit",
                       "price": "30000.00", "quantity": "0.01", "time_in_force": "gtc" }))
        .send()
        .await;
    let Ok(response) = sent else {
        return Outcome::Unreachable;
    };
    let status = response.status();
    if status != StatusCode::CREATED {
        let retry_after = response.headers().contains_key("retry-after");
        return Outcome::Refused(status, retry_after);
    }
    match response.json::<Value>().await {
        Ok(order) => Outcome::Placed(order["id"].as_str().unwrap().parse().unwrap()),
        Err(_) => Outcome::Unreachable,
    }
}

/// A trader's access token, registered through the gateway; `roles` set as `bourse admin`
/// would, in auth's table.
async fn trader(platform: &Platform, email: &str, roles: &[&str]) -> String {
    let client = reqwest::Client::new();
    let gateway = platform.url("gateway");
    let registered = client
        .post(format!("{gateway}/v1/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    if !roles.is_empty() {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        sqlx::query("UPDATE auth.users SET roles = $2 WHERE email = $1")
            .bind(email)
            .bind(&roles)
            .execute(&platform.db)
            .await
            .unwrap();
    }
    let login: Value = client
        .post(format!("{gateway}/v1/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_owned()
}

/// The account id behind a token.
async fn account_of(platform: &Platform, token: &str) -> String {
    let me: Value = reqwest::Client::new()
        .get(format!("{}/v1/auth/me", platform.url("gateway")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["id"].as_str().unwrap().to_owned()
}

/// Deposits into a new account's empty `asset`, then waits until risk's pre-trade stage has
/// it too (ADR 0023: risk refuses what its own view cannot fund), as a client waits for a
/// deposit to be credited. A risk that does not answer 200 reserves nothing yet.
async fn deposit(platform: &Platform, admin: &str, account: &str, asset: &str, amount: &str) {
    let gateway = platform.url("gateway");
    let client = reqwest::Client::new();
    let deposit = client
        .post(format!("{gateway}/v1/admin/deposits"))
        .bearer_auth(admin)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({ "account_id": account, "asset": asset, "amount": amount }))
        .send()
        .await
        .unwrap();
    assert_eq!(deposit.status(), StatusCode::CREATED);
    eventually(&format!("risk to see the {asset} deposit"), || async {
        let response = client
            .get(format!("{gateway}/v1/admin/risk-funds/{account}"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        // Risk still loading answers 503: wait on. Any other refusal means it is not there.
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return false;
        }
        if response.status() != StatusCode::OK {
            return true;
        }
        let view: Value = response.json().await.unwrap();
        // Deciding only once it has read the orders committed before its start (ADR 0023).
        view["deciding"] == true
            && view["balances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["asset"] == asset)
    })
    .await;
}

/// BTC-USD, an admin, and two pairs of funded traders: (admin, pairs).
async fn funded_market(platform: &Platform) -> (String, Vec<(String, String)>) {
    let client = reqwest::Client::new();
    let gateway = platform.url("gateway");
    let admin = trader(platform, "treasury@example.com", &["admin"]).await;
    let created = client
        .post(format!("{gateway}/v1/admin/instruments"))
        .bearer_auth(&admin)
        .json(
            &json!({ "symbol": "BTC-USD", "base_asset": "BTC", "quote_asset": "USD",
                       "tick_size": "0.01", "lot_size": "0.0001" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut traders = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let who = trader(platform, &format!("{name}@example.com"), &[]).await;
        let account = account_of(platform, &who).await;
        for (asset, amount) in [("USD", "10000000"), ("BTC", "1000")] {
            deposit(platform, &admin, &account, asset, amount).await;
        }
        traders.push(who);
    }
    let pairs = vec![
        (traders[0].clone(), traders[1].clone()),
        (traders[2].clone(), traders[3].clone()),
    ];
    (admin, pairs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kills_a_database_failover_and_a_redis_that_forgets_nothing_is_lost() {
    let mut platform = Platform::start().await;
    let (admin, pairs) = funded_market(&platform).await;
    let load = Load::start(&platform.url("gateway"), pairs);
    load.until_trading_goes_on(50, "the start").await;

    // 1. Every service killed in turn.
    for service in SERVICES {
        platform.kill_and_restart(service).await;
        load.until_trading_goes_on(30, &format!("{service} was killed"))
            .await;
    }

    // 2. The database away for as long as a failover takes.
    platform.database.stop();
    tokio::time::sleep(DATABASE_OUTAGE).await;
    platform.database.start_again().await;
    platform.until_all_ready().await;
    load.until_trading_goes_on(50, "the database came back")
        .await;

    // 3. Redis away, then back with nothing: streams, groups and pending entries are gone —
    // among them a kill switch alerting had not read yet, because it was down at the time.
    let mut alerting = platform.processes.remove("alerting").unwrap();
    alerting.kill().await.unwrap();
    let eve = trader(&platform, "eve@example.com", &[]).await;
    let switched = reqwest::Client::new()
        .post(format!(
            "{}/v1/admin/kill-switches",
            platform.url("gateway")
        ))
        .bearer_auth(&admin)
        .json(
            &json!({ "scope": "account", "target": account_of(&platform, &eve).await,
                       "reason": "runaway algo" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), StatusCode::CREATED);
    eventually("the kill switch on the risk stream", || async {
        platform
            .count(
                "SELECT count(*) FROM risk.outbox
                  WHERE event_type = 'KillSwitchActivated'
                    AND position <= (SELECT published_position FROM risk.outbox_relay)",
            )
            .await
            == 1
    })
    .await;
    platform.redis.kill();
    tokio::time::sleep(REDIS_OUTAGE).await;
    platform.redis.restart().await;
    platform.spawn("alerting");
    platform.until_all_ready().await;
    load.until_trading_goes_on(50, "Redis came back empty")
        .await;

    let outcomes = load.finish().await;
    // What the load saw, for the record: most orders placed, 503s while a dependency was away,
    // "unreachable" while the gateway itself was down.
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        let kind = match outcome {
            Outcome::Placed(_) => "201".to_owned(),
            Outcome::Refused(status, _) => status.as_u16().to_string(),
            Outcome::Unreachable => "unreachable".to_owned(),
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("fault suite load: {tally:?}");

    // No request was answered 500: a dependency away is a 503 (or 504), with Retry-After.
    let faults: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            matches!(o, Outcome::Refused(s, _) if s.is_server_error()
                && *s != StatusCode::SERVICE_UNAVAILABLE && *s != StatusCode::GATEWAY_TIMEOUT)
        })
        .collect();
    assert!(faults.is_empty(), "answered as faults: {tally:?}");
    let without_retry_after = outcomes
        .iter()
        .filter(
            |o| matches!(o, Outcome::Refused(s, false) if *s == StatusCode::SERVICE_UNAVAILABLE),
        )
        .count();
    assert_eq!(without_retry_after, 0, "every 503 says when to retry");

    // Every order answered 201 is stored, once.
    let placed: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Placed(id) => Some(*id),
            Outcome::Refused(..) | Outcome::Unreachable => None,
        })
        .collect();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.orders WHERE id = ANY($1)")
        .bind(&placed)
        .fetch_one(&platform.db)
        .await
        .unwrap();
    assert_eq!(stored, placed.len() as i64, "every 2xx order stored once");

    // Every executed trade settles, once.
    platform.until_every_trade_settled().await;
    let executed = platform.count("SELECT count(*) FROM orders.trades").await;
    let settled = platform
        .count("SELECT count(*) FROM settlement.settled_trades")
        .await;
    assert_eq!(settled, executed, "settled exactly once");
    assert!(
        executed > 100,
        "the load traded {executed} times: {tally:?}"
    );

    // Nothing waited for a dependency in the dead letters.
    for schema in ["orders", "settlement", "risk", "alerting"] {
        let dead = platform
            .count(&format!(
                "SELECT count(*) FROM {schema}.outbox WHERE event_type = 'EventDeadLettered'"
            ))
            .await;
        assert_eq!(dead, 0, "{schema} dead-lettered events");
    }

    // The books reconcile: ledger balanced, nothing held in it, every trade counted.
    platform.assert_reconciled(&admin).await;

    // What the broker forgot was published again from the outbox: alerting paged the kill
    // switch it had never read.
    eventually("the kill switch alerted", || async {
        platform
            .count("SELECT count(*) FROM alerting.alerts WHERE event_type = 'KillSwitchActivated'")
            .await
            == 1
    })
    .await;

    // The outages were paged, and resolved once the services recovered.
    let raised = platform
        .count("SELECT count(*) FROM alerting.alerts WHERE event_type = 'ServiceUnhealthy'")
        .await;
    assert!(raised > 0, "no outage was alerted");
    eventually("every outage alert resolved", || async {
        platform
            .count(
                "SELECT count(*) FROM alerting.alerts
                  WHERE event_type = 'ServiceUnhealthy' AND status <> 'resolved'",
            )
            .await
            == 0
    })
    .await;
}

/// An order sent to `orders`, one orders replica or the gateway: its status and body.
async fn place_at(orders: &str, token: &str, order: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{orders}/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&order)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn cancel_at(orders: &str, token: &str, id: &str) -> StatusCode {
    reqwest::Client::new()
        .delete(format!("{orders}/v1/orders/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

fn limit(symbol: &str, side: &str, price: &str) -> Value {
    json!({ "symbol": symbol, "side": side, "type": "limit", "price": price,
            "quantity": "0.5", "time_in_force": "gtc" })
}

/// The book of `symbol` as one replica serves it.
async fn book_at(orders: &str, symbol: &str) -> Value {
    reqwest::get(format!("{orders}/v1/markets/{symbol}/book"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Which orders instance owns `symbol` now (its lease alive), if any.
async fn owner_of(platform: &Platform, symbol: &str) -> Option<&'static str> {
    let address: Option<String> = sqlx::query_scalar(
        "SELECT r.address FROM orders.symbol_owners o JOIN orders.replicas r ON r.id = o.replica
          WHERE o.symbol = $1 AND r.lease_until > now()",
    )
    .bind(symbol)
    .fetch_optional(&platform.db)
    .await
    .unwrap();
    let address = address?;
    ["orders", "orders-2"]
        .into_iter()
        .find(|instance| address == platform.url(instance))
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Two orders replicas on one database (TRD-08, ADR 0014): the symbols spread over both, an
/// order placed through either lands in the one book of its symbol, a killed owner's symbol is
/// taken over with its book rebuilt exactly while the gateway, given both replicas, steps past
/// the one that is gone, a paused owner that wakes up after losing its
/// symbol commits nothing of its own (its command goes to the new owner), and a returning
/// replica joins the same books. No crossed market, ever; everything settles and reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_replicas_keep_one_book_per_symbol_through_a_kill_and_a_pause() {
    let mut platform = Platform::start_with(&["orders-2"]).await;
    let client = reqwest::Client::new();
    let gateway = platform.url("gateway");
    let admin = trader(&platform, "treasury@example.com", &["admin"]).await;
    for (base, lot) in [("BTC", "0.0001"), ("ETH", "0.001")] {
        let created = client
            .post(format!("{gateway}/v1/admin/instruments"))
            .bearer_auth(&admin)
            .json(
                &json!({ "symbol": format!("{base}-USD"), "base_asset": base,
                           "quote_asset": "USD", "tick_size": "0.01", "lot_size": lot }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let mut traders = Vec::new();
    for name in ["alice", "bob"] {
        let who = trader(&platform, &format!("{name}@example.com"), &[]).await;
        let account = account_of(&platform, &who).await;
        for asset in ["USD", "BTC", "ETH"] {
            deposit(&platform, &admin, &account, asset, "1000000").await;
        }
        traders.push(who);
    }
    let (alice, bob) = (&traders[0], &traders[1]);
    let (first, second) = (platform.url("orders"), platform.url("orders-2"));

    // The two symbols spread, one per replica.
    eventually("the symbols spread over both replicas", || async {
        let btc = owner_of(&platform, "BTC-USD").await;
        let eth = owner_of(&platform, "ETH-USD").await;
        btc.is_some() && eth.is_some() && btc != eth
    })
    .await;

    // Through either replica, one book: an ask placed through one is taken by a bid placed
    // through the other, both ways round, and both replicas show the same book.
    for symbol in ["BTC-USD", "ETH-USD"] {
        for (seller, buyer) in [(&first, &second), (&second, &first)] {
            let (status, ask) = place_at(seller, alice, limit(symbol, "sell", "100.00")).await;
            assert_eq!(status, StatusCode::CREATED, "{ask}");
            let (status, bid) = place_at(buyer, bob, limit(symbol, "buy", "100.00")).await;
            assert_eq!(status, StatusCode::CREATED, "{bid}");
            assert_eq!(bid["status"], "filled", "{symbol}: {bid}");
        }
        let (status, resting) = place_at(&first, alice, limit(symbol, "sell", "101.00")).await;
        assert_eq!(status, StatusCode::CREATED, "{resting}");
        assert_eq!(
            book_at(&first, symbol).await,
            book_at(&second, symbol).await
        );
    }

    // The owner of BTC-USD is killed: the other replica takes the symbol over, with the book
    // rebuilt exactly — the ask resting there before the kill is what the next bid takes. Its
    // last batch before the kill is a cancel, whose sequence no order or trade row keeps: the
    // rebuilt book must still number on after it.
    let killed = owner_of(&platform, "BTC-USD").await.unwrap();
    let survivor = if killed == "orders" { &second } else { &first };
    let (status, withdrawn) = place_at(survivor, alice, limit("BTC-USD", "sell", "105.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{withdrawn}");
    let id = withdrawn["id"].as_str().unwrap();
    assert_eq!(cancel_at(survivor, alice, id).await, StatusCode::OK);
    let book_before = book_at(survivor, "BTC-USD").await;
    let mut child = platform.processes.remove(killed).unwrap();
    child.kill().await.unwrap();
    let started = std::time::Instant::now();
    let bid = eventually_some("BTC-USD taken over by the survivor", || async {
        let (status, bid) = place_at(survivor, bob, limit("BTC-USD", "buy", "101.00")).await;
        (status == StatusCode::CREATED).then_some(bid)
    })
    .await;
    eprintln!("BTC-USD failed over in {:?}", started.elapsed());
    assert_eq!(
        bid["status"], "filled",
        "the rebuilt book kept the ask: {bid}"
    );
    assert_eq!(
        book_before["asks"][0],
        json!(["101.00", "0.50000000"]),
        "{book_before}"
    );
    // The gateway, given both replicas, steps past the one that is gone: consecutive
    // placements through it, which take the replicas in turn, all land.
    for _ in 0..4 {
        let (status, ask) = place_at(&gateway, alice, limit("ETH-USD", "sell", "105.00")).await;
        assert_eq!(status, StatusCode::CREATED, "through the gateway: {ask}");
    }

    // It comes back, joins, and takes its share again; orders through it reach the same book.
    platform.spawn(killed);
    platform.until_ready(killed).await;
    eventually("the returning replica takes its share", || async {
        let btc = owner_of(&platform, "BTC-USD").await;
        let eth = owner_of(&platform, "ETH-USD").await;
        btc.is_some() && eth.is_some() && btc != eth
    })
    .await;
    let returned = platform.url(killed);
    let (status, ask) = place_at(survivor, alice, limit("BTC-USD", "sell", "102.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{ask}");
    let (status, bid) = place_at(&returned, bob, limit("BTC-USD", "buy", "102.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(bid["status"], "filled", "{bid}");

    // A batch caught by a takeover: the owner of BTC-USD is committing a bid when the other
    // replica takes the symbol over (the takeover statement, held back by a lock of the test's
    // until the batch is waiting on it). The batch's fence sees the new epoch, nothing of it
    // commits, and the bid is sent on to the new owner, whose book has the ask.
    let owner = owner_of(&platform, "BTC-USD").await.unwrap();
    let heir = if owner == "orders" {
        "orders-2"
    } else {
        "orders"
    };
    let heir_id: Uuid = sqlx::query_scalar("SELECT id FROM orders.replicas WHERE address = $1")
        .bind(platform.url(heir))
        .fetch_one(&platform.db)
        .await
        .unwrap();
    let (status, ask) = place_at(
        &platform.url(heir),
        alice,
        limit("BTC-USD", "sell", "103.00"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ask}");
    let mut takeover = platform.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders.symbol_owners WHERE symbol = 'BTC-USD' FOR UPDATE")
        .execute(&mut *takeover)
        .await
        .unwrap();
    let bid = tokio::spawn({
        let (owner_url, bob) = (platform.url(owner), bob.clone());
        async move { place_at(&owner_url, &bob, limit("BTC-USD", "buy", "103.00")).await }
    });
    // Its batch now waits at its fence, behind the test's lock.
    service_kit::testing::until_waiting_for_a_lock(&platform.db, "SET last_sequence").await;
    sqlx::query(
        "UPDATE orders.symbol_owners SET epoch = epoch + 1, replica = $1 WHERE symbol = 'BTC-USD'",
    )
    .bind(heir_id)
    .execute(&mut *takeover)
    .await
    .unwrap();
    takeover.commit().await.unwrap();
    let (status, bid) = bid.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(
        bid["status"], "filled",
        "the new owner's book took it: {bid}"
    );
    let metrics = reqwest::get(format!("{}/metrics", platform.url(owner)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("orders_symbols_lost_total 1"),
        "the old owner's batch was fenced off"
    );

    // The owner of ETH-USD is paused (SIGSTOP): its lease runs out and the other replica takes
    // the symbol, while the paused one still believes it keeps the book.
    let paused = owner_of(&platform, "ETH-USD").await.unwrap();
    let awake = if paused == "orders" {
        platform.url("orders-2")
    } else {
        platform.url("orders")
    };
    signal(&platform.processes[paused], "-STOP");
    let ask = eventually_some("ETH-USD taken over from the paused owner", || async {
        let (status, ask) = place_at(&awake, alice, limit("ETH-USD", "sell", "99.00")).await;
        (status == StatusCode::CREATED).then_some(ask)
    })
    .await;
    assert_eq!(ask["status"], "open", "{ask}");
    // Woken up, the old owner's stale book does not have that ask; had it committed from that
    // book, this bid would rest beside it (a crossed market) instead of taking it.
    signal(&platform.processes[paused], "-CONT");
    let (status, bid) =
        place_at(&platform.url(paused), bob, limit("ETH-USD", "buy", "99.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(bid["status"], "filled", "{bid}");

    platform.assert_one_book_per_symbol().await;

    // Every trade settles once, and the books reconcile.
    platform.until_every_trade_settled().await;
    platform.assert_reconciled(&admin).await;
}

/// The load generator's mix — limit, market, IOC and FOK orders, cancels, reads and WebSocket
/// subscribers, at a constant rate — through two SIGKILLs of the orders replica that owns the
/// traded symbol (REL-16 under load): first one replica, then, once it is back, the other,
/// which had taken the symbol over. Each time the other replica takes the
/// symbol over and the killed one returns; the answers lost with it are 503s, not 500s, and
/// afterwards every invariant of `loadgen` holds as after any run (every 2xx order stored once,
/// every trade settled once, reconciliation clean, each account's balances exact in the ledger
/// and in risk, every subscriber given every trade and its trader's orders, fills and ends) and
/// the symbol had one book throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generators_invariants_hold_through_two_kills_of_the_symbols_owner() {
    const SYMBOL: &str = "BTC-USD";
    let mut platform = Platform::start_with(&["orders-2"]).await;
    let run = platform.load_generator_running(40, 14).await;

    let stored = |platform: &Platform| {
        let db = platform.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders.orders WHERE symbol = $1")
                .bind(SYMBOL)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let mut killed = Vec::new();
    for round in 1..=2 {
        // Trading goes on before each kill: orders stored since the last one.
        let before = stored(&platform).await;
        eventually(&format!("orders stored before kill {round}"), || async {
            stored(&platform).await >= before + 20
        })
        .await;
        let owner = owner_of(&platform, SYMBOL).await.unwrap();
        let epoch = epoch_of(&platform, SYMBOL).await;
        platform
            .processes
            .remove(owner)
            .unwrap()
            .kill()
            .await
            .unwrap();
        eventually(
            &format!("{SYMBOL} taken over after kill {round}"),
            || async {
                epoch_of(&platform, SYMBOL).await > epoch
                    && owner_of(&platform, SYMBOL)
                        .await
                        .is_some_and(|now| now != owner)
            },
        )
        .await;
        killed.push(owner);
        platform.spawn(owner);
        platform.until_ready(owner).await;
    }
    // The gateway calls both replicas in turn; either way the second kill took the replica
    // that had taken the symbol over from the first.
    assert_ne!(killed[0], killed[1], "both replicas were killed once each");

    let report = run.await.unwrap().unwrap();
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.internal_errors(), 0, "{report}");
    assert!(
        report.faults() > 0,
        "the kills fell inside the run: {report}"
    );
    assert!(report.orders_placed > 200, "{report}");
    platform.assert_one_book_per_symbol().await;
}

/// docs/stream.md, "Reconnecting", under the load generator's mix: the gateway is SIGKILLed
/// mid-run and started again. Every subscriber's stream is cut; each connects again,
/// subscribes, and reads what it missed from the REST API (`trades?after=` the last trade it
/// received, its trader's orders), so every trade of the run and every order, fill and end of
/// its trader's still reach it, and every other invariant holds. (The trades' catch-up is
/// what these runs need: without it each subscriber misses a trade or so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generators_subscribers_catch_up_after_the_gateway_restarts() {
    let mut platform = Platform::start().await;
    let run = platform.load_generator_running(20, 15).await;
    eventually("trades before the gateway is killed", || async {
        platform.count("SELECT count(*) FROM orders.trades").await >= 10
    })
    .await;
    platform.kill_and_restart("gateway").await;

    let report = run.await.unwrap().unwrap();
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.internal_errors(), 0, "{report}");
    for (index, subscriber) in report.subscribers.iter().enumerate() {
        assert!(
            subscriber.closed.is_none() && !subscriber.reconnects.is_empty(),
            "subscriber {index} was cut off, came back and caught up: {report}"
        );
    }
}

async fn epoch_of(platform: &Platform, symbol: &str) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM orders.symbol_owners WHERE symbol = $1")
        .bind(symbol)
        .fetch_one(&platform.db)
        .await
        .unwrap()
}

/// An owner paused in the middle of a matching batch (ADR 0014). Its batch's first statement
/// has taken the symbol's owner row, and its process is stopped before the batch commits. The
/// socket of a stopped process stays open, so its session and the row lock would outlive its
/// lease for as long as it is stopped, and no takeover could pass: PostgreSQL ends a session
/// idle inside a transaction after `service_kit::db::IDLE_IN_TRANSACTION_TIMEOUT`, the batch
/// rolls back, and the other replica takes the symbol over and trades on its book while the
/// owner is still stopped. Woken, the old owner commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_in_the_middle_of_a_batch_loses_its_symbol() {
    let platform = Platform::start_with(&["orders-2"]).await;
    let (admin, pairs) = funded_market(&platform).await;
    let (alice, bob) = pairs[0].clone();
    let owner = eventually_some("BTC-USD to be owned", || owner_of(&platform, "BTC-USD")).await;
    let heir = if owner == "orders" {
        "orders-2"
    } else {
        "orders"
    };
    let (owner_url, heir_url) = (platform.url(owner), platform.url(heir));
    let (status, ask) = place_at(&owner_url, &alice, limit("BTC-USD", "sell", "100.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{ask}");
    let epoch = epoch_of(&platform, "BTC-USD").await;

    // The test holds the orders outbox's write lock (its statement trigger's): the owner's next
    // batch takes the owner row in its first statement, then waits at its outbox insert.
    let mut outbox_lock = platform.db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(736812502, hashtext('orders'))")
        .execute(&mut *outbox_lock)
        .await
        .unwrap();
    let paused_bid = tokio::spawn({
        let (owner_url, bob) = (owner_url.clone(), bob.clone());
        async move { place_at(&owner_url, &bob, limit("BTC-USD", "buy", "100.00")).await }
    });
    service_kit::testing::until_waiting_for_a_lock(&platform.db, "INSERT INTO outbox").await;
    // Stopped there; the insert then completes, and the batch waits on a stopped process with
    // the owner row locked.
    signal(&platform.processes[owner], "-STOP");
    outbox_lock.commit().await.unwrap();

    eventually(
        "BTC-USD taken over from the owner paused mid-batch",
        || async {
            epoch_of(&platform, "BTC-USD").await > epoch
                && owner_of(&platform, "BTC-USD").await == Some(heir)
        },
    )
    .await;
    // The paused batch rolled back: the ask still rests, and the heir's book trades it.
    let (status, bid) = place_at(&heir_url, &bob, limit("BTC-USD", "buy", "100.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(
        bid["status"], "filled",
        "the rebuilt book kept the ask: {bid}"
    );

    // Woken, the old owner's batch fails on its ended session and commits nothing; its
    // request is answered without a 500, and an order it reports placed is stored.
    signal(&platform.processes[owner], "-CONT");
    let (status, answer) = paused_bid.await.unwrap();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    if status == StatusCode::CREATED {
        let stored = platform
            .count(&format!(
                "SELECT count(*) FROM orders.orders WHERE id = '{}'",
                answer["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(stored, 1, "{answer}");
    }
    platform.assert_one_book_per_symbol().await;
    platform.until_every_trade_settled().await;
    platform.assert_reconciled(&admin).await;
}
