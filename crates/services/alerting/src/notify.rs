//! The notifier (ALR-02, ALR-03): sends what the delivery log holds. It leases due rows,
//! sends each to its channel — webhook, Slack, PagerDuty Events v2, or email over SMTP — and
//! records the outcome; a failure is retried with exponential backoff and full jitter until
//! the attempts run out, so a receiver that is down for a while still gets the alert when it
//! comes back. Delivery is at least once: each request carries the delivery id as
//! `Idempotency-Key` for receivers that deduplicate.
//!
//! Error texts never carry a target (reqwest's errors quote the URL, which for Slack is the
//! credential): they are stripped before they are logged or stored.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use secrets::MasterKeys;
use serde_json::json;
use service_kit::Shutdown;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::channels::Kind;
use crate::config::{DeliverySettings, SmtpSettings};
use crate::error::{Error, Result};
use crate::store::{self, Due};

/// Deliveries leased per round.
const BATCH: i64 = 32;

#[derive(Clone)]
pub struct Notifier {
    pool: PgPool,
    http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    settings: DeliverySettings,
    master_keys: Arc<MasterKeys>,
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        pool: PgPool,
        settings: DeliverySettings,
        smtp: &SmtpSettings,
        master_keys: Arc<MasterKeys>,
        wake: Arc<Notify>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(e.without_url().to_string()))?;
        let smtp = match &smtp.url {
            Some(url) => Some(smtp_transport(url, smtp, settings.timeout)?),
            None => None,
        };
        Ok(Self {
            pool,
            http,
            smtp,
            settings,
            master_keys,
            wake,
        })
    }

    pub fn email_enabled(&self) -> bool {
        self.smtp.is_some()
    }

    /// Sends until `shutdown`: a round whenever woken (an alert committed), when the next
    /// retry falls due, or every `poll` at the latest.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            let sent = match self.round().await {
                Ok(sent) => sent,
                Err(err) => {
                    tracing::warn!(error = %err, "notifier round failed");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            let wait = self.until_next_due().await;
            tokio::select! {
                () = shutdown.triggered() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn until_next_due(&self) -> Duration {
        match store::next_due(&self.pool).await {
            Ok(Some(at)) => {
                let left = at - time::OffsetDateTime::now_utc();
                Duration::try_from(left)
                    .unwrap_or(Duration::ZERO)
                    .min(self.settings.poll)
            }
            _ => self.settings.poll,
        }
    }

    /// Leases a batch of due deliveries and sends them concurrently; how many it sent.
    pub async fn round(&self) -> Result<usize> {
        let lease = self.settings.timeout.as_secs_f64() * 2.0 + 1.0;
        let due = store::claim_due(&self.pool, &self.master_keys, BATCH, lease).await?;
        let count = due.len();
        futures_util::future::join_all(due.iter().map(|d| self.deliver(d))).await;
        Ok(count)
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %due.id, alert_id = %due.alert.id,
        channel = %due.channel.name, attempt = due.attempts))]
    async fn deliver(&self, due: &Due) {
        let outcome = match tokio::time::timeout(self.settings.timeout, self.send(due)).await {
            Ok(outcome) => outcome,
            Err(_) => Err("timed out".to_owned()),
        };
        let attempts = u32::try_from(due.attempts).unwrap_or(u32::MAX);
        let retry_in = match &outcome {
            Err(_) if attempts < self.settings.max_attempts => {
                Some(self.settings.backoff.delay(attempts.saturating_sub(1)))
            }
            _ => None,
        };
        let kind = due.channel.kind.as_str();
        match &outcome {
            Ok(_) => {
                tracing::info!("alert delivered");
                if due.action == "firing" {
                    // From the occurrence alerting recorded to the receiver's 2xx: what an
                    // operator waits for a page (MiFID II RTS 6: seconds).
                    let waited = time::OffsetDateTime::now_utc() - due.alert.last_seen;
                    metrics::histogram!("alerting_notification_seconds", "kind" => kind)
                        .record(waited.as_seconds_f64().max(0.0));
                }
                metrics::counter!("alerting_deliveries_total", "kind" => kind, "outcome" => "delivered")
                    .increment(1);
            }
            Err(reason) => {
                let outcome = if retry_in.is_some() {
                    "retry"
                } else {
                    "failed"
                };
                tracing::warn!(%reason, outcome, "alert delivery failed");
                metrics::counter!("alerting_deliveries_total", "kind" => kind, "outcome" => outcome)
                    .increment(1);
            }
        }
        if let Err(err) = store::record_attempt(&self.pool, due, outcome, retry_in).await {
            // The lease runs out and the delivery is sent again: at least once.
            tracing::warn!(error = %err, "could not record a delivery attempt");
        }
    }

    async fn send(&self, due: &Due) -> std::result::Result<String, String> {
        let alert = &due.alert;
        let target = due.channel.target.expose_secret();
        match due.channel.kind {
            Kind::Webhook => {
                let body = json!({ "action": due.action, "alert": alert }).to_string();
                let mut request = self
                    .http
                    .post(target)
                    .header("content-type", "application/json")
                    .header("idempotency-key", due.id.to_string());
                if let Some(secret) = &due.channel.secret {
                    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
                    request = request
                        .header("x-bourse-timestamp", timestamp.to_string())
                        .header("x-bourse-signature", signature(secret, timestamp, &body));
                }
                answer(request.body(body).send().await).await
            }
            Kind::Slack => {
                let text = format!(
                    "[{}] {}: {} (×{})",
                    alert.severity.to_uppercase(),
                    due.action,
                    alert.summary,
                    alert.count
                );
                answer(
                    self.http
                        .post(target)
                        .json(&json!({ "text": text }))
                        .send()
                        .await,
                )
                .await
            }
            Kind::Pagerduty => {
                let routing_key = due
                    .channel
                    .secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned())
                    .unwrap_or_default();
                let event_action = if due.action == "resolved" {
                    "resolve"
                } else {
                    "trigger"
                };
                let body = json!({
                    "routing_key": routing_key,
                    "event_action": event_action,
                    "dedup_key": alert.fingerprint,
                    "payload": {
                        "summary": alert.summary,
                        "source": "bourse",
                        "severity": alert.severity,
                        "timestamp": alert.first_seen.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                        "component": alert.scope,
                        "group": alert.event_type,
                        "custom_details": alert.details,
                    },
                });
                answer(self.http.post(target).json(&body).send().await).await
            }
            Kind::Email => self.email(due, target).await,
        }
    }

    async fn email(&self, due: &Due, to: &str) -> std::result::Result<String, String> {
        let (transport, from) = self
            .smtp
            .as_ref()
            .ok_or("email is not configured (BOURSE_ALERTING_SMTP_URL)")?;
        let to: Mailbox = to.parse().map_err(|_| "not an email address".to_owned())?;
        let alert = &due.alert;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(format!(
                "[{}] {} {}",
                alert.severity.to_uppercase(),
                due.action,
                alert.summary
            ))
            .body(format!(
                "{}\n\nstatus: {}\nevent: {}\nscope: {}\ncount: {}\nfirst seen: {}\nalert id: {}\n",
                alert.summary,
                alert.status.as_str(),
                alert.event_type,
                alert.scope,
                alert.count,
                alert.first_seen,
                alert.id
            ))
            .map_err(|e| format!("building the message: {e}"))?;
        let response = transport
            .send(message)
            .await
            .map_err(|e| format!("smtp: {e}"))?;
        Ok(format!("smtp {}", response.code()))
    }
}

