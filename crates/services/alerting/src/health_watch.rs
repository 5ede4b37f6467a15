//! The health watch (ALR-07): every service's `/health/ready`, polled. After `failures`
//! failed probes in a row a service is announced `ServiceUnhealthy`; its first good probe
//! after that announces `ServiceRecovered`. Both go through alerting's own outbox onto the
//! ops stream — the same road every other alert source takes — so the alert is raised and
//! resolved by the consumer, exactly once, and anyone else may listen.
//!
//! What a replica knows lives in memory; after a restart it asks the alert table whether it
//! had raised an unhealthy alert, so a recovery during the restart is still announced.

use std::collections::HashMap;
use std::time::Duration;

use contracts::events::{Event, ServiceHealth, ServiceRecovered, ServiceUnhealthy};
use service_kit::Shutdown;
use sqlx::PgPool;

use crate::config::WatchSettings;
use crate::error::Result;
use crate::{signals, store};

/// What the watch believes of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Health {
    failures: u32,
    announced_unhealthy: bool,
}

#[derive(Clone)]
pub struct Watch {
    pool: PgPool,
    client: reqwest::Client,
    settings: WatchSettings,
    state: HashMap<String, Health>,
}

impl Watch {
    /// `tls`: the watched services may serve mTLS; the watch calls them as any service does.
    pub fn new(
        pool: PgPool,
        settings: WatchSettings,
        tls: &service_kit::tls::TlsSettings,
    ) -> Result<Self> {
        let client = tls
            .service_client()
            .map_err(|e| crate::Error::Internal(e.to_string()))?
            .timeout(settings.interval.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| crate::Error::Internal(e.without_url().to_string()))?;
        Ok(Self {
            pool,
            client,
            settings,
            state: HashMap::new(),
        })
    }

    pub async fn run(mut self, shutdown: Shutdown) {
        if self.settings.targets.is_empty() {
            // Nothing to watch (`BOURSE_ALERTING_WATCH` unset, as when alerting runs on its
            // own): idle until shutdown. Returning would look like a crash to the supervisor,
            // which would restart the task every few seconds and count every restart.
            tracing::info!("no services to watch; the health watch is idle");
            shutdown.triggered().await;
            return;
        }
        for (name, _) in self.settings.targets.clone() {
            let fingerprint = signals::fingerprint("ServiceUnhealthy", &name);
            let announced_unhealthy = store::is_open(&self.pool, &fingerprint)
                .await
                .unwrap_or(false);
            self.state.insert(
                name,
                Health {
                    failures: 0,
                    announced_unhealthy,
                },
            );
        }
        let mut ticker = tokio::time::interval(self.settings.interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.probe_all().await,
                () = shutdown.triggered() => break,
            }
        }
    }

    async fn probe_all(&mut self) {
        let probes = self.settings.targets.iter().map(|(name, url)| {
            let client = self.client.clone();
            async move { (name.clone(), probe(&client, url).await) }
        });
        for (name, result) in futures_util::future::join_all(probes).await {
            let health = self.state.entry(name.clone()).or_default();
            let (next, announce) = step(
                *health,
                result.as_ref().err().cloned(),
                self.settings.failures,
            );
            if let Some((event_type, detail)) = announce
                && let Err(err) = self.announce(&name, event_type, &detail).await
            {
                // Not remembered as announced: the next probe tries again.
                tracing::warn!(service = %name, error = %err, "could not announce health");
                continue;
            }
            self.state.insert(name, next);
        }
    }

    async fn announce(&self, service: &str, event_type: &str, detail: &str) -> Result<()> {
        let health = ServiceHealth {
            service: service.to_owned(),
            detail: detail.to_owned(),
        };
        let event = if event_type == ServiceRecovered::TYPE {
            events::Envelope::of(crate::SERVICE, service, 0, &ServiceRecovered(health))?
        } else {
            events::Envelope::of(crate::SERVICE, service, 0, &ServiceUnhealthy(health))?
        };
        let mut tx = self.pool.begin().await?;
        events::outbox::append(&mut tx, events::consumer::OPS_STREAM, &event).await?;
        tx.commit().await?;
        tracing::warn!(%service, event_type, %detail, "service health changed");
        Ok(())
    }
}

async fn probe(client: &reqwest::Client, base_url: &str) -> std::result::Result<(), String> {
    match client.get(format!("{base_url}/health/ready")).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!(
            "/health/ready answered {}",
            response.status().as_u16()
        )),
        Err(err) => Err(err.without_url().to_string()),
    }
}

/// One probe's effect: the new state, and what to announce (event type, detail).
fn step(
    health: Health,
    failure: Option<String>,
    threshold: u32,
) -> (Health, Option<(&'static str, String)>) {
    match failure {
        None if health.announced_unhealthy => (
            Health::default(),
            Some(("ServiceRecovered", "ready again".to_owned())),
        ),
        None => (Health::default(), None),
        Some(detail) => {
            let failures = health.failures.saturating_add(1);
            let announce = failures >= threshold && !health.announced_unhealthy;
            (
                Health {
                    failures,
                    announced_unhealthy: health.announced_unhealthy || announce,
                },
                announce.then_some(("ServiceUnhealthy", detail)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_nothing_to_watch_the_watch_idles_until_shutdown_instead_of_ending() {
        // Never connected: with no targets the watch reads nothing.
        let pool = sqlx::PgPool::connect_lazy("postgres://127.0.0.1:1/unused").unwrap();
        let settings = WatchSettings {
            targets: Vec::new(),
            interval: Duration::from_secs(5),
            failures: 2,
        };
        let watch = Watch::new(pool, settings, &service_kit::tls::TlsSettings::default()).unwrap();
        let shutdown = Shutdown::new();
        let running = tokio::spawn(watch.run(shutdown.clone()));
        // One-threaded runtime: these yields let the task run as far as it can go.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !running.is_finished(),
            "an ended task is restarted by the supervisor, again and again"
        );

        shutdown.trigger();
        running.await.unwrap();
    }

    #[test]
    fn unhealthy_after_the_threshold_once_then_recovered_once() {
        let fail = || Some("503".to_owned());
        let (h, a) = step(Health::default(), fail(), 2);
        assert_eq!(a, None, "one failure is not an outage");
        let (h, a) = step(h, fail(), 2);
        assert_eq!(a.map(|a| a.0), Some("ServiceUnhealthy"));
        let (h, a) = step(h, fail(), 2);
        assert_eq!(a, None, "announced once");
        let (h, a) = step(h, None, 2);
        assert_eq!(a.map(|a| a.0), Some("ServiceRecovered"));
        let (_, a) = step(h, None, 2);
        assert_eq!(a, None);
    }

    #[test]
    fn a_blip_below_the_threshold_is_forgotten() {
        let (h, _) = step(Health::default(), Some("x".into()), 3);
        let (h, a) = step(h, None, 3);
        assert_eq!((h, a), (Health::default(), None));
    }
}
