//! Shedding by load (REL-06): at most `max_in_flight` forwarded requests at once to each
//! upstream; a request that finds its upstream's permits all taken waits at most
//! `queue_deadline` for one, and is then answered 503 `overloaded` with `Retry-After` at once.
//!
//! The permits are per upstream — a bulkhead — because a request holds its permit for as long
//! as its upstream takes to answer. With one pool for every route, an upstream that stood still
//! (a paused process, a database that stopped answering it) filled the pool within a fraction of
//! a second, with requests that would wait out the upstream timeout, and every route was shed
//! while the other services stood idle: under the load generator, a 10 s stall of orders shed
//! every balance read, which settlement serves (docs/performance.md, "The other services killed
//! and stalled").
//!
//! Without it, an overloaded platform answers late rather than no: every request queues behind
//! the slow ones until its client or an upstream timeout gives up, so the answers that do come
//! are too late to be worth anything and the retries pile on. A quick, explicit refusal keeps
//! the admitted requests fast and tells clients when to come back. Health, metrics and the
//! WebSocket stream's upgrade are not forwarded requests and are never shed.
//!
//! Operators have a lane of their own ([`Lane::Admin`], `admin_max_in_flight` permits per
//! upstream): the moment the platform is overloaded is the moment a risk officer needs the kill
//! switch, and a flood of orders must not be able to shed it. The lane is only for routes under
//! `/v1/admin/`, which the gateway serves to its admin allow-list alone (checked before a
//! permit is taken), so the traffic it protects against cannot reach it either.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use service_kit::http::Problem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::route_table::{UPSTREAMS, Upstream};

/// What `BOURSE_GATEWAY_MAX_IN_FLIGHT`, `BOURSE_GATEWAY_ADMIN_MAX_IN_FLIGHT` and
/// `BOURSE_GATEWAY_QUEUE_DEADLINE_MS` configure.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionSettings {
    pub max_in_flight: usize,
    pub admin_max_in_flight: usize,
    pub queue_deadline: Duration,
}

/// Whose permits a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Everything forwarded that is not an admin route: traders, API keys, public reads.
    Traffic,
    /// Routes under `/v1/admin/`, from the admin allow-list.
    Admin,
}

impl Lane {
    fn label(self) -> &'static str {
        match self {
            Lane::Traffic => "traffic",
            Lane::Admin => "admin",
        }
    }
}

/// The permits of one lane.
struct Permits {
    semaphore: Arc<Semaphore>,
    size: usize,
}

/// The permits of forwarded requests, a pool per lane and upstream; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    pools: Arc<HashMap<(Lane, &'static str), Permits>>,
    queue_deadline: Duration,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        let mut pools = HashMap::new();
        for upstream in UPSTREAMS {
            for (lane, size) in [
                (Lane::Traffic, settings.max_in_flight),
                (Lane::Admin, settings.admin_max_in_flight),
            ] {
                // Born at zero: "nothing shed" on a dashboard, not "No data".
                metrics::counter!("gateway_requests_shed_total", "lane" => lane.label(),
                    "upstream" => upstream.name)
                .increment(0);
                metrics::gauge!("gateway_requests_in_flight", "lane" => lane.label(),
                    "upstream" => upstream.name)
                .set(0.0);
                let semaphore = Arc::new(Semaphore::new(size));
                pools.insert((lane, upstream.name), Permits { semaphore, size });
            }
        }
        Self {
            pools: Arc::new(pools),
            queue_deadline: settings.queue_deadline,
        }
    }

    /// A permit to forward one request in `lane` to `upstream`, held until its answer; or the
    /// 503 to give instead.
    pub async fn admit(
        &self,
        lane: Lane,
        upstream: Upstream,
    ) -> Result<OwnedSemaphorePermit, Problem> {
        let overloaded = || {
            metrics::counter!("gateway_requests_shed_total", "lane" => lane.label(),
                "upstream" => upstream.name)
            .increment(1);
            Problem::unavailable(
                "overloaded",
                "the platform is at capacity; retry shortly",
                1,
            )
        };
        // Every route's upstream is one of `UPSTREAMS` (a test of `route_table` says so); a
        // pool missing would be a bug, refused rather than admitted without a bound.
        let Some(permits) = self.pools.get(&(lane, upstream.name)) else {
            return Err(overloaded());
        };
        let permit = match permits.semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // Full: a short wait absorbs a burst; beyond it, the queue would only add latency.
            Err(_) => tokio::time::timeout(
                self.queue_deadline,
                permits.semaphore.clone().acquire_owned(),
            )
            .await
            .map_err(|_| ())
            .and_then(|acquired| acquired.map_err(|_| ())),
        };
        metrics::gauge!("gateway_requests_in_flight", "lane" => lane.label(),
            "upstream" => upstream.name)
        .set((permits.size - permits.semaphore.available_permits()) as f64);
        permit.map_err(|()| overloaded())
    }
}
