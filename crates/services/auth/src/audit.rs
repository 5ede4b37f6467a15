//! The hash-chained audit log (SEC-16).
//!
//! `hash = SHA-256(prev_hash ‖ JSON(seq, occurred_at, event_type, actor, subject, ip, details))`
//! with `prev_hash` of the first row all zeros. Rows are appended inside the caller's
//! transaction, so an audited action and its audit row commit together or not at all.

use std::net::IpAddr;

use aws_lc_rs::digest::{Context, SHA256};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{self, AuditRow};

pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// An event to record.
#[derive(Debug)]
pub struct AuditEvent {
    pub event_type: &'static str,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub source_ip: Option<IpAddr>,
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(event_type: &'static str) -> Self {
        Self {
            event_type,
            actor_id: None,
            subject_id: None,
            source_ip: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    pub fn actor(mut self, id: Uuid) -> Self {
        self.actor_id = Some(id);
        self
    }

    pub fn subject(mut self, id: Uuid) -> Self {
        self.subject_id = Some(id);
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The fields covered by a row's hash, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: i64,
    occurred_at_micros: i128,
    event_type: &'a str,
    actor_id: Option<Uuid>,
    subject_id: Option<Uuid>,
    source_ip: Option<&'a str>,
    details: &'a str,
}

fn row_hash(prev_hash: &[u8], row: &Hashed<'_>) -> Result<Vec<u8>> {
    let encoded = serde_json::to_vec(row).map_err(|e| Error::Internal(e.to_string()))?;
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev_hash);
    ctx.update(&encoded);
    Ok(ctx.finish().as_ref().to_vec())
}

/// Appends `event` to the chain within the caller's transaction. A transaction, by type: the
/// chain's lock is held to its commit, so two appends never read the same last link (a
/// connection outside one released the lock at once — found by schemathesis as two rows with
/// one `seq` when a failed login met another audited action).
pub async fn append(tx: &mut Transaction<'_, Postgres>, event: AuditEvent) -> Result<i64> {
    let conn: &mut PgConnection = tx;
    store::lock_audit_log(conn).await?;
    let (last_seq, prev_hash) = store::last_audit_link(conn)
        .await?
        .unwrap_or((0, GENESIS_HASH.to_vec()));
    let now = OffsetDateTime::now_utc();
    // PostgreSQL keeps microseconds; hash exactly what will be read back.
    let occurred_at = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let details = event.details.to_string();
    let source_ip = event.source_ip.map(|ip| ip.to_string());
    let seq = last_seq + 1;
    let hash = row_hash(
        &prev_hash,
        &Hashed {
            seq,
            occurred_at_micros: occurred_at.unix_timestamp_nanos() / 1000,
            event_type: event.event_type,
            actor_id: event.actor_id,
            subject_id: event.subject_id,
            source_ip: source_ip.as_deref(),
            details: &details,
        },
    )?;
    store::insert_audit_row(
        conn,
        &AuditRow {
            seq,
            occurred_at,
            event_type: event.event_type.to_owned(),
            actor_id: event.actor_id,
            subject_id: event.subject_id,
            source_ip,
            details,
            prev_hash,
            hash,
        },
    )
    .await?;
    Ok(seq)
}

/// The result of walking the chain.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub rows: u64,
    /// The first row whose link or content does not verify.
    pub broken_at: Option<i64>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.broken_at.is_none()
    }
}

/// Recomputes every link of the chain from the genesis row.
pub async fn verify_chain(pool: &PgPool) -> Result<ChainReport> {
    let rows = store::audit_rows(pool).await?;
    let mut expected_prev = GENESIS_HASH.to_vec();
    for (index, row) in rows.iter().enumerate() {
        let expected_seq = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        let recomputed = row_hash(
            &row.prev_hash,
            &Hashed {
                seq: row.seq,
                occurred_at_micros: row.occurred_at.unix_timestamp_nanos() / 1000,
                event_type: &row.event_type,
                actor_id: row.actor_id,
                subject_id: row.subject_id,
                source_ip: row.source_ip.as_deref(),
                details: &row.details,
            },
        )?;
        if row.seq != expected_seq || row.prev_hash != expected_prev || row.hash != recomputed {
            return Ok(ChainReport {
                rows: rows.len() as u64,
                broken_at: Some(row.seq),
            });
        }
        expected_prev = row.hash.clone();
    }
    Ok(ChainReport {
        rows: rows.len() as u64,
        broken_at: None,
    })
}
