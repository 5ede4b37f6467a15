//! Alerting end to end (ALR-01..07): events from risk, settlement and ops become alerts that
//! reach a real HTTP receiver on loopback — deduplicated, silenced, retried, escalated,
//! acknowledged and resolved — through the gateway's admin API.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::testing::{eventually, eventually_some};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, Tokens, assert_problem, spawn_app_with};
use crate::receiver::Receiver;

/// How long a test waits for a page before failing. Not the latency budget (MiFID II RTS 6:
/// seconds): tests run in parallel on two cores, so speed is measured, not asserted here —
/// `alerting_notification_seconds` and docs/performance.md.
const PAGE_WITHIN: Duration = Duration::from_secs(20);

struct Ops {
    app: TestApp,
    admin: Tokens,
}

/// Fast retries and escalation checks, so tests wait milliseconds rather than seconds.
const FAST: &[(&str, &str)] = &[
    ("BOURSE_ALERTING_DELIVERY_BACKOFF_BASE_MS", "20"),
    ("BOURSE_ALERTING_DELIVERY_BACKOFF_CAP_MS", "100"),
    ("BOURSE_ALERTING_ESCALATION_INTERVAL_MS", "100"),
];

async fn ops(pool: PgPool, extra: &[(&str, &str)]) -> Ops {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend_from_slice(extra);
    let app = spawn_app_with(pool, &env).await;
    let admin = app
        .signed_up_with_roles("ops@example.com", &["admin"])
        .await;
    Ops { app, admin }
}

impl Ops {
    async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_as(&self.admin, path, body).await
    }

    async fn post_as(&self, who: &Tokens, path: &str, body: &Value) -> Response {
        self.app
            .client
            .post(self.app.url(path))
            .bearer_auth(&who.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.app.get_authed(path, &self.admin.access_token).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn channel(&self, name: &str, kind: &str, target: &str, secret: Option<&str>) {
        let mut body = json!({ "name": name, "kind": kind, "target": target });
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        let response = self.post("/v1/admin/alert-channels", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "channel {name}");
    }

    async fn rule(&self, body: Value) {
        let response = self.post("/v1/admin/alert-rules", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "rule {body}");
    }

    async fn kill_switch(&self, scope: &str, target: Option<&str>) -> String {
        let response = self
            .post(
                "/v1/admin/kill-switches",
                &json!({ "scope": scope, "target": target, "reason": "runaway algo" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn alerts(&self, status: &str) -> Vec<Value> {
        let alerts = self.get(&format!("/v1/admin/alerts?status={status}")).await;
        alerts.as_array().unwrap().clone()
    }

    /// The one alert of `event_type`, once alerting has recorded it.
    async fn alert_of(&self, event_type: &str) -> Value {
        self.app.alert_of(&self.admin, event_type).await
    }

    async fn detail(&self, id: &str) -> Value {
        self.get(&format!("/v1/admin/alerts/{id}")).await
    }
}

#[sqlx::test(migrations = false)]
async fn a_kill_switch_pages_webhook_and_slack_once_within_seconds(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel(
        "ops-hook",
        "webhook",
        &receiver.url("/hook"),
        Some("hmac-key"),
    )
    .await;
    ops.channel(
        "ops-slack",
        "slack",
        &receiver.url("/slack/T0/B0/token"),
        None,
    )
    .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["ops-hook", "ops-slack"] }),
    )
    .await;

    ops.kill_switch("symbol", Some("BTC-USD")).await;

    let mut got = [
        receiver.next_within(PAGE_WITHIN).await,
        receiver.next_within(PAGE_WITHIN).await,
    ];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let (hook, slack) = (&got[0], &got[1]);
    assert_eq!(hook.path, "/hook");
    let page = hook.json();
    assert_eq!(page["action"], "firing");
    assert_eq!(page["alert"]["event_type"], "KillSwitchActivated");
    assert_eq!(page["alert"]["scope"], "symbol:BTC-USD");
    assert_eq!(page["alert"]["severity"], "critical");
    // Signed: HMAC-SHA256 over "<timestamp>.<body>" with the channel's secret.
    let timestamp: i64 = hook.headers["x-bourse-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = alerting::notify::signature(
        &secrecy::SecretString::from("hmac-key".to_owned()),
        timestamp,
        &hook.body,
    );
    assert_eq!(hook.headers["x-bourse-signature"], expected.as_str());
    assert!(hook.headers.contains_key("idempotency-key"));
    assert_eq!(slack.path, "/slack/T0/B0/token");
    let text = slack.json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("[CRITICAL]") && text.contains("Kill switch activated"),
        "{text}"
    );

    // One alert, one delivery per channel, both delivered.
    let firing = ops.alerts("firing").await;
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0]["count"], 1);
    let id = firing[0]["id"].as_str().unwrap();
    let detail = eventually_some("both deliveries recorded", || async {
        let detail = ops.detail(id).await;
        detail["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered")
            .then_some(detail)
    })
    .await;
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 2);
}

