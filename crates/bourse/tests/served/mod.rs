//! `bourse serve all` as a child process whose JSON log lines the test reads: shared by the
//! test binaries that run the binary as an operator does (`mod served;`).
// Each test binary uses the part it needs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const BOURSE: &str = env!("CARGO_BIN_EXE_bourse");

/// A running `bourse serve all` whose stdout (JSON logs) is read line by line.
pub struct Served {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    /// Its standard error, when the command piped it (what it tells a terminal).
    stderr: Option<mpsc::UnboundedReceiver<String>>,
}

impl Served {
    pub async fn start(pool: &PgPool) -> Self {
        Self::start_with(pool, &[]).await
    }

    pub async fn start_with(pool: &PgPool, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Self::command(extra_env);
        command.env("DATABASE_URL", bourse::testing::database_url(pool));
        Self::spawn(command)
    }

    /// `bourse serve all` on ports of its own, logging JSON lines at debug, with `extra_env`;
    /// its database is the caller's to give.
    pub fn command(extra_env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(BOURSE);
        command
            .args(["serve", "all"])
            .env(
                "BOURSE_REDIS_KEY_PREFIX",
                format!("test:{}", uuid::Uuid::now_v7()),
            )
            .env("BOURSE_BIND_HOST", "127.0.0.1")
            .envs(bourse::testing::any_free_port())
            .env("BOURSE_TRUSTED_PROXIES", "127.0.0.1")
            .env("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096")
            .env("BOURSE_AUTH_ARGON2_ITERATIONS", "1")
            .env("BOURSE_LOG_FORMAT", "json")
            .env("BOURSE_LOG", "debug")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// Runs `command` (from [`Served::command`]) and reads its log lines.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let stderr = child.stderr.take().map(read_lines);
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a line of standard error containing `text` (the command must pipe it).
    pub async fn stderr_line(&mut self, text: &str) -> String {
        let stderr = self.stderr.as_mut().expect("stderr is piped");
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, stderr.recv()).await {
                Ok(Some(line)) if line.contains(text) => return line,
                Ok(Some(line)) => seen.push(line),
                _ => panic!("no {text:?} on stderr; saw:\n{}", seen.join("\n")),
            }
        }
    }

    /// Reads log lines until one satisfies `matches` (bounded, so a broken build fails fast).
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no log line for {what}; saw:\n{}", self.seen.join("\n"))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "process ended before {what}; saw:\n{}",
                        self.seen.join("\n")
                    )
                });
            self.seen.push(line.clone());
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && matches(&value)
            {
                return value;
            }
        }
    }

    pub async fn address_of(&mut self, service: &str) -> String {
        let line = self
            .wait_for(service, |v| {
                v["message"] == "listening" && v["service"] == service
            })
            .await;
        line["address"].as_str().unwrap().to_owned()
    }

    pub fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit and returns the code and every line logged.
    pub async fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status.code(), self.seen)
    }
}

/// The lines of a child's output, as they come.
fn read_lines(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(output).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl Served {
    /// The address each of `services` listens on, from their "listening" log lines.
    pub async fn addresses_of(
        &mut self,
        services: &[&str],
    ) -> std::collections::BTreeMap<String, String> {
        let mut addresses = std::collections::BTreeMap::new();
        while addresses.len() < services.len() {
            let line = self
                .wait_for("every service listening", |v| v["message"] == "listening")
                .await;
            let service = line["service"].as_str().unwrap_or_default();
            if services.contains(&service) {
                addresses.insert(
                    service.to_owned(),
                    line["address"].as_str().unwrap().to_owned(),
                );
            }
        }
        addresses
    }
}

/// `bourse` as an operator runs it beside the platform: on the test's database, with cheap
/// password hashing, quiet logs.
pub fn operator_command(pool: &PgPool) -> Command {
    let mut command = Command::new(BOURSE);
    command
        .env("DATABASE_URL", bourse::testing::database_url(pool))
        .env("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096")
        .env("BOURSE_AUTH_ARGON2_ITERATIONS", "1")
        .env("BOURSE_LOG", "warn");
    command
}

impl Served {
    /// The gateway's address, once it answers ready.
    pub async fn ready_gateway(&mut self) -> String {
        let gateway = self.address_of("gateway").await;
        let client = reqwest::Client::new();
        service_kit::testing::eventually("the gateway is ready", || async {
            client
                .get(format!("http://{gateway}/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        gateway
    }
}

/// A trader's balances through the gateway: `asset` → (available, held), decimal strings.
pub async fn balances(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    let balances: Value = client
        .get(format!("http://{gateway}/v1/balances"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    balances
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let text = |field: &str| b[field].as_str().unwrap().to_owned();
            (text("asset"), (text("available"), text("held")))
        })
        .collect()
}

/// `bourse demo seed`: BTC-USD and two funded traders.
#[allow(dead_code)] // not every suite that shares this module trades
pub async fn demo_seed(pool: &PgPool) {
    let seeded = operator_command(pool)
        .args(["demo", "seed"])
        .output()
        .await
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
}

/// A demo trader's access token.
#[allow(dead_code)]
pub async fn demo_login(client: &reqwest::Client, gateway: &str, email: &str) -> String {
    let response = client
        .post(format!("http://{gateway}/v1/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": bourse::demo::DEMO_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "login {email}");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A 0.01 BTC-USD limit order at 30,000.00, expecting 201; with `traceparent` when given.
#[allow(dead_code)]
pub async fn place_limit(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    side: &str,
    traceparent: Option<&str>,
) {
    let mut request = client
        .post(format!("http://{gateway}/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(
            &serde_json::json!({ "symbol": "BTC-USD", "side": side, "type": "limit",
            "price": "30000.00", "quantity": "0.01", "time_in_force": "gtc" }),
        );
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{side} order");
}
