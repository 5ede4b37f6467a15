//! Writing events: inside the caller's transaction, never on their own (REL-08).

use sqlx::PgConnection;

use crate::Error;
use crate::envelope::Envelope;

/// An arbitrary constant naming "the outbox of this schema": writers hold it until commit.
const WRITE_LOCK: i64 = 7_368_125_002;

/// Appends `envelope` to the outbox for `stream`, in the caller's transaction: the event exists
/// if and only if the state change it describes commits.
///
/// The first append in a transaction takes a transaction-scoped advisory lock, so outbox
/// writers commit one after another and `position` order is commit order — the relay can then
/// publish strictly in order without ever passing a row that is not yet visible. Producers keep
/// their transactions short (and batch several commands into one, as the matching task does),
/// so this serialization costs little.
pub async fn append(
    conn: &mut PgConnection,
    stream: &str,
    envelope: &Envelope,
) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO outbox (event_id, stream, event_type, envelope) VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.id)
    .bind(stream)
    .bind(&envelope.event_type)
    .bind(serde_json::to_string(envelope)?)
    .execute(&mut *conn)
    .await?;
    // Wakes the relay at once instead of at its next poll; delivered only on commit.
    sqlx::query("SELECT pg_notify(current_schema() || '_outbox', '')")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