#[sqlx::test(migrations = false)]
async fn a_repeat_is_counted_not_sent_again(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel("ops-hook", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(
        json!({ "event_type": "*", "severity": "error", "channels": ["ops-hook"],
                     "suppress_seconds": 600 }),
    )
    .await;

    ops.kill_switch("global", None).await;
    receiver.next_within(PAGE_WITHIN).await;
    // The same scope again: the same fingerprint.
    ops.kill_switch("global", None).await;

    let alert = eventually_some("the repeat counted", || async {
        let alert = ops.alert_of("KillSwitchActivated").await;
        (alert["count"] == 2).then_some(alert)
    })
    .await;
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["fingerprint"], "KillSwitchActivated/global");
    assert!(alert["last_seen"].as_str() >= alert["first_seen"].as_str());
    let detail = ops.detail(alert["id"].as_str().unwrap()).await;
    assert_eq!(
        detail["deliveries"].as_array().unwrap().len(),
        1,
        "one notification for two occurrences: {detail}"
    );
    // A wildcard rule routes it, at the rule's severity.
    assert_eq!(alert["severity"], "error");
}

#[sqlx::test(migrations = false)]
async fn a_receiver_failing_its_first_two_attempts_still_gets_the_alert(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::failing_first(2).await;
    ops.channel("flaky", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["flaky"] }),
    )
    .await;

    ops.kill_switch("global", None).await;

    let attempts = [
        receiver.next_at("/hook").await,
        receiver.next_at("/hook").await,
        receiver.next_at("/hook").await,
    ];
    // The same delivery each time: a receiver can deduplicate by its key.
    let key = attempts[0].headers["idempotency-key"].clone();
    assert!(attempts.iter().all(|a| a.headers["idempotency-key"] == key));
    let alert = ops.alert_of("KillSwitchActivated").await;
    let detail = eventually_some("the third attempt recorded as delivered", || async {
        let detail = ops.detail(alert["id"].as_str().unwrap()).await;
        (detail["deliveries"][0]["status"] == "delivered").then_some(detail)
    })
    .await;
    assert_eq!(detail["deliveries"][0]["attempts"], 3);
    assert_eq!(detail["deliveries"][0]["channel"], "flaky");
}