fn smtp_transport(
    url: &str,
    settings: &SmtpSettings,
    timeout: Duration,
) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| Error::Internal(format!("BOURSE_ALERTING_SMTP_URL: {e}")))?
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| Error::Internal(format!("BOURSE_ALERTING_SMTP_FROM: {e}")))?;
    Ok((builder.build(), from))
}

/// A 2xx is delivered; anything else is a failure to retry, described without the URL.
async fn answer(
    sent: std::result::Result<reqwest::Response, reqwest::Error>,
) -> std::result::Result<String, String> {
    match sent {
        Ok(response) if response.status().is_success() => {
            Ok(format!("receiver answered {}", response.status().as_u16()))
        }
        Ok(response) => Err(format!("receiver answered {}", response.status().as_u16())),
        Err(err) => Err(err.without_url().to_string()),
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, `"<timestamp>.<body>"`): the receiver recomputes it,
/// and the timestamp in the signed text stops an old delivery being replayed as new.
pub fn signature(secret: &SecretString, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let secret = SecretString::from("k".to_owned());
        let one = signature(&secret, 1, "{}");
        assert!(one.starts_with("sha256=") && one.len() == 7 + 64);
        assert_ne!(one, signature(&secret, 2, "{}"));
        assert_ne!(one, signature(&secret, 1, "{ }"));
        assert_ne!(one, signature(&SecretString::from("j".to_owned()), 1, "{}"));
    }
}
