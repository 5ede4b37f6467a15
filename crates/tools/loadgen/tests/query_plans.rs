//! Every query a realistic load runs reads only what an index finds for it (PRF-03, REL-12).
//!
//! The queries are not a list kept by hand, which would drift from the code: a short load runs
//! against a real `serve all` — followed by the reads and changes a trader and an operator
//! make beside the mix — while a tracing layer records every statement sqlx sends. Each
//! distinct statement is then prepared in the schema it belongs to and its **generic plan**
//! (`plan_cache_mode = force_generic_plan`: the plan for any parameters, as a prepared statement
//! gets) is explained with `enable_seqscan = off`, which makes PostgreSQL use an index whenever
//! one can serve the query. Two shapes in that plan read rows only to throw them away, so what a
//! call costs grows with the table while what it returns does not:
//!
//! - a **sequential scan**: no index can serve the statement;
//! - an **index scan with a filter**: an index finds candidate rows and a condition it does not
//!   cover drops most of them — the ticker that summed a symbol's whole history to get one
//!   day's volume passed the first check and is exactly this one. A unique index bound on every
//!   key column is exempt: it finds at most one row per value given.
//!
//! The test names the statement, the table and the condition. Tables that stay small by
//! design, and the few statements that read a whole table on purpose (reconciliation, start-up
//! loads), are listed with their reason; so are filters that drop a bounded few. Statements
//! known to be bad are planned first and must be flagged, so a check that stopped seeing
//! anything fails. A statement whose parameter types PostgreSQL cannot infer alone (a parameter
//! used only in a VALUES list) cannot be prepared here and is left out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::json;
use service_kit::testing::eventually;
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
    ("starts", "one row: risk's latest start and its handover"),
    ("outbox_relay", "one row: how far the relay has published"),
    (
        "outbox_streams",
        "one row per stream an outbox publishes to",
    ),
    ("_sqlx_migrations", "the migration history"),
    ("_events_migrations", "the migration history"),
    ("_idempotency_migrations", "the migration history"),
];

/// Statements that read a whole table on purpose, recognised by a fragment of their text. A
/// statement with no `WHERE` and no `LIMIT` is one too: a start-up load of what a service keeps
/// in memory (risk's limits, positions and open orders; keys to re-seal).
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