#[sqlx::test(migrations = false)]
async fn a_receiver_that_never_recovers_ends_failed_after_the_last_attempt(pool: PgPool) {
    let ops = ops(pool, &[("BOURSE_ALERTING_DELIVERY_MAX_ATTEMPTS", "3")]).await;
    let receiver = Receiver::failing_first(usize::MAX).await;
    ops.channel("down", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(json!({ "event_type": "*", "severity": "critical", "channels": ["down"] }))
        .await;

    ops.kill_switch("global", None).await;

    let alert = ops.alert_of("KillSwitchActivated").await;
    let detail = eventually_some("the delivery given up", || async {
        let detail = ops.detail(alert["id"].as_str().unwrap()).await;
        (detail["deliveries"][0]["status"] == "failed").then_some(detail)
    })
    .await;
    assert_eq!(detail["deliveries"][0]["attempts"], 3);
    assert_eq!(
        detail["deliveries"][0]["last_error"],
        "receiver answered 503"
    );
}

#[sqlx::test(migrations = false)]
async fn a_silence_mutes_matching_alerts_but_keeps_them(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel("ops-hook", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(json!({ "event_type": "*", "severity": "critical", "channels": ["ops-hook"] }))
        .await;
    let ends_at = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let silence = ops
        .post(
            "/v1/admin/silences",
            &json!({ "matcher": { "event_type": "KillSwitchActivated", "scope": "global" },
                     "ends_at": ends_at, "reason": "planned halt" }),
        )
        .await;
    assert_eq!(silence.status(), StatusCode::CREATED);

    ops.kill_switch("global", None).await;
    // Not silenced: another scope.
    ops.kill_switch("symbol", Some("ETH-USD")).await;

    let paged = receiver.next_within(PAGE_WITHIN).await.json();
    assert_eq!(paged["alert"]["scope"], "symbol:ETH-USD");
    let silenced = eventually_some("the silenced alert recorded", || async {
        ops.alerts("firing")
            .await
            .into_iter()
            .find(|a| a["scope"] == "global")
    })
    .await;
    assert_eq!(silenced["silenced"], true);
    let detail = ops.detail(silenced["id"].as_str().unwrap()).await;
    assert_eq!(detail["deliveries"], json!([]), "nothing sent for it");
    let active = ops.get("/v1/admin/silences").await;
    assert_eq!(active.as_array().unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn acknowledge_and_resolve_move_an_alert_through_its_lifecycle(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel("ops-hook", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["ops-hook"] }),
    )
    .await;
    let trader = ops.app.signed_up("trader@example.com").await;
    let auditor = ops
        .app
        .signed_up_with_roles("auditor@example.com", &["auditor"])
        .await;
    ops.kill_switch("global", None).await;
    receiver.next_within(PAGE_WITHIN).await;
    let id = ops.alert_of("KillSwitchActivated").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = format!("/v1/admin/alerts/{id}/ack");
    let resolve = format!("/v1/admin/alerts/{id}/resolve");

    // Auditors read, but do not act; traders do neither.
    let read = ops
        .app
        .get_authed("/v1/admin/alerts", &auditor.access_token)
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_problem(
        ops.post_as(&auditor, &ack, &json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_problem(
        ops.app
            .get_authed("/v1/admin/alerts", &trader.access_token)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let acknowledged: Value = ops.post(&ack, &json!({})).await.json().await.unwrap();
    assert_eq!(acknowledged["status"], "acknowledged");
    assert!(acknowledged["acknowledged_at"].is_string());
    // Retried: the same answer.
    let again = ops.post(&ack, &json!({})).await;
    assert_eq!(again.status(), StatusCode::OK);

    let resolved: Value = ops.post(&resolve, &json!({})).await.json().await.unwrap();
    assert_eq!(resolved["status"], "resolved");
    // The channel that was paged hears it is over.
    let notice = receiver.next_within(PAGE_WITHIN).await.json();
    assert_eq!(notice["action"], "resolved");
    assert_eq!(notice["alert"]["status"], "resolved");
    assert_problem(
        ops.post(&ack, &json!({})).await,
        StatusCode::CONFLICT,
        "alert_resolved",
    )
    .await;
    assert_eq!(ops.alerts("firing").await.len(), 0);
    assert_eq!(ops.alerts("resolved").await.len(), 1);

    // The next occurrence opens a new alert.
    ops.kill_switch("global", None).await;
    receiver.next_within(PAGE_WITHIN).await;
    assert_eq!(ops.alerts("firing").await.len(), 1);
}

/// Kill switches page the desk, and the head of risk a second after, unless acknowledged.
async fn escalating_desk(pool: PgPool) -> (Ops, Receiver) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel("desk", "webhook", &receiver.url("/desk"), None)
        .await;
    ops.channel("head-of-risk", "webhook", &receiver.url("/boss"), None)
        .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["desk"], "escalate_after_seconds": 1,
                     "escalate_to": ["head-of-risk"] }),
    )
    .await;
    (ops, receiver)
}

#[sqlx::test(migrations = false)]
async fn an_unacknowledged_alert_escalates_once(pool: PgPool) {
    let (ops, receiver) = escalating_desk(pool).await;

    ops.kill_switch("global", None).await;

    let first = receiver.next_within(PAGE_WITHIN).await;
    assert_eq!(first.path, "/desk");
    let escalated = receiver.next_at("/boss").await.json();
    assert_eq!(escalated["action"], "escalation");
    let alert = ops.alert_of("KillSwitchActivated").await;
    assert!(alert["escalated_at"].is_string());
    let detail = ops.detail(alert["id"].as_str().unwrap()).await;
    let actions: Vec<&str> = detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["firing", "escalation"], "escalated once");
}

