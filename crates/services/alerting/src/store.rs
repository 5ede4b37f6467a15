//! All of alerting's SQL.

use secrecy::{ExposeSecret, SecretString};
use secrets::MasterKeys;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::alerts::{AlertStatus, AlertView, DeliveryView};
use crate::channels::{Channel, Kind};
use crate::error::{Error, Result};
use crate::rules::Rule;
use crate::silences::{Matcher, Silence};

// ---- channels --------------------------------------------------------------------------

/// The encryption contexts of a channel's two sealed columns: a value copied to another row
/// or column does not open.
fn contexts(id: Uuid) -> (String, String) {
    (
        format!("alerting.channels.target:{id}"),
        format!("alerting.channels.secret:{id}"),
    )
}

fn seal(keys: &MasterKeys, value: &str, context: &str) -> Result<String> {
    keys.seal(value, context)
        .map_err(|e| Error::Internal(format!("sealing a channel: {e}")))
}

/// A stored column's value: opened when sealed, as it is when written before encryption
/// (re-sealed by [`reseal_channels`]).
fn open(keys: &MasterKeys, stored: String, context: &str) -> Result<SecretString> {
    if !stored.starts_with("bse1.") {
        return Ok(SecretString::from(stored));
    }
    keys.open(&stored, context)
        .map_err(|e| Error::Internal(format!("{context} cannot be opened: {e}")))
}

pub async fn insert_channel(
    pool: &PgPool,
    keys: &MasterKeys,
    channel: &Channel,
    actor: Uuid,
) -> Result<()> {
    let (target_context, secret_context) = contexts(channel.id);
    let target = seal(keys, channel.target.expose_secret(), &target_context)?;
    let secret = channel
        .secret
        .as_ref()
        .map(|s| seal(keys, s.expose_secret(), &secret_context))
        .transpose()?;
    sqlx::query(
        "INSERT INTO channels (id, name, kind, target, secret, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(channel.id)
    .bind(&channel.name)
    .bind(channel.kind.as_str())
    .bind(target)
    .bind(secret)
    .bind(actor)
    .bind(channel.created_at)
    .execute(pool)
    .await
    .map_err(|e| Error::conflict_on(e, "channels_name_key", "channel_exists"))?;
    Ok(())
}

type ChannelRow = (Uuid, String, String, String, Option<String>, OffsetDateTime);

fn channel(keys: &MasterKeys, row: ChannelRow) -> Result<Channel> {
    let (id, name, kind, target, secret, created_at) = row;
    let (target_context, secret_context) = contexts(id);
    Ok(Channel {
        id,
        kind: Kind::parse(&kind).ok_or_else(|| Error::Internal(format!("channel kind {kind}")))?,
        name,
        target: open(keys, target, &target_context)?,
        secret: secret.map(|s| open(keys, s, &secret_context)).transpose()?,
        created_at,
    })
}

/// Re-seals every channel whose columns are plaintext from before encryption or sealed under
/// an older master key: run at start and by `bourse admin reencrypt`. Returns how many.
pub async fn reseal_channels(pool: &PgPool, keys: &MasterKeys) -> Result<u64> {
    let rows: Vec<ChannelRow> =
        sqlx::query_as("SELECT id, name, kind, target, secret, created_at FROM channels")
            .fetch_all(pool)
            .await?;
    let mut resealed = 0;
    for (id, name, kind, target, secret, created_at) in rows {
        let stale =
            keys.needs_rewrap(&target) || secret.as_deref().is_some_and(|s| keys.needs_rewrap(s));
        if !stale {
            continue;
        }
        let channel = channel(keys, (id, name, kind, target, secret, created_at))?;
        let (target_context, secret_context) = contexts(id);
        sqlx::query("UPDATE channels SET target = $2, secret = $3 WHERE id = $1")
            .bind(id)
            .bind(seal(keys, channel.target.expose_secret(), &target_context)?)
            .bind(
                channel
                    .secret
                    .as_ref()
                    .map(|s| seal(keys, s.expose_secret(), &secret_context))
                    .transpose()?,
            )
            .execute(pool)
            .await?;
        resealed += 1;
    }
    Ok(resealed)
}

pub async fn channels(pool: &PgPool, keys: &MasterKeys) -> Result<Vec<Channel>> {
    let rows: Vec<ChannelRow> = sqlx::query_as(
        "SELECT id, name, kind, target, secret, created_at FROM channels ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|row| channel(keys, row)).collect()
}

/// The names among `names` that no channel has.
pub async fn unknown_channels(pool: &PgPool, names: &[String]) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT n FROM unnest($1::text[]) AS n WHERE NOT EXISTS (SELECT 1 FROM channels WHERE name = n)",
    )
    .bind(names)
    .fetch_all(pool)
    .await?)
}

