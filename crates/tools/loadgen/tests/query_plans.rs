//! Every query a realistic load runs can be served by an index (PRF-03, REL-12).
//!
//! The queries are not a list kept by hand, which would drift from the code: a short load runs
//! against a real `serve all` while a tracing layer records every statement sqlx sends. Each
//! distinct statement is then prepared in the schema it belongs to and its **generic plan**
//! (`plan_cache_mode = force_generic_plan`: the plan for any parameters, as a prepared statement
//! gets) is explained with `enable_seqscan = off`, which makes PostgreSQL use an index whenever
//! one can serve the query. A sequential scan left in that plan means no index can: the test
//! names the statement and the table. Tables that stay small by design, and the few statements
//! that read a whole table on purpose (reconciliation, start-up loads), are listed with their
//! reason. A statement whose parameter types PostgreSQL cannot infer alone (a parameter used
//! only in a VALUES list) cannot be prepared here and is left out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use sqlx::{Connection, PgPool};
use tracing_subscriber::layer::SubscriberExt as _;

mod platform;
use platform::Platform;

/// Tables a sequential scan of is fine: bounded by configuration, not by traffic.
const SMALL_TABLES: &[(&str, &str)] = &[
    ("instruments", "one row per listed symbol"),
    ("assets", "one row per configured asset"),
    ("symbol_owners", "one row per symbol"),
    ("replicas", "one row per live orders replica"),
    ("signing_keys", "a handful of keys per rotation window"),
    ("kill_switches", "a few active switches"),
    ("alert_channels", "configured by operators"),
    ("alert_rules", "configured by operators"),
    ("silences", "configured by operators"),
    ("risk_limits", "one row per account with custom limits"),
    ("outbox_relay", "one row: how far the relay has published"),
    (
        "outbox_streams",
        "one row per stream an outbox publishes to",
    ),
    ("_sqlx_migrations", "the migration history"),
    ("_events_migrations", "the migration history"),
];

/// Statements that read a whole table on purpose, recognised by a fragment of their text. A
/// statement with no `WHERE` at all is one too: a start-up load of what a service keeps in
/// memory (risk's limits, positions and open orders; keys to re-seal).
const WHOLE_TABLE_READS: &[(&str, &str)] = &[
    (
        "sum(",
        "reconciliation and totals aggregate everything by design",
    ),
    ("count(*)", "counts for metrics and limits"),
    (
        "kind = 'customer' and available <> 0",
        "settlement's snapshot of every balance, read by risk once at its start (ADR 0023)",
    ),
];

const SCHEMAS: &[&str] = &["orders", "settlement", "risk", "auth", "alerting"];

/// Records the SQL of every `sqlx::query` event.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<BTreeSet<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        struct Sql(Option<String>);
        impl tracing::field::Visit for Sql {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "db.statement" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "db.statement" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut sql = Sql(None);
        event.record(&mut sql);
        if let Some(sql) = sql.0 {
            let sql = sql.trim().to_owned();
            if !sql.is_empty() {
                self.0.lock().unwrap().insert(sql);
            }
        }
    }
}

#[sqlx::test(migrations = false)]
async fn every_query_of_a_realistic_load_can_use_an_index(pool: PgPool) {
    let statements = Statements::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(statements.clone()),
    )
    .unwrap();

    let platform = Platform::with_operator(&pool).await;
    let report = loadgen::run(&platform.load(30, 3, 4, 11)).await.unwrap();
    assert!(report.passed(), "{report}");
    platform.stop().await;

    let captured: Vec<String> = statements.0.lock().unwrap().iter().cloned().collect();
    assert!(
        captured.len() > 30,
        "the load ran too few statements: {captured:#?}"
    );
    let url = bourse::testing::database_url(&pool);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut problems = Vec::new();
    let mut explained = 0;
    for sql in &captured {
        let Some(scans) = sequential_scans(&mut conn, sql).await else {
            continue;
        };
        explained += 1;
        let lowered = sql.to_lowercase();
        if !lowered.contains("where")
            || WHOLE_TABLE_READS
                .iter()
                .any(|(fragment, _)| lowered.contains(fragment))
        {
            continue;
        }
        for table in scans {
            if !SMALL_TABLES.iter().any(|(small, _)| *small == table) {
                problems.push(format!("{table}: {}", one_line(sql)));
            }
        }
    }
    assert!(
        explained > 30,
        "too few statements could be explained ({explained})"
    );
    assert!(
        problems.is_empty(),
        "no index can serve these (sequential scan of the named table):\n{}",
        problems.join("\n")
    );
}

/// The tables a sequential scan reads in `sql`'s generic plan, trying each schema until the
/// statement prepares there; None when it is not a plannable statement (BEGIN, SET, DDL…).
async fn sequential_scans(conn: &mut sqlx::PgConnection, sql: &str) -> Option<Vec<String>> {
    let first = sql.split_whitespace().next()?.to_uppercase();
    if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(&first.as_str()) {
        return None;
    }
    let parameters = (1..=64)
        .rev()
        .find(|n| sql.contains(&format!("${n}")))
        .unwrap_or(0);
    for schema in SCHEMAS {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
            .execute(&mut *conn)
            .await
            .ok()?;
        // Only our own: sqlx's cached statements live on this connection too.
        let _ = sqlx::raw_sql("DEALLOCATE planned")
            .execute(&mut *conn)
            .await;
        // Fails where the schema lacks the statement's tables: the next one is tried.
        if sqlx::query(sqlx::AssertSqlSafe(format!("PREPARE planned AS {sql}")))
            .execute(&mut *conn)
            .await
            .is_err()
        {
            continue;
        }
        let nulls = vec!["NULL"; parameters].join(", ");
        let execute = if parameters == 0 {
            "EXPLAIN (FORMAT JSON) EXECUTE planned".to_owned()
        } else {
            format!("EXPLAIN (FORMAT JSON) EXECUTE planned({nulls})")
        };
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(execute))
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        let mut tables = Vec::new();
        collect_seq_scans(&plan, &mut tables);
        return Some(tables);
    }
    None
}

fn collect_seq_scans(node: &serde_json::Value, tables: &mut Vec<String>) {
    match node {
        serde_json::Value::Object(map) => {
            if map.get("Node Type").and_then(|t| t.as_str()) == Some("Seq Scan")
                && let Some(table) = map.get("Relation Name").and_then(|t| t.as_str())
            {
                tables.push(table.to_owned());
            }
            for value in map.values() {
                collect_seq_scans(value, tables);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_seq_scans(item, tables);
            }
        }
        _ => {}
    }
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
