//! The Grafana dashboards (OBS-04) against a running platform: every panel's PromQL parses, and
//! every series a panel selects is exported by the services once they have traded — so no panel
//! of a fresh deployment says "No data" because a metric was renamed, a label value is wrong, or
//! a counter only appears after its first failure.
//!
//! Its own test binary: the platform runs as a `bourse serve all` child process and is scraped
//! the way Prometheus scrapes it, every service's `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::testing::repo_file;
use std::collections::BTreeMap;

use promql_parser::parser::{self, Expr, VectorSelector};
use reqwest::Client;
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;

mod served;
use served::{Served, demo_login, demo_seed, place_limit};

const SERVICES: [&str; 6] = [
    "gateway",
    "auth",
    "orders",
    "risk",
    "settlement",
    "alerting",
];

/// One exported sample: its metric name and labels.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses the Prometheus text format (the lines that are samples, not comments).
fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let Some((name, rest)) = line.split_once('{') else {
                let name = line.split_whitespace().next().unwrap_or_default();
                return Sample {
                    name: name.to_owned(),
                    labels: BTreeMap::new(),
                };
            };
            let mut labels = BTreeMap::new();
            let mut chars = rest.chars().peekable();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                let key = key.trim_start_matches(',').trim().to_owned();
                if key.is_empty() || key.starts_with('}') {
                    break;
                }
                assert_eq!(chars.next(), Some('"'), "label {key} of {line}");
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if chars.peek() == Some(&'}') {
                    break;
                }
            }
            Sample {
                name: name.to_owned(),
                labels,
            }
        })
        .collect()
}

/// Every vector selector in `expr` (inside functions, aggregations, ranges, operators).
fn selectors<'e>(expr: &'e Expr, found: &mut Vec<&'e VectorSelector>) {
    match expr {
        Expr::VectorSelector(selector) => found.push(selector),
        Expr::MatrixSelector(matrix) => found.push(&matrix.vs),
        Expr::Aggregate(aggregate) => {
            selectors(&aggregate.expr, found);
            if let Some(param) = &aggregate.param {
                selectors(param, found);
            }
        }
        Expr::Unary(unary) => selectors(&unary.expr, found),
        Expr::Binary(binary) => {
            selectors(&binary.lhs, found);
            selectors(&binary.rhs, found);
        }
        Expr::Paren(paren) => selectors(&paren.expr, found),
        Expr::Subquery(subquery) => selectors(&subquery.expr, found),
        Expr::Call(call) => {
            for arg in &call.args.args {
                selectors(arg, found);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Whether some exported sample has the selector's name and satisfies all its matchers.
fn selects_something(selector: &VectorSelector, exported: &[Sample]) -> bool {
    let Some(name) = &selector.name else {
        return false;
    };
    exported.iter().any(|sample| {
        sample.name == *name
            && selector
                .matchers
                .matchers
                .iter()
                .filter(|m| m.name != "__name__")
                .all(|m| m.is_match(sample.labels.get(&m.name).map_or("", String::as_str)))
    })
}

/// A panel's query as Prometheus receives it: Grafana's variables replaced by what they stand
/// for when "All" is chosen.
fn as_sent(expr: &str, dashboard: &Value) -> String {
    let mut expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let all = variable["allValue"].as_str().unwrap_or(".*");
        expr = expr
            .replace(&format!("${{{name}}}"), all)
            .replace(&format!("${name}"), all);
    }
    expr
}

/// (dashboard file, panel title, query as sent, the datasource uids of panel and target) for every
/// query of every panel, rows included.
fn queries() -> Vec<(String, String, String, Value)> {
    let mut found = Vec::new();
    let folder = repo_file("deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the dashboards are in {folder:?}");
    for file in files {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{file:?} is not JSON: {e}"));
        let mut panels: Vec<Value> = dashboard["panels"].as_array().unwrap().clone();
        while let Some(panel) = panels.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                panels.extend(nested.iter().cloned());
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                found.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    panel["title"].as_str().unwrap_or_default().to_owned(),
                    as_sent(target["expr"].as_str().unwrap(), &dashboard),
                    json!([panel["datasource"]["uid"], target["datasource"]["uid"]]),
                ));
            }
        }
    }
    found
}