// ---- rules -----------------------------------------------------------------------------

pub async fn insert_rule(pool: &PgPool, rule: &Rule, actor: Uuid) -> Result<()> {
    sqlx::query(
        "INSERT INTO rules (id, event_type, severity, channels, suppress_seconds,
                            escalate_after_seconds, escalate_to, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(rule.id)
    .bind(&rule.event_type)
    .bind(&rule.severity)
    .bind(&rule.channels)
    .bind(rule.suppress_seconds)
    .bind(rule.escalate_after_seconds)
    .bind(&rule.escalate_to)
    .bind(actor)
    .bind(rule.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

const RULE_COLUMNS: &str = "id, event_type, severity, channels, suppress_seconds, \
                            escalate_after_seconds, escalate_to, created_at";

/// Every rule, oldest first (the order [`crate::rules::route`] breaks ties by).
pub async fn rules(conn: &mut PgConnection) -> Result<Vec<Rule>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM rules ORDER BY created_at, id"
    )))
    .fetch_all(conn)
    .await?)
}

pub async fn delete_rule(pool: &PgPool, id: Uuid) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM rules WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

// ---- alerts ----------------------------------------------------------------------------

pub struct NewAlert<'a> {
    pub fingerprint: &'a str,
    pub event_type: &'a str,
    pub scope: &'a str,
    pub severity: &'a str,
    pub summary: &'a str,
    pub rule_id: Option<Uuid>,
    /// The event's payload, stored as the JSON it came as.
    pub details: &'a serde_json::value::RawValue,
}

/// What raising did: opened a new alert, or counted a repeat of an open one.
pub struct Raised {
    pub id: Uuid,
    pub opened: bool,
    /// A repeat of a firing alert whose last notification is older than the window.
    pub reminder_due: bool,
}

/// Opens the alert, or counts the repeat of the open one with its fingerprint (ALR-04). The
/// partial unique index makes this one atomic step even when replicas race. `xmax = 0` holds
/// for a row this statement inserted and not for one it updated: PostgreSQL's way of telling
/// which branch of `ON CONFLICT` ran.
pub async fn raise(
    tx: &mut PgConnection,
    alert: &NewAlert<'_>,
    window_secs: i64,
) -> Result<Raised> {
    let (id, opened, reminder_due): (Uuid, bool, bool) = sqlx::query_as(
        "INSERT INTO alerts (id, fingerprint, event_type, scope, severity, summary, rule_id,
                             details, first_seen, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())
         ON CONFLICT (fingerprint) WHERE status <> 'resolved' DO UPDATE
            SET count = alerts.count + 1, last_seen = now(),
                summary = EXCLUDED.summary, details = EXCLUDED.details
         RETURNING id, (xmax = 0),
                   status = 'firing'
                   AND (last_notified_at IS NULL
                        OR last_notified_at <= now() - make_interval(secs => $9))",
    )
    .bind(Uuid::now_v7())
    .bind(alert.fingerprint)
    .bind(alert.event_type)
    .bind(alert.scope)
    .bind(alert.severity)
    .bind(alert.summary)
    .bind(alert.rule_id)
    .bind(alert.details)
    .bind(window_secs as f64)
    .fetch_one(tx)
    .await?;
    Ok(Raised {
        id,
        opened,
        reminder_due: !opened && reminder_due,
    })
}

