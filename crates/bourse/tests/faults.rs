//! The fault suite (REL-17): the platform, each service its own `bourse serve <service>`
//! process on a PostgreSQL cluster and a Redis server of the suite's own, trades under a
//! steady load while it is broken in every way production breaks it —
//!
//! 1. each service killed with SIGKILL in turn and started again;
//! 2. PostgreSQL stopped (every connection cut) for 45 s, as a managed failover takes;
//! 3. Redis killed for 15 s and started again *empty*, as a Redis without persistence (or a
//!    failover to a replica that lagged) comes back;
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
use service_kit::testing::{PgCluster, RedisServer, eventually, free_ports};
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

/// Every service as a process of its own, on servers of the suite's own.
struct Platform {
    database: PgCluster,
    redis: RedisServer,
    ports: BTreeMap<&'static str, u16>,
    processes: BTreeMap<&'static str, Child>,
    db: PgPool,
}

impl Platform {
    async fn start() -> Self {
        let database = PgCluster::start().await;
        let redis = RedisServer::start().await;
        let ports = SERVICES
            .iter()
            .copied()
            .zip(free_ports(SERVICES.len()))
            .collect();
        let mut platform = Self {
            db: PgPool::connect_lazy(&database.url("bourse")).unwrap(),
            database,
            redis,
            ports,
            processes: BTreeMap::new(),
        };
        for service in SERVICES {
            platform.spawn(service);
            platform.until_ready(service).await;
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
                env.push((format!("BOURSE_{upper}_URL"), self.url(service)));
            }
        }
        env
    }

    fn spawn(&mut self, service: &'static str) {
        let child = Command::new(env!("CARGO_BIN_EXE_bourse"))
            .args(["serve", service])
            .env_clear()
            .envs(self.env())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.processes.insert(service, child);
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

    /// One number from the platform's database.
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
            let deposit = client
                .post(format!("{gateway}/v1/admin/deposits"))
                .bearer_auth(&admin)
                .header("idempotency-key", Uuid::now_v7().to_string())
                .json(&json!({ "account_id": account, "asset": asset, "amount": amount }))
                .send()
                .await
                .unwrap();
            assert_eq!(deposit.status(), StatusCode::CREATED);
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
                  WHERE event_type = 'KillSwitchActivated' AND published_at IS NOT NULL",
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
    eventually("every executed trade settled", || async {
        platform
            .count(
                "SELECT count(*) FROM orders.trades t
                  WHERE NOT EXISTS (SELECT 1 FROM settlement.settled_trades s
                                     WHERE s.trade_id = t.id)",
            )
            .await
            == 0
    })
    .await;
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

    // The books reconcile: ledger balanced, holds match open orders, every trade counted.
    let report: Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/admin/reconciliation",
            platform.url("gateway")
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");

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
