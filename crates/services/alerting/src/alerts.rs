//! Alerts and their lifecycle (ALR-04..06): raised from events by [`Alerter`] — the consumer
//! of the risk, settlement and ops streams — deduplicated by fingerprint, muted by silences,
//! routed by rules to channels; acknowledged and resolved by operators or by the event that
//! ends them (`KillSwitchReleased`, `CircuitBreakerClosed`, `ServiceRecovered`).
//!
//! Every change to an alert and the deliveries it queues commit in one transaction (with the
//! event's inbox row, for the consumer): a crash never leaves an alert without its
//! notification, nor a notification for an alert that was rolled back.

use std::sync::Arc;
use std::time::Duration;

use events::{Envelope, Handler};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::signals::{self, Signal};
use crate::{rules, store};

/// Where an alert is: `firing` until an operator acknowledges it (it stops escalating), then
/// `resolved` — by an operator or by the event that ends it. Stored as text; the table's check
/// constraint allows these three and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 3] = [
        AlertStatus::Firing,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AlertView {
    pub id: Uuid,
    /// Event type and scope: one open alert per fingerprint.
    pub fingerprint: String,
    pub event_type: String,
    pub scope: String,
    pub severity: String,
    pub summary: String,
    pub status: AlertStatus,
    /// Occurrences while open.
    pub count: i32,
    /// The payload of the latest occurrence.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub acknowledged_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub escalated_at: Option<OffsetDateTime>,
    /// Whether a silence muted its latest notification.
    pub silenced: bool,
}

/// One notification of an alert to a channel: the delivery log (ALR-02).
#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    pub id: Uuid,
    pub channel: String,
    /// `firing`, `escalation` or `resolved`.
    pub action: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
}

/// An alert with its delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: AlertView,
    pub deliveries: Vec<DeliveryView>,
}

/// Raises the alert a signal stands for, in `tx`. Returns whether deliveries were queued.
pub async fn raise(
    tx: &mut PgConnection,
    signal: &Signal,
    event: &Envelope,
    default_suppress: Duration,
) -> Result<bool> {
    let Signal::Raise {
        event_type,
        scope,
        summary,
        default_severity,
    } = signal
    else {
        return Ok(false);
    };
    let rules = store::rules(tx).await?;
    let rule = rules::route(&rules, event_type);
    let severity = rule.map_or(*default_severity, |r| r.severity.as_str());
    let window = rule
        .and_then(|r| r.suppress_seconds)
        .map_or(default_suppress.as_secs(), |s| {
            u64::try_from(s).unwrap_or(0)
        });
    let fingerprint = signals::fingerprint(event_type, scope);
    let raised = store::raise(
        tx,
        &store::NewAlert {
            fingerprint: &fingerprint,
            event_type,
            scope,
            severity,
            summary,
            rule_id: rule.map(|r| r.id),
            details: &event.payload,
        },
        i64::try_from(window).unwrap_or(i64::MAX),
    )
    .await?;
    metrics::counter!("alerts_raised_total", "event_type" => event_type.clone(), "new" => raised.opened.to_string())
        .increment(1);
    if !(raised.opened || raised.reminder_due) {
        tracing::info!(alert_id = %raised.id, %fingerprint, "repeat of an open alert counted");
        return Ok(false);
    }
    let silences = store::active_silences(tx).await?;
    if let Some((silence, _)) = silences
        .iter()
        .find(|(_, matcher)| matcher.matches(event_type, severity, scope))
    {
        store::mark_notified(tx, raised.id, Some(*silence)).await?;
        metrics::counter!("alerts_silenced_total").increment(1);
        tracing::info!(alert_id = %raised.id, %fingerprint, silence = %silence, "alert silenced");
        return Ok(false);
    }
    let Some(rule) = rule else {
        tracing::warn!(alert_id = %raised.id, %fingerprint, "no rule routes this alert; recorded only");
        return Ok(false);
    };
    let queued = store::enqueue(tx, raised.id, &rule.channels, "firing").await?;
    store::mark_notified(tx, raised.id, None).await?;
    tracing::warn!(alert_id = %raised.id, %fingerprint, %severity, queued, "alert fired");
    Ok(queued > 0)
}