/// The datasource uids Grafana is provisioned with (`uid:` lines of the provisioning file).
fn provisioned_datasources() -> Vec<String> {
    let file = repo_file("deploy/grafana/provisioning/datasources/datasources.yml");
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("uid:"))
        .map(|uid| uid.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn every_panel_parses_and_names_a_provisioned_datasource() {
    let datasources = provisioned_datasources();
    assert!(
        datasources.contains(&"prometheus".to_owned()),
        "{datasources:?}"
    );
    for (file, panel, expr, uids) in queries() {
        assert!(
            !expr.contains('$'),
            "{file} / {panel}: a variable is left in {expr}"
        );
        parser::parse(&expr).unwrap_or_else(|e| panic!("{file} / {panel}: {e}\n{expr}"));
        for uid in uids.as_array().unwrap() {
            assert!(
                datasources.iter().any(|d| uid == d),
                "{file} / {panel}: datasource {uid} is not provisioned"
            );
        }
    }
}

/// One service's `/metrics`, as Prometheus reads it.
async fn exposition(client: &Client, address: &str) -> String {
    client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// What Prometheus would hold after scraping every service once.
async fn scrape(client: &Client, addresses: &BTreeMap<String, String>) -> Vec<Sample> {
    let mut exported = Vec::new();
    for address in addresses.values() {
        exported.extend(samples(&exposition(client, address).await));
    }
    exported
}

#[sqlx::test(migrations = false)]
async fn once_the_platform_has_traded_every_panel_finds_its_series_and_promtool_no_problem(
    pool: PgPool,
) {
    // A platform that has just traded: two crossing orders, settled and reconciled.
    demo_seed(&pool).await;
    let mut platform = Served::start_with(
        &pool,
        &[("BOURSE_SETTLEMENT_RECONCILIATION_INTERVAL_SECS", "1")],
    )
    .await;
    let addresses = platform.addresses_of(&SERVICES).await;
    let gateway = &addresses["gateway"];
    let client = Client::new();
    eventually("the gateway is ready", || async {
        let ready = client.get(format!("http://{gateway}/health/ready")).send();
        ready.await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let [alice, bob] = bourse::demo::DEMO_TRADERS;
    let (alice, bob) = (
        demo_login(&client, gateway, alice).await,
        demo_login(&client, gateway, bob).await,
    );
    place_limit(&client, gateway, &bob, "sell", None).await;
    place_limit(&client, gateway, &alice, "buy", None).await;
    let settled_and_reconciled = |exported: &[Sample]| {
        let value = |name: &str| exported.iter().any(|s| s.name == name);
        value("settlement_trades_settled_total")
            && value("settlement_finality_seconds_bucket")
            && value("settlement_reconciliation_ok")
    };
    eventually("the trade settled and the books reconciled", || async {
        settled_and_reconciled(&scrape(&client, &addresses).await)
    })
    .await;
    // A value, not only a series: a first start on a database decides on funds once its
    // balances are in and its mark on the orders stream is read (ADR 0023).
    eventually("risk to decide on funds", || async {
        exposition(&client, &addresses["risk"])
            .await
            .lines()
            .any(|line| line == "risk_funds_deciding 1")
    })
    .await;

    // Every selector of every panel finds a series.
    let exported = scrape(&client, &addresses).await;
    let mut missing = Vec::new();
    let mut checked = 0;
    for (file, panel, expr, _) in queries() {
        let parsed = parser::parse(&expr).unwrap();
        let mut found = Vec::new();
        selectors(&parsed, &mut found);
        assert!(!found.is_empty(), "{file} / {panel} selects nothing");
        for selector in found {
            checked += 1;
            if !selects_something(selector, &exported) {
                missing.push(format!("{file} / {panel}: {selector}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "panels that would say \"No data\":\n{}",
        missing.join("\n")
    );
    assert!(checked >= 30, "only {checked} selectors checked");

    // The database pools are watched (OBS-03): each service's pool reports its connections.
    for schema in ["auth", "orders", "risk", "settlement", "alerting"] {
        assert!(
            exported.iter().any(|s| s.name == "db_pool_connections"
                && s.labels.get("schema").map(String::as_str) == Some(schema)),
            "no db_pool_connections for {schema}"
        );
    }

    // And every exposition passes Prometheus's own lint: help text, units, naming (OBS-03).
    let mut lint = Vec::new();
    for (service, address) in &addresses {
        if let Some(problems) = promtool_problems(&exposition(&client, address).await) {
            lint.push(format!("{service}:\n{problems}"));
        }
    }
    assert!(
        lint.is_empty(),
        "promtool check metrics:\n{}",
        lint.join("\n")
    );
}

/// What `promtool check metrics` says about an exposition; None when it is clean. promtool
/// comes with Debian's prometheus package (`tools/dev/prepare-tests.sh` installs it).
fn promtool_problems(exposition: &str) -> Option<String> {
    use std::io::Write as _;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; tools/dev/prepare-tests.sh does)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !said.trim().is_empty()).then_some(said)
}

#[test]
fn a_selector_matches_only_series_with_its_labels() {
    // The check above is only as good as this: a wrong label value is "No data".
    let exported = samples(
        "# TYPE http_requests_total counter\n\
         http_requests_total{service=\"orders\",route=\"/v1/orders\",status=\"201\"} 3\n\
         up 1\n",
    );
    let first = |query: &str| {
        let parsed = parser::parse(query).unwrap();
        let mut found = Vec::new();
        selectors(&parsed, &mut found);
        selects_something(found[0], &exported)
    };
    assert!(first(
        r#"sum(rate(http_requests_total{service="orders", status=~"2.."}[1m]))"#
    ));
    assert!(first("up"));
    assert!(!first(r#"http_requests_total{service="gateway"}"#));
    assert!(!first(r#"http_requests_total{status=~"5.."}"#));
    assert!(!first("http_requests_seconds"));
}