/// Notified now (`silenced_by` none), or muted by a silence.
pub async fn mark_notified(
    tx: &mut PgConnection,
    id: Uuid,
    silenced_by: Option<Uuid>,
) -> Result<()> {
    sqlx::query(
        "UPDATE alerts SET silenced_by = $2,
                last_notified_at = CASE WHEN $2::uuid IS NULL THEN now() ELSE last_notified_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(silenced_by)
    .execute(tx)
    .await?;
    Ok(())
}

/// A silence's id and its matcher's event type, severity and scope.
type MatcherRow = (Uuid, Option<String>, Option<String>, Option<String>);

pub async fn active_silences(tx: &mut PgConnection) -> Result<Vec<(Uuid, Matcher)>> {
    let rows: Vec<MatcherRow> = sqlx::query_as(
        "SELECT id, event_type, severity, scope FROM silences
         WHERE starts_at <= now() AND ends_at > now() ORDER BY ends_at DESC",
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, event_type, severity, scope)| {
            (
                id,
                Matcher {
                    event_type,
                    severity,
                    scope,
                },
            )
        })
        .collect())
}

/// Queues one delivery per named channel that exists; returns how many were queued.
pub async fn enqueue(
    tx: &mut PgConnection,
    alert: Uuid,
    channels: &[String],
    action: &str,
) -> Result<u64> {
    let ids: Vec<Uuid> = channels.iter().map(|_| Uuid::now_v7()).collect();
    Ok(sqlx::query(
        "INSERT INTO deliveries (id, alert_id, channel_id, action)
         SELECT wanted.id, $2, c.id, $4
         FROM unnest($1::uuid[], $3::text[]) AS wanted (id, name)
         JOIN channels c ON c.name = wanted.name",
    )
    .bind(&ids)
    .bind(alert)
    .bind(channels)
    .bind(action)
    .execute(tx)
    .await?
    .rows_affected())
}

/// The open alert with `fingerprint`, resolved: (id, its rule, whether it was notified).
pub async fn resolve_open(
    tx: &mut PgConnection,
    fingerprint: &str,
) -> Result<Option<(Uuid, Option<Uuid>, bool)>> {
    Ok(sqlx::query_as(
        "UPDATE alerts SET status = 'resolved', resolved_at = now()
         WHERE fingerprint = $1 AND status <> 'resolved'
         RETURNING id, rule_id, last_notified_at IS NOT NULL AND silenced_by IS NULL",
    )
    .bind(fingerprint)
    .fetch_optional(tx)
    .await?)
}

/// An operator's transition of alert `id` from one of `from` to `to` (`acknowledged` or
/// `resolved`): the alert's rule and whether it was notified, or `None` when the alert is
/// not in one of `from`.
pub async fn transition(
    tx: &mut PgConnection,
    id: Uuid,
    from: &[AlertStatus],
    to: AlertStatus,
    actor: Uuid,
) -> Result<Option<(Option<Uuid>, bool)>> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    Ok(sqlx::query_as(
        "UPDATE alerts SET status = $3,
                acknowledged_at = CASE WHEN $3 = 'acknowledged' THEN now() ELSE acknowledged_at END,
                acknowledged_by = CASE WHEN $3 = 'acknowledged' THEN $4 ELSE acknowledged_by END,
                resolved_at = CASE WHEN $3 = 'resolved' THEN now() ELSE resolved_at END,
                resolved_by = CASE WHEN $3 = 'resolved' THEN $4 ELSE resolved_by END
         WHERE id = $1 AND status = ANY($2)
         RETURNING rule_id, last_notified_at IS NOT NULL AND silenced_by IS NULL",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(actor)
    .fetch_optional(tx)
    .await?)
}

