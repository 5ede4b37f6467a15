//! Prometheus metrics: one process-wide recorder, rendered at `/metrics` (OBS-03).
//!
//! Every service records RED metrics per route through the observe middleware; domain crates
//! add their own with the `metrics` macros. Names follow Prometheus conventions (`_total`,
//! `_seconds`), and every series carries a `service` label so `bourse serve all` stays readable.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets from 0.5 ms to 10 s: order entry lives at the low end, timeouts at the top.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global recorder once and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // If something else installed a recorder first, /metrics renders only what reaches ours.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// Help text and unit of the metrics the kit records itself; each crate describes its own
/// (`describe_metrics()`), since `promtool check metrics` asks for both.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        Unit::Count,
        "Requests answered, by service, method, route and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, by service, method and route."
    );
    describe_histogram!(
        "idempotency_look_ups_per_read",
        Unit::Count,
        "Idempotency-key look-ups one statement read together (order entry)."
    );
    describe_gauge!(
        "health_dependency_up",
        Unit::Count,
        "1 when the dependency answered the last readiness check, else 0."
    );
    describe_counter!(
        "service_task_restarts_total",
        Unit::Count,
        "Background tasks started again after they ended or panicked."
    );
    describe_counter!(
        "service_task_panics_total",
        Unit::Count,
        "Tracked background tasks that panicked."
    );
    describe_gauge!(
        "db_pool_connections",
        Unit::Count,
        "Connections of a database pool, by state (idle, in_use)."
    );
    describe_gauge!(
        "db_pool_max_connections",
        Unit::Count,
        "The most connections a database pool may open."
    );
}

pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(metrics_handler))
}

async fn metrics_handler() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        render(),
    )
}

pub(crate) fn record_request(
    service: &'static str,
    method: &str,
    route: &str,
    status: u16,
    elapsed: Duration,
) {
    let labels = [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..3]).record(elapsed);
}
