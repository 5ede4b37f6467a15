//! `/health/live` and `/health/ready` (REL-01).
//!
//! Live means the process can answer at all: it never checks dependencies, so a database outage
//! does not make an orchestrator restart every replica. Ready means this replica should get
//! traffic: PostgreSQL, Redis and declared upstreams answer, and no shutdown is under way.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use serde::Serialize;
use sqlx::PgPool;

use crate::shutdown::Shutdown;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency readiness depends on.
#[derive(Clone)]
pub enum Check {
    Postgres(PgPool),
    Redis(ConnectionManager),
    /// Another service, probed at its `/health/live`.
    Upstream {
        name: &'static str,
        base_url: String,
        client: reqwest::Client,
    },
}

impl Check {
    fn name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
            Self::Upstream { name, .. } => name,
        }
    }

    async fn run(&self) -> bool {
        let probe = async {
            match self {
                Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
                Self::Redis(conn) => {
                    let mut conn = conn.clone();
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                }
                Self::Upstream {
                    base_url, client, ..
                } => client
                    .get(format!("{base_url}/health/live"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, probe)
            .await
            .unwrap_or(false)
    }
}

/// The checks of one service and the shutdown it watches.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Check>,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            checks: Vec::new(),
            shutdown,
        }
    }

    pub fn with(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }
}

#[derive(Serialize)]
struct ReadyBody {
    status: &'static str,
    checks: BTreeMap<&'static str, &'static str>,
}

pub fn router<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready).with_state(readiness))
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, Json<ReadyBody>) {
    if readiness.shutdown.is_triggered() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "shutting_down",
                checks: BTreeMap::new(),
            }),
        );
    }
    let results = join_all(readiness.checks.iter().map(Check::run)).await;
    let checks: BTreeMap<_, _> = readiness
        .checks
        .iter()
        .zip(&results)
        .map(|(check, ok)| (check.name(), if *ok { "ok" } else { "unavailable" }))
        .collect();
    if results.iter().all(|ok| *ok) {
        (
            StatusCode::OK,
            Json(ReadyBody {
                status: "ready",
                checks,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "not_ready",
                checks,
            }),
        )
    }
}