pub async fn rule(tx: &mut PgConnection, id: Uuid) -> Result<Option<Rule>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM rules WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(tx)
    .await?)
}

const ALERT_COLUMNS: &str = "id, fingerprint, event_type, scope, severity, summary, status, \
    count, details, first_seen, last_seen, acknowledged_at, resolved_at, escalated_at, \
    silenced_by IS NOT NULL AS silenced";

pub async fn alerts(
    pool: &PgPool,
    status: Option<AlertStatus>,
    limit: i64,
) -> Result<Vec<AlertView>> {
    // The status only when given, so each plan reads the newest alerts down an index and stops
    // at the limit; `$1 IS NULL OR status = $1` made one plan for both that sorted every alert
    // ever raised (tests/query_plans.rs in `loadgen`).
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {ALERT_COLUMNS} FROM alerts"));
    if let Some(status) = status {
        query.push(" WHERE status = ").push_bind(status.as_str());
    }
    query
        .push(" ORDER BY last_seen DESC, id DESC LIMIT ")
        .push_bind(limit);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

pub async fn alert(conn: &mut PgConnection, id: Uuid) -> Result<Option<AlertView>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn deliveries_of(pool: &PgPool, alert: Uuid) -> Result<Vec<DeliveryView>> {
    Ok(sqlx::query_as(
        "SELECT d.id, c.name AS channel, d.action, d.status, d.attempts, d.last_error,
                d.created_at, d.delivered_at
         FROM deliveries d JOIN channels c ON c.id = d.channel_id
         WHERE d.alert_id = $1 ORDER BY d.created_at, d.id",
    )
    .bind(alert)
    .fetch_all(pool)
    .await?)
}

/// Firing, unsilenced alerts whose rule escalates and whose time has come, marked escalated
/// in the same statement (so two replicas never escalate one alert twice): (alert, channels).
pub async fn take_due_escalations(tx: &mut PgConnection) -> Result<Vec<(Uuid, Vec<String>)>> {
    Ok(sqlx::query_as(
        "UPDATE alerts a SET escalated_at = now()
         FROM rules r
         WHERE a.rule_id = r.id AND a.status = 'firing' AND a.escalated_at IS NULL
           AND a.silenced_by IS NULL AND r.escalate_after_seconds IS NOT NULL
           AND a.first_seen <= now() - make_interval(secs => r.escalate_after_seconds)
         RETURNING a.id, r.escalate_to",
    )
    .fetch_all(tx)
    .await?)
}

// ---- silences --------------------------------------------------------------------------

pub async fn insert_silence(pool: &PgPool, silence: &Silence, actor: Uuid) -> Result<()> {
    sqlx::query(
        "INSERT INTO silences (id, event_type, severity, scope, reason, starts_at, ends_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(silence.id)
    .bind(&silence.matcher.event_type)
    .bind(&silence.matcher.severity)
    .bind(&silence.matcher.scope)
    .bind(&silence.reason)
    .bind(silence.starts_at)
    .bind(silence.ends_at)
    .bind(actor)
    .execute(pool)
    .await?;
    Ok(())
}

type SilenceRow = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    OffsetDateTime,
    OffsetDateTime,
);

pub async fn current_silences(pool: &PgPool) -> Result<Vec<Silence>> {
    let rows: Vec<SilenceRow> = sqlx::query_as(
        "SELECT id, event_type, severity, scope, reason, starts_at, ends_at FROM silences
         WHERE ends_at > now() ORDER BY ends_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_type, severity, scope, reason, starts_at, ends_at)| Silence {
                id,
                matcher: Matcher {
                    event_type,
                    severity,
                    scope,
                },
                starts_at,
                ends_at,
                reason,
            },
        )
        .collect())
}