/// Resolves the open alert a resolving signal names, telling the channels it was sent to.
pub async fn resolve_by_signal(
    tx: &mut PgConnection,
    raised_by: &str,
    scope: &str,
) -> Result<bool> {
    let fingerprint = signals::fingerprint(raised_by, scope);
    let Some((id, rule, notified)) = store::resolve_open(tx, &fingerprint).await? else {
        return Ok(false);
    };
    tracing::info!(alert_id = %id, %fingerprint, "alert resolved by its source");
    announce_resolution(tx, id, rule, notified).await
}

async fn announce_resolution(
    tx: &mut PgConnection,
    alert: Uuid,
    rule: Option<Uuid>,
    notified: bool,
) -> Result<bool> {
    let rule = match rule {
        Some(id) if notified => store::rule(tx, id).await?,
        _ => None,
    };
    let Some(rule) = rule else {
        return Ok(false);
    };
    Ok(store::enqueue(tx, alert, &rule.channels, "resolved").await? > 0)
}

/// An operator acknowledges a firing alert: it stops escalating and reminding. Acknowledging
/// an acknowledged alert changes nothing; a resolved one cannot be.
pub async fn acknowledge(pool: &PgPool, id: Uuid, actor: Uuid) -> Result<AlertView> {
    let mut tx = pool.begin().await?;
    let (from, to) = (&[AlertStatus::Firing], AlertStatus::Acknowledged);
    if store::transition(&mut tx, id, from, to, actor)
        .await?
        .is_none()
    {
        refuse_unless(&mut tx, id, to).await?;
    }
    let alert = store::alert(&mut tx, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(alert)
}

/// An operator resolves an alert; the channels it was sent to hear so. Resolving a resolved
/// alert changes nothing.
pub async fn resolve(pool: &PgPool, id: Uuid, actor: Uuid, wake: &Notify) -> Result<AlertView> {
    let mut tx = pool.begin().await?;
    let from = &[AlertStatus::Firing, AlertStatus::Acknowledged];
    let queued = match store::transition(&mut tx, id, from, AlertStatus::Resolved, actor).await? {
        Some((rule, notified)) => announce_resolution(&mut tx, id, rule, notified).await?,
        None => {
            refuse_unless(&mut tx, id, AlertStatus::Resolved).await?;
            false
        }
    };
    let alert = store::alert(&mut tx, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    if queued {
        wake.notify_one();
    }
    Ok(alert)
}

/// After a transition matched nothing: fine if the alert is already `wanted` (a retried
/// request), 404 if it does not exist, 409 otherwise.
async fn refuse_unless(tx: &mut PgConnection, id: Uuid, wanted: AlertStatus) -> Result<()> {
    match store::alert(tx, id).await? {
        None => Err(Error::NotFound),
        Some(alert) if alert.status == wanted => Ok(()),
        Some(alert) => Err(Error::Conflict {
            code: "alert_resolved",
            detail: format!("the alert is {}", alert.status.as_str()),
        }),
    }
}

/// The consumer of the risk, settlement and ops streams: each alerting event raises or
/// resolves an alert in the consumer's transaction; the notifier is woken once it commits.
pub struct Alerter {
    pub default_suppress: Duration,
    pub wake: Arc<Notify>,
}

impl Alerter {
    async fn apply(&self, tx: &mut PgConnection, event: &Envelope) -> Result<()> {
        match signals::read(event)? {
            Some(signal @ Signal::Raise { .. }) => {
                raise(tx, &signal, event, self.default_suppress).await?;
            }
            Some(Signal::Resolve { raised_by, scope }) => {
                resolve_by_signal(tx, raised_by, &scope).await?;
            }
            None => {}
        }
        Ok(())
    }
}

impl Handler for Alerter {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, std::result::Result<(), events::HandlerError>> {
        Box::pin(async move { Ok(self.apply(tx, event).await?) })
    }

    fn wants(&self, event_type: &str) -> bool {
        signals::wants(event_type)
    }

    /// Deliveries may have been queued: the notifier looks now rather than at its next poll.
    fn committed(&self, _event: &Envelope) {
        self.wake.notify_one();
    }
}