#[sqlx::test(migrations = false)]
async fn an_acknowledged_alert_does_not_escalate(pool: PgPool) {
    let (ops, receiver) = escalating_desk(pool).await;
    ops.kill_switch("global", None).await;
    receiver.next_within(PAGE_WITHIN).await;
    let alert = ops.alert_of("KillSwitchActivated").await;
    let id = alert["id"].as_str().unwrap();
    let ack = ops
        .post(&format!("/v1/admin/alerts/{id}/ack"), &json!({}))
        .await;
    assert_eq!(ack.status(), StatusCode::OK);

    // Escalation runs every 100 ms against a 1 s deadline; wait until the database itself
    // says the deadline has passed, then let the job run over it.
    eventually("the escalation deadline passed", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT first_seen <= now() - interval '1.3 seconds' FROM alerting.alerts WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&ops.app.db)
        .await
        .unwrap()
    })
    .await;
    let escalated = alerting::escalation::escalate_due(
        &crate::helpers::schema_pool(&ops.app.db, "alerting").await,
    )
    .await
    .unwrap();
    assert_eq!(escalated, 0);
    let detail = ops.detail(id).await;
    assert!(detail["escalated_at"].is_null());
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn releasing_the_kill_switch_resolves_its_alert(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    let receiver = Receiver::start().await;
    ops.channel(
        "pd",
        "pagerduty",
        &receiver.url("/v2/enqueue"),
        Some("routing-key-1"),
    )
    .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["pd"] }),
    )
    .await;
    let account = Uuid::now_v7().to_string();
    let id = ops.kill_switch("account", Some(&account)).await;

    // PagerDuty Events API v2.
    let trigger = receiver.next_within(PAGE_WITHIN).await.json();
    assert_eq!(trigger["routing_key"], "routing-key-1");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(
        trigger["dedup_key"],
        format!("KillSwitchActivated/account:{account}")
    );
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "bourse");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("runaway algo")
    );

    let released = ops
        .app
        .client
        .delete(ops.app.url(&format!("/v1/admin/kill-switches/{id}")))
        .bearer_auth(&ops.admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::NO_CONTENT);

    let resolve = receiver.next_within(PAGE_WITHIN).await.json();
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    assert_eq!(ops.alerts("resolved").await.len(), 1);
}

