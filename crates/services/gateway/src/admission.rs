//! Shedding by the gateway's own load (REL-06): at most `max_in_flight` forwarded requests at
//! once; a request that finds them all taken waits at most `queue_deadline` for one, and is
//! then answered 503 `overloaded` with `Retry-After` at once.
//!
//! Without it, an overloaded platform answers late rather than no: every request queues behind
//! the slow ones until its client or an upstream timeout gives up, so the answers that do come
//! are too late to be worth anything and the retries pile on. A quick, explicit refusal keeps
//! the admitted requests fast and tells clients when to come back. Health, metrics and the
//! WebSocket stream's upgrade are not forwarded requests and are never shed.
//!
//! Operators have a lane of their own ([`Lane::Admin`], `admin_max_in_flight` permits): the
//! moment the platform is overloaded is the moment a risk officer needs the kill switch, and a
//! flood of orders must not be able to shed it. The lane is only for routes under
//! `/v1/admin/`, which the gateway serves to its admin allow-list alone (checked before a
//! permit is taken), so the traffic it protects against cannot reach it either.

use std::sync::Arc;
use std::time::Duration;

use service_kit::http::Problem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What `BOURSE_GATEWAY_MAX_IN_FLIGHT`, `BOURSE_GATEWAY_ADMIN_MAX_IN_FLIGHT` and
/// `BOURSE_GATEWAY_QUEUE_DEADLINE_MS` configure.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionSettings {
    pub max_in_flight: usize,
    pub admin_max_in_flight: usize,
    pub queue_deadline: Duration,
}

/// Whose permits a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The permits of forwarded requests, a pool per lane; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    traffic: Arc<Permits>,
    admin: Arc<Permits>,
    queue_deadline: Duration,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        for lane in [Lane::Traffic, Lane::Admin] {
            // Born at zero: "nothing shed" on a dashboard, not "No data".
            metrics::counter!("gateway_requests_shed_total", "lane" => lane.label()).increment(0);
            metrics::gauge!("gateway_requests_in_flight", "lane" => lane.label()).set(0.0);
        }
        let permits = |size: usize| {
            Arc::new(Permits {
                semaphore: Arc::new(Semaphore::new(size)),
                size,
            })
        };
        Self {
            traffic: permits(settings.max_in_flight),
            admin: permits(settings.admin_max_in_flight),
            queue_deadline: settings.queue_deadline,
        }
    }

    /// A permit to forward one request in `lane`, held until its answer; or the 503 to give
    /// instead.
    pub async fn admit(&self, lane: Lane) -> Result<OwnedSemaphorePermit, Problem> {
        let permits = match lane {
            Lane::Traffic => &self.traffic,
            Lane::Admin => &self.admin,
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
        metrics::gauge!("gateway_requests_in_flight", "lane" => lane.label())
            .set((permits.size - permits.semaphore.available_permits()) as f64);
        permit.map_err(|()| {
            metrics::counter!("gateway_requests_shed_total", "lane" => lane.label()).increment(1);
            Problem::unavailable(
                "overloaded",
                "the platform is at capacity; retry shortly",
                1,
            )
        })
    }
}