/// Index scans that filter on purpose — the index, a fragment of the statement's text — with
/// why what they read stays bounded. Naming the index too means the exemption ends if the plan
/// stops using it. (A page narrowed by equalities — an index scan under a `LIMIT` whose filter
/// compares nothing by range — needs no entry: it reads in order and stops at the page.)
const FILTERED_ON_PURPOSE: &[(&str, &str, &str)] = &[
    (
        "orders_open_by_account_idx",
        "select distinct symbol from orders where account_id = $1 and status in",
        "a cancel-all reads what the account has resting (the partial index holds only that) \
         and keeps one symbol's when asked",
    ),
    (
        "api_keys_user_live_idx",
        "update api_keys set revoked_at = now() where id = $1",
        "a user has at most 10 live keys (creating an 11th is refused); on an empty table the \
         planner takes this index over the primary key, either reads a handful",
    ),
    (
        "inbox_pkey",
        "delete from inbox where ctid",
        "the purge finds old rows by their event id (UUIDv7, so by age) a chunk at a time; \
         the filter only spares an old event processed late (ADR 0028)",
    ),
    (
        "ended_orders_pkey",
        "delete from ended_orders where order_id in",
        "the purge finds old rows by their order id (UUIDv7, so by age) a chunk at a time; \
         the filter only spares an order that rested longer than the retention (ADR 0023)",
    ),
    (
        "alerts_by_status",
        "set escalated_at = now()",
        "firing alerts are few (they are resolved); the filter picks the unescalated",
    ),
    (
        "deliveries_due",
        "from deliveries where status = 'pending'",
        "the partial index holds pending deliveries only; the filter skips those leased, \
         a chunk at a time",
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

/// Statements known to read far more rows than they return, which the checks must flag: a
/// guard that passes everything would look the same as a clean run. Each is planned in
/// `orders`.
const KNOWN_BAD: &[(&str, Finding)] = &[
    // No index has `price` first: only a sequential scan can serve it.
    (
        "SELECT id FROM trades WHERE price = $1",
        Finding::SequentialScan,
    ),
    // The ticker's volume before the per-minute sums (4ad7d70): the index finds the symbol and
    // the filter throws away every trade older than a day — a symbol's whole history a call.
    (
        "SELECT COALESCE(sum(quantity), 0)::bigint FROM trades
          WHERE symbol = $1 AND executed_at > now() - interval '24 hours'",
        Finding::FilteredIndexScan,
    ),
    // A trader's orders before the conditions were built per request: the cursor was a filter,
    // so page n read the n pages before it. Under a LIMIT, but a range is not a narrowing.
    (
        "SELECT id FROM orders WHERE account_id = $1
           AND ($2::uuid IS NULL OR (created_at, id) <
                (SELECT created_at, id FROM orders WHERE id = $2 AND account_id = $1))
         ORDER BY created_at DESC, id DESC LIMIT $3",
        Finding::FilteredIndexScan,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Finding {
    SequentialScan,
    FilteredIndexScan,
}

#[sqlx::test(migrations = false)]
async fn every_query_of_a_realistic_load_reads_only_what_an_index_finds(pool: PgPool) {
    let statements = Statements::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(statements.clone()),
    )
    .unwrap();

    let platform = Platform::with_operator(&pool).await;
    let report = loadgen::run(&platform.load(30, 3, 4, 11)).await.unwrap();
    assert!(report.passed(), "{report}");
    reads_the_mix_leaves_out(&platform).await;
    writes_the_mix_leaves_out(&platform).await;
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

    for (sql, finding) in KNOWN_BAD {
        let plan = plan_in(&mut conn, "orders", sql).await.unwrap();
        let found = match finding {
            Finding::SequentialScan => !plan.sequential_scans.is_empty(),
            Finding::FilteredIndexScan => !plan.filtered_scans.is_empty(),
        };
        assert!(found, "the check for {finding:?} misses {}", one_line(sql));
    }

    let mut problems = Vec::new();
    let mut explained = 0;
    for sql in &captured {
        let Some(plan) = plan(&mut conn, sql).await else {
            continue;
        };
        explained += 1;
        let lowered = one_line(sql).to_lowercase();
        // A statement with no `WHERE` reads its tables whole on purpose — unless it stops at a
        // `LIMIT`, which wants the rows in an index's order.
        let has = |keyword: &str| {
            lowered
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| word == keyword)
        };
        let reads_whole_tables = (!has("where") && !has("limit"))
            || WHOLE_TABLE_READS
                .iter()
                .any(|(fragment, _)| lowered.contains(fragment));
        if !reads_whole_tables {
            for table in plan.sequential_scans {
                if !is_small(&table) {
                    problems.push(format!(
                        "sequential scan of {table} (no index can serve it): {}",
                        one_line(sql)
                    ));
                }
            }
        }
        for scan in plan.filtered_scans {
            if !is_small(&scan.table)
                && !FILTERED_ON_PURPOSE
                    .iter()
                    .any(|(index, fragment, _)| scan.index == *index && lowered.contains(fragment))
            {
                problems.push(format!(
                    "{} finds rows by {} ({}) and throws away those failing {} (what it reads \
                     grows with the table): {}",
                    scan.table,
                    scan.index_cond,
                    scan.index,
                    scan.filter,
                    one_line(sql)
                ));
            }
        }
    }
    assert!(
        explained > 30,
        "too few statements could be explained ({explained})"
    );
    assert!(
        problems.is_empty(),
        "statements that read more than an index finds for them:\n{}",
        problems.join("\n")
    );
}

/// The reads a trader and an operator make that the load's mix does not — the listings with
/// each of their filters and a cursor, the operator's views — so their statements are planned
/// too. Each must answer 200: a statement that failed would never be planned.
async fn reads_the_mix_leaves_out(platform: &Platform) {
    let gateway = loadgen::client::Gateway::new(&platform.gateway).unwrap();
    let trader = gateway.sign_up("plans@example.com").await.unwrap();
    let account = gateway.account(&trader).await.unwrap();
    let operator = gateway
        .log_in(platform::OPERATOR, loadgen::client::PASSWORD)
        .await
        .unwrap();
    // Any id will do as a cursor: the statement is what is planned, not what it finds.
    let cursor = uuid::Uuid::now_v7();
    // But the trades after one must start from a trade of the symbol, or only the look-up of
    // where it stands runs.
    let recent = gateway
        .read(None, "/v1/markets/BTC-USD/trades?limit=1")
        .await
        .unwrap();
    let traded = recent.body[0]["id"]
        .as_str()
        .expect("the load traded")
        .to_owned();
    let trader_reads = [
        "/v1/auth/me".to_owned(),
        "/v1/api-keys".to_owned(),
        "/v1/orders?status=open".to_owned(),
        "/v1/orders?status=filled&symbol=BTC-USD".to_owned(),
        format!("/v1/orders?cursor={cursor}"),
        format!("/v1/orders?status=open&cursor={cursor}"),
        "/v1/trades?symbol=BTC-USD".to_owned(),
        format!("/v1/trades?cursor={cursor}"),
        "/v1/positions".to_owned(),
        "/v1/balances".to_owned(),
        "/v1/markets/BTC-USD/trades".to_owned(),
        format!("/v1/markets/BTC-USD/trades?after={traded}"),
        "/v1/markets/BTC-USD/ticker".to_owned(),
    ];
    let operator_reads = [
        format!("/v1/admin/risk-limits/{account}"),
        format!("/v1/admin/risk-funds/{account}"),
        "/v1/admin/alert-channels".to_owned(),
        "/v1/admin/alert-rules".to_owned(),
        "/v1/admin/alerts".to_owned(),
        "/v1/admin/alerts?status=firing".to_owned(),
        "/v1/admin/silences".to_owned(),
    ];
    let reads = trader_reads
        .iter()
        .map(|path| (&trader, path))
        .chain(operator_reads.iter().map(|path| (&operator, path)));
    for (token, path) in reads {
        let answer = gateway.read(Some(token), path).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
}

/// The changes a trader and an operator make that the load's mix does not — sessions, API
/// keys, a withdrawal, limits, a kill switch, a silence — each answered with success, so their
/// statements are planned too.
async fn writes_the_mix_leaves_out(platform: &Platform) {
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", platform.gateway);
    let send = |request: reqwest::RequestBuilder, what: &'static str| async move {
        let response = request
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "{what}: {status} {body}");
        body
    };
    let login = |email: &'static str| {
        send(
            http.post(url("/v1/auth/login"))
                .json(&json!({ "email": email, "password": loadgen::client::PASSWORD })),
            "login",
        )
    };
    let trader = login("plans@example.com").await;
    let operator = login(platform::OPERATOR).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = trader["access_token"].as_str().unwrap().to_owned();
    let account = loadgen::client::Gateway::new(&platform.gateway)
        .unwrap()
        .account(&token)
        .await
        .unwrap();

    // A trader's sessions.
    let refreshed = send(
        http.post(url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": trader["refresh_token"] })),
        "refresh",
    )
    .await;

    // An operator's money, limits and switches.
    let money = |amount: &str| json!({ "account_id": account, "asset": "USD", "amount": amount });
    send(
        http.post(url("/v1/admin/deposits"))
            .bearer_auth(&operator)
            .json(&money("10.00")),
        "deposit",
    )
    .await;
    // Risk reserves a withdrawal from the balance it follows, which learns of the deposit
    // through the ledger's events: refused (and nothing changed) until then.
    eventually("a withdrawal once risk has seen the deposit", || async {
        http.post(url("/v1/admin/withdrawals"))
            .bearer_auth(&operator)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&money("1.00"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    })
    .await;
    send(
        http.put(url(&format!("/v1/admin/risk-limits/{account}")))
            .bearer_auth(&operator)
            .json(&json!({
                "max_order_quantity": "1", "max_order_notional": "1000000",
                "max_open_orders": 10, "max_orders_per_second": 50, "max_position": "20",
                "price_collar_bps": 1000,
            })),
        "limits",
    )
    .await;
    let in_an_hour = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // Things made and removed again: the trader's API key (revoked), an operator's kill switch
    // and silence.
    for (path, bearer, body) in [
        (
            "/v1/api-keys",
            &token,
            json!({ "name": "plans", "scopes": ["read"] }),
        ),
        (
            "/v1/admin/kill-switches",
            &operator,
            json!({ "scope": "account", "target": account, "reason": "plans" }),
        ),
        (
            "/v1/admin/silences",
            &operator,
            json!({ "matcher": { "scope": "account" }, "ends_at": in_an_hour, "reason": "plans" }),
        ),
    ] {
        let made = send(http.post(url(path)).bearer_auth(bearer).json(&body), "made").await;
        let id = made["id"].as_str().unwrap();
        send(
            http.delete(url(&format!("{path}/{id}")))
                .bearer_auth(bearer),
            "removed",
        )
        .await;
    }

    // And the trader leaves: this session, then every other.
    send(
        http.post(url("/v1/auth/logout"))
            .bearer_auth(&token)
            .json(&json!({ "refresh_token": refreshed["refresh_token"] })),
        "logout",
    )
    .await;
    send(
        http.delete(url("/v1/auth/sessions")).bearer_auth(&token),
        "sessions",
    )
    .await;
}

fn is_small(table: &str) -> bool {
    SMALL_TABLES.iter().any(|(small, _)| *small == table)
}

/// What a statement's generic plan reads beyond what its indexes find.
#[derive(Default)]
struct Plan {
    /// Tables read whole.
    sequential_scans: Vec<String>,
    /// Index scans that fetch rows and then drop those failing a filter.
    filtered_scans: Vec<FilteredScan>,
}

struct FilteredScan {
    table: String,
    index: String,
    index_cond: String,
    filter: String,
}

/// `sql`'s generic plan, trying each schema until the statement prepares there; None when it
/// is not a plannable statement (BEGIN, SET, DDL…).
async fn plan(conn: &mut sqlx::PgConnection, sql: &str) -> Option<Plan> {
    let first = sql.split_whitespace().next()?.to_uppercase();
    if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(&first.as_str()) {
        return None;
    }
    for schema in SCHEMAS {
        if let Some(plan) = plan_in(conn, schema, sql).await {
            return Some(plan);
        }
    }
    None
}

/// `sql`'s generic plan in `schema`; None when it does not prepare there (the schema lacks its
/// tables).
async fn plan_in(conn: &mut sqlx::PgConnection, schema: &str, sql: &str) -> Option<Plan> {
    let parameters = (1..=64)
        .rev()
        .find(|n| sql.contains(&format!("${n}")))
        .unwrap_or(0);
    sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
        .execute(&mut *conn)
        .await
        .ok()?;
    // Only our own: sqlx's cached statements live on this connection too.
    let _ = sqlx::raw_sql("DEALLOCATE planned")
        .execute(&mut *conn)
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("PREPARE planned AS {sql}")))
        .execute(&mut *conn)
        .await
        .ok()?;
    let nulls = vec!["NULL"; parameters].join(", ");
    let execute = if parameters == 0 {
        "EXPLAIN (FORMAT JSON) EXECUTE planned".to_owned()
    } else {
        format!("EXPLAIN (FORMAT JSON) EXECUTE planned({nulls})")
    };
    let explained: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(execute))
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    let mut nodes = Vec::new();
    collect_nodes(&explained, false, &mut nodes);
    let mut plan = Plan::default();
    for (node, under_limit) in nodes {
        let field = |name: &str| node.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let Some(table) = field("Relation Name") else {
            continue;
        };
        match field("Node Type").as_deref() {
            Some("Seq Scan") => plan.sequential_scans.push(table),
            Some("Index Scan" | "Index Only Scan" | "Bitmap Heap Scan") => {
                let Some(filter) = field("Filter") else {
                    continue;
                };
                let index_cond = field("Index Cond")
                    .or_else(|| field("Recheck Cond"))
                    .unwrap_or_default();
                // A page narrowed by equalities: read in the index's order until the page is
                // full. A range in the filter (a cursor, an age) is not a narrowing: what it
                // skips grows.
                if under_limit && !compares_by_range(&filter) {
                    continue;
                }
                // A bitmap heap scan's index is named by the bitmap index scan under it.
                let index = field("Index Name")
                    .or_else(|| bitmap_index(node))
                    .unwrap_or_else(|| "several indexes".to_owned());
                // A unique index bound on every key column reads at most one row per value
                // given: the filter then drops at most what the caller asked for.
                if finds_one_row_per_value(conn, &index, &index_cond).await {
                    continue;
                }
                // An UPDATE's or a locking read's scan of a partial index checks the index's
                // predicate again on every row: that filter drops nothing.
                if filters_only_by_its_predicate(conn, &index, &filter).await {
                    continue;
                }
                plan.filtered_scans.push(FilteredScan {
                    table,
                    index,
                    index_cond,
                    filter,
                });
            }
            _ => {}
        }
    }
    Some(plan)
}

