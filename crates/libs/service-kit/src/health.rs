//! `/health/live` and `/health/ready` (REL-01).
//!
//! Live means the process can answer at all: it never checks dependencies, so a database outage
//! does not make an orchestrator restart every replica. Ready means this replica can serve its
//! own routes: what it cannot serve any route without answers (its database, its Redis), no
//! shutdown is under way and the service has not failed.
//!
//! Readiness does not cascade. A dependency whose loss takes down only the routes that use it —
//! an upstream service behind a circuit breaker, which then answers 503 with `Retry-After` — is
//! *reported*, not required ([`Readiness::reporting`]): its state is in the body and in
//! `health_dependency_up{service,dependency}`, but a replica is not taken out of rotation for it.
//! Otherwise a pager that is down (alerting) would take the whole trading API out of a load
//! balancer with it.

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
    /// Another service, probed at its `/health/live`: at each of its base URLs in turn
    /// ([`crate::http::base_urls`]) until one answers.
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
                // Live when any of its replicas is: calls step past one that is down.
                Self::Upstream {
                    base_url, client, ..
                } => {
                    for base in crate::http::base_urls::split(base_url) {
                        let live = client
                            .get(format!("{base}/health/live"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if live {
                            return true;
                        }
                    }
                    false
                }
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
    /// Named by the service router, for the metric's label.
    service: &'static str,
    /// (check, whether readiness requires it)
    checks: Vec<(Check, bool)>,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            service: "",
            checks: Vec::new(),
            shutdown,
        }
    }

    /// A dependency the service cannot serve any route without: not ready while it is down.
    pub fn with(mut self, check: Check) -> Self {
        self.checks.push((check, true));
        self
    }

    /// A dependency only some routes need (an upstream behind a breaker): shown in the body and
    /// the metric, never a reason to take the replica out of rotation.
    pub fn reporting(mut self, check: Check) -> Self {
        self.checks.push((check, false));
        self
    }

    pub(crate) fn named(mut self, service: &'static str) -> Self {
        self.service = service;
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
    // A service that failed (a task it cannot work without died) is draining to exit.
    if readiness.shutdown.failure().is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "failed",
                checks: BTreeMap::new(),
            }),
        );
    }
    if readiness.shutdown.is_triggered() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody {
                status: "shutting_down",
                checks: BTreeMap::new(),
            }),
        );
    }
    let results = join_all(readiness.checks.iter().map(|(check, _)| check.run())).await;
    let mut checks = BTreeMap::new();
    let mut ready = true;
    for ((check, required), up) in readiness.checks.iter().zip(&results) {
        checks.insert(check.name(), if *up { "ok" } else { "unavailable" });
        ready &= *up || !required;
        metrics::gauge!("health_dependency_up", "service" => readiness.service,
            "dependency" => check.name())
        .set(if *up { 1.0 } else { 0.0 });
    }
    if ready {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An upstream given as a list of replicas is live while any of them is.
    #[tokio::test]
    async fn an_upstream_listed_by_replicas_is_live_while_one_of_them_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/health/live", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let gone = format!("http://127.0.0.1:{}", crate::testing::closed_port());
        let check = |base_url: String| Check::Upstream {
            name: "orders",
            base_url,
            client: reqwest::Client::new(),
        };

        assert!(check(format!("{gone},{live}")).run().await);
        assert!(!check(gone.clone()).run().await);
    }
}
