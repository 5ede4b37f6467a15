//! Shedding by the gateway's own load (REL-06): at most `max_in_flight` forwarded requests at
//! once; a request that finds them all taken waits at most `queue_deadline` for one, and is
//! then answered 503 `overloaded` with `Retry-After` at once.
//!
//! Without it, an overloaded platform answers late rather than no: every request queues behind
//! the slow ones until its client or an upstream timeout gives up, so the answers that do come
//! are too late to be worth anything and the retries pile on. A quick, explicit refusal keeps
//! the admitted requests fast and tells clients when to come back. Health, metrics and the
//! WebSocket stream's upgrade are not forwarded requests and are never shed.

use std::sync::Arc;
use std::time::Duration;

use service_kit::http::Problem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What `BOURSE_GATEWAY_MAX_IN_FLIGHT` / `BOURSE_GATEWAY_QUEUE_DEADLINE_MS` configure.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionSettings {
    pub max_in_flight: usize,
    pub queue_deadline: Duration,
}

/// The permits of forwarded requests; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    settings: AdmissionSettings,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        // Born at zero: "nothing shed" on a dashboard, not "No data".
        metrics::counter!("gateway_requests_shed_total").increment(0);
        metrics::gauge!("gateway_requests_in_flight").set(0.0);
        Self {
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
        }
    }

    /// A permit to forward one request, held until its answer; or the 503 to give instead.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Problem> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // Full: a short wait absorbs a burst; beyond it, the queue would only add latency.
            Err(_) => tokio::time::timeout(
                self.settings.queue_deadline,
                self.permits.clone().acquire_owned(),
            )
            .await
            .map_err(|_| ())
            .and_then(|acquired| acquired.map_err(|_| ())),
        };
        metrics::gauge!("gateway_requests_in_flight")
            .set((self.settings.max_in_flight - self.permits.available_permits()) as f64);
        permit.map_err(|()| {
            metrics::counter!("gateway_requests_shed_total").increment(1);
            Problem::unavailable(
                "overloaded",
                "the platform is at capacity; retry shortly",
                1,
            )
        })
    }
}