/// Ends a silence now; false when there was no such active silence.
pub async fn expire_silence(pool: &PgPool, id: Uuid) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE silences SET ends_at = greatest(now(), starts_at + interval '1 microsecond')
         WHERE id = $1 AND ends_at > now()",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

// ---- deliveries ------------------------------------------------------------------------

/// A claimed delivery with what the notifier needs to send it.
pub struct Due {
    pub id: Uuid,
    pub action: String,
    pub attempts: i32,
    pub channel: Channel,
    pub alert: AlertView,
}

/// Leases up to `limit` due deliveries for `lease_secs` and counts the attempt. `SKIP LOCKED`
/// lets replicas share the queue; a lease that runs out (the sender died) makes the row due
/// again.
pub async fn claim_due(
    pool: &PgPool,
    keys: &MasterKeys,
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<Due>> {
    let mut tx = pool.begin().await?;
    let claimed: Vec<(Uuid, Uuid, Uuid, String, i32)> = sqlx::query_as(
        "UPDATE deliveries d
            SET leased_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
         WHERE d.id IN (SELECT id FROM deliveries
                        WHERE status = 'pending' AND next_attempt_at <= now()
                          AND (leased_until IS NULL OR leased_until < now())
                        ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING d.id, d.alert_id, d.channel_id, d.action, d.attempts",
    )
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(&mut *tx)
    .await?;
    let mut due = Vec::with_capacity(claimed.len());
    for (id, alert_id, channel_id, action, attempts) in claimed {
        let row: ChannelRow = sqlx::query_as(
            "SELECT id, name, kind, target, secret, created_at FROM channels WHERE id = $1",
        )
        .bind(channel_id)
        .fetch_one(&mut *tx)
        .await?;
        let alert = alert(&mut tx, alert_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("delivery {id} without its alert")))?;
        // A channel this replica cannot open (sealed under a master key it does not have yet,
        // mid-rotation) holds back no other delivery: its lease runs out and a replica that
        // has the key sends it.
        let channel = match channel(keys, row) {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(delivery_id = %id, error = %err, "a delivery's channel cannot be opened here");
                continue;
            }
        };
        due.push(Due {
            id,
            action,
            attempts,
            channel,
            alert,
        });
    }
    tx.commit().await?;
    Ok(due)
}

/// Records one attempt: delivered, or failed and due again at `retry_in` (none: given up).
pub async fn record_attempt(
    pool: &PgPool,
    due: &Due,
    outcome: std::result::Result<String, String>,
    retry_in: Option<std::time::Duration>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let (ok, detail) = match &outcome {
        Ok(detail) => (true, detail.clone()),
        Err(detail) => (false, detail.clone()),
    };
    if ok {
        sqlx::query(
            "UPDATE deliveries SET status = 'delivered', delivered_at = now(), leased_until = NULL,
                    last_error = NULL WHERE id = $1",
        )
        .bind(due.id)
        .execute(&mut *tx)
        .await?;
    } else {
        let retry_secs = retry_in.map(|d| d.as_secs_f64());
        sqlx::query(
            "UPDATE deliveries SET leased_until = NULL, last_error = $2,
                    status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                    next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
             WHERE id = $1",
        )
        .bind(due.id)
        .bind(&detail)
        .bind(retry_secs)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, ok, detail) VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT delivery_attempts_pkey DO NOTHING",
    )
    .bind(due.id)
    .bind(due.attempts)
    .bind(ok)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// When the next pending delivery falls due, if any is pending.
pub async fn next_due(pool: &PgPool) -> Result<Option<OffsetDateTime>> {
    Ok(sqlx::query_scalar(
        "SELECT min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at)))
         FROM deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?)
}

/// Whether an unresolved alert with this fingerprint exists (the health watch, after a
/// restart, learns what it had raised).
pub async fn is_open(pool: &PgPool, fingerprint: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM alerts WHERE fingerprint = $1 AND status <> 'resolved')",
    )
    .bind(fingerprint)
    .fetch_one(pool)
    .await?)
}