#[sqlx::test(migrations = false)]
async fn the_health_watch_raises_and_resolves_service_unhealthy(pool: PgPool) {
    let watched = Receiver::start().await;
    let watch = format!("ledger-replica={}", watched.url);
    let ops = ops(
        pool,
        &[
            ("BOURSE_ALERTING_WATCH", &watch),
            ("BOURSE_ALERTING_WATCH_INTERVAL_MS", "100"),
            ("BOURSE_ALERTING_WATCH_FAILURES", "2"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    ops.channel("ops-hook", "webhook", &receiver.url("/hook"), None)
        .await;
    ops.rule(
        json!({ "event_type": "ServiceUnhealthy", "severity": "critical",
                     "channels": ["ops-hook"] }),
    )
    .await;
    // Unready only once the route exists: an alert raised before it would be recorded but
    // not paged, and the watch announces a state once.
    watched.set_ready(false);

    let page = receiver.next_at("/hook").await.json();
    assert_eq!(page["action"], "firing");
    assert_eq!(page["alert"]["event_type"], "ServiceUnhealthy");
    assert_eq!(page["alert"]["scope"], "ledger-replica");
    assert!(
        page["alert"]["summary"]
            .as_str()
            .unwrap()
            .contains("answered 503")
    );

    watched.set_ready(true);
    let recovered = receiver.next_at("/hook").await.json();
    assert_eq!(recovered["action"], "resolved");
    assert_eq!(recovered["alert"]["status"], "resolved");
}

#[sqlx::test(migrations = false)]
async fn channels_never_show_their_secrets_and_bad_requests_change_nothing(pool: PgPool) {
    let ops = ops(pool, &[]).await;
    ops.channel(
        "slack",
        "slack",
        "https://hooks.example.com/services/T000/B000/XXXXSECRET",
        None,
    )
    .await;
    ops.channel(
        "pd",
        "pagerduty",
        "https://events.example.com/v2/enqueue",
        Some("ROUTINGSECRET"),
    )
    .await;
    let listed = ops.get("/v1/admin/alert-channels").await;
    let text = listed.to_string();
    assert!(
        !text.contains("XXXXSECRET") && !text.contains("ROUTINGSECRET"),
        "{text}"
    );
    assert_eq!(listed[1]["target"], "https://hooks.example.com/…");
    assert_eq!(listed[0]["has_secret"], true);

    let refused = [
        (
            "/v1/admin/alert-channels",
            json!({ "name": "x", "kind": "webhook", "target": "https://a.example", "colour": "red" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-channels",
            json!({ "name": "Bad Name", "kind": "webhook", "target": "ftp://a" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-channels",
            json!({ "name": "pd2", "kind": "pagerduty", "target": "https://a.example" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-channels",
            json!({ "name": "mail", "kind": "email", "target": "ops@example.com" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-channels",
            json!({ "name": "slack", "kind": "webhook", "target": "https://a.example" }),
            StatusCode::CONFLICT,
        ),
        (
            "/v1/admin/alert-rules",
            json!({ "event_type": "*", "severity": "critical", "channels": ["nowhere"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-rules",
            json!({ "event_type": "TradeSettled", "severity": "critical", "channels": ["slack"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/alert-rules",
            json!({ "event_type": "*", "severity": "critical", "channels": ["slack"], "suppress_seconds": -1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/silences",
            json!({ "matcher": {}, "ends_at": "2099-01-01T00:00:00Z", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/admin/silences",
            json!({ "matcher": { "scope": "global" }, "ends_at": "yesterday", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (path, body, status) in refused {
        let response = ops.post(path, &body).await;
        assert_eq!(response.status(), status, "{path} {body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let malformed = ops
        .app
        .client
        .post(ops.app.url("/v1/admin/alert-rules"))
        .bearer_auth(&ops.admin.access_token)
        .header("content-type", "application/json")
        .body("{\"event_type\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(ops.get("/v1/admin/alert-rules").await, json!([]));
    assert_eq!(
        ops.get("/v1/admin/alert-channels")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let bad_status = ops
        .app
        .get_authed("/v1/admin/alerts?status=loud", &ops.admin.access_token)
        .await;
    assert_problem(bad_status, StatusCode::BAD_REQUEST, "invalid_query").await;
    let missing = ops
        .post(
            &format!("/v1/admin/alerts/{}/ack", Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

/// A real SMTP server on loopback (Python's aiosmtpd, installed by `.ci/run`) that prints
/// every message it accepts.
struct SmtpServer {
    url: String,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    _process: tokio::process::Child,
}

impl SmtpServer {
    async fn start() -> Self {
        let port = service_kit::testing::free_port();
        let mut process = tokio::process::Command::new("python3")
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run does)");
        let stdout = process.stdout.take().unwrap();
        eventually("the SMTP server listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Self {
            url: format!("smtp://127.0.0.1:{port}"),
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
            _process: process,
        }
    }

    /// The next message, as the server printed it.
    async fn next_message(&mut self) -> String {
        let mut message = String::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .expect("a message within 20 s")
                .unwrap()
                .expect("the SMTP server is running");
            if line.starts_with("------------ END MESSAGE") {
                return message;
            }
            message.push_str(&line);
            message.push('\n');
        }
    }
}

#[sqlx::test(migrations = false)]
async fn email_alerts_go_out_over_smtp(pool: PgPool) {
    let mut smtp = SmtpServer::start().await;
    let ops = ops(
        pool,
        &[
            ("BOURSE_ALERTING_SMTP_URL", &smtp.url),
            (
                "BOURSE_ALERTING_SMTP_FROM",
                "Bourse alerts <alerts@bourse.test>",
            ),
        ],
    )
    .await;
    ops.channel("on-call", "email", "oncall@bourse.test", None)
        .await;
    ops.rule(
        json!({ "event_type": "KillSwitchActivated", "severity": "critical",
                     "channels": ["on-call"] }),
    )
    .await;

    ops.kill_switch("symbol", Some("BTC-USD")).await;

    let message = smtp.next_message().await;
    assert!(
        message.contains("From: \"Bourse alerts\" <alerts@bourse.test>")
            || message.contains("From: Bourse alerts <alerts@bourse.test>"),
        "{message}"
    );
    assert!(message.contains("To: oncall@bourse.test"), "{message}");
    assert!(
        message.contains("Subject: [CRITICAL] firing Kill switch activated (symbol:BTC-USD)"),
        "{message}"
    );
    assert!(message.contains("scope: symbol:BTC-USD"), "{message}");
    let alert = ops.alert_of("KillSwitchActivated").await;
    let detail = eventually_some("the email recorded as delivered", || async {
        let detail = ops.detail(alert["id"].as_str().unwrap()).await;
        (detail["deliveries"][0]["status"] == "delivered").then_some(detail)
    })
    .await;
    assert_eq!(detail["deliveries"][0]["channel"], "on-call");
}

fn master_keys(versions: &[(u32, u8)]) -> String {
    use base64::Engine as _;
    versions
        .iter()
        .map(|(v, fill)| {
            format!(
                "{v}:{}",
                base64::engine::general_purpose::STANDARD.encode([*fill; 32])
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[sqlx::test(migrations = false)]
async fn channel_secrets_are_sealed_at_rest_and_resealed_after_a_key_rotation(pool: PgPool) {
    let first = master_keys(&[(1, 1)]);
    let ops = ops(pool.clone(), &[("BOURSE_MASTER_KEYS", &first)]).await;
    let receiver = Receiver::start().await;
    let target = receiver.url("/services/T0/B0/XyzTokenInPath");
    ops.channel("slack", "slack", &target, None).await;
    ops.channel(
        "hook",
        "webhook",
        &receiver.url("/hook"),
        Some("hmac-secret-value"),
    )
    .await;
    let db = ops.app.db.clone();
    let stored = |version: &'static str| {
        let db = db.clone();
        async move {
            let rows: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT target, secret FROM alerting.channels ORDER BY name")
                    .fetch_all(&db)
                    .await
                    .unwrap();
            for (target, secret) in &rows {
                assert!(target.starts_with(version), "{target}");
                assert!(!target.contains("XyzTokenInPath") && !target.contains("127.0.0.1"));
                if let Some(secret) = secret {
                    assert!(secret.starts_with(version) && !secret.contains("hmac-secret-value"));
                }
            }
            rows
        }
    };
    let before = stored("bse1.1.").await;

    // A new master key: the service restarted with both keys re-seals every channel under the
    // new one at start, and the channels still work.
    let Ops { app, admin } = ops;
    let prefix = app.redis_prefix.clone();
    app.stop().await;
    let rotated = master_keys(&[(1, 1), (2, 2)]);
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_MASTER_KEYS", rotated.as_str()),
            ("BOURSE_REDIS_KEY_PREFIX", prefix.as_str()),
        ],
    )
    .await;
    let ops = Ops { app, admin };
    let after = stored("bse1.2.").await;
    assert_ne!(before, after);
    let listed = ops.get("/v1/admin/alert-channels").await;
    assert_eq!(
        listed[1]["target"], "http://127.0.0.1/…",
        "opened with the new key"
    );
    ops.rule(json!({ "event_type": "*", "severity": "critical", "channels": ["slack"] }))
        .await;
    ops.kill_switch("global", None).await;
    let page = receiver.next_at("/services/T0/B0/XyzTokenInPath").await;
    assert!(
        page.json()["text"]
            .as_str()
            .unwrap()
            .contains("Kill switch")
    );
}