/// Whether `index` is unique and `index_cond` binds each of its key columns by equality
/// (`=` or `= ANY`) and nothing by a range.
async fn finds_one_row_per_value(
    conn: &mut sqlx::PgConnection,
    index: &str,
    index_cond: &str,
) -> bool {
    let Ok(Some((unique, keys))) = sqlx::query_as::<_, (bool, i16)>(
        "SELECT indisunique, indnkeyatts FROM pg_index WHERE indexrelid = to_regclass($1)",
    )
    .bind(index)
    .fetch_optional(&mut *conn)
    .await
    else {
        return false;
    };
    let equalities = index_cond.matches(" = ").count();
    unique
        && !compares_by_range(index_cond)
        && equalities >= usize::try_from(keys).unwrap_or(usize::MAX)
}

/// The one index a bitmap heap scan reads, when it reads one (not an `OR` of several).
fn bitmap_index(node: &serde_json::Value) -> Option<String> {
    match node.get("Plans")?.as_array()?.as_slice() {
        [child] => Some(child.get("Index Name")?.as_str()?.to_owned()),
        _ => None,
    }
}

/// Whether `filter` is `index`'s own predicate (a partial index) and nothing more.
async fn filters_only_by_its_predicate(
    conn: &mut sqlx::PgConnection,
    index: &str,
    filter: &str,
) -> bool {
    let Ok(Some(Some(predicate))) = sqlx::query_scalar::<_, Option<String>>(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = to_regclass($1)",
    )
    .bind(index)
    .fetch_optional(&mut *conn)
    .await
    else {
        return false;
    };
    let bare = |condition: &str| condition.trim_matches(|c| c == '(' || c == ')').to_owned();
    bare(filter) == bare(&predicate)
}

/// Whether a condition orders anything (`<`, `<=`, `>`, `>=`); `<>` only excludes.
fn compares_by_range(condition: &str) -> bool {
    condition.replace("<>", "").contains(['<', '>'])
}

/// Every plan node of an `EXPLAIN (FORMAT JSON)` document, depth first, and whether a `LIMIT`
/// stops it early: only nodes that pass rows on as they come keep a limit above them in force
/// (a sort or an aggregate reads all of its input first).
fn collect_nodes<'a>(
    value: &'a serde_json::Value,
    under_limit: bool,
    nodes: &mut Vec<(&'a serde_json::Value, bool)>,
) {
    const STREAMING: &[&str] = &[
        "Limit",
        "Append",
        "Merge Append",
        "Subquery Scan",
        "Result",
        "Unique",
        "LockRows",
        "ModifyTable",
    ];
    match value {
        serde_json::Value::Object(map) => {
            let mut under_limit = under_limit;
            if let Some(node_type) = map.get("Node Type").and_then(|t| t.as_str()) {
                nodes.push((value, under_limit));
                under_limit =
                    node_type == "Limit" || (under_limit && STREAMING.contains(&node_type));
            }
            for child in map.values() {
                collect_nodes(child, under_limit, nodes);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_nodes(item, under_limit, nodes);
            }
        }
        _ => {}
    }
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
