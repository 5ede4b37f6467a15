//! Writing events: inside the caller's transaction, never on their own (REL-08).

use sqlx::PgConnection;

use crate::Error;
use crate::envelope::Envelope;

/// An arbitrary constant naming "outbox writers"; with the hash of the outbox's schema it
/// names "the outbox of this schema": writers hold it until commit, and services sharing a
/// database do not serialize on each other's outboxes. The table's own trigger takes it
/// (migration `20261202000002_outbox_write_lock.sql`); the constant is here for tests and
/// operators who look for it in `pg_locks`.
pub const WRITE_LOCK: i32 = 736_812_502;

/// Appends `envelope` to the outbox for `stream`, in the caller's transaction: the event exists
/// if and only if the state change it describes commits.
///
/// The first insert into the outbox in a transaction takes a transaction-scoped advisory lock
/// (the table's trigger does), so outbox writers commit one after another and `position`
/// order is commit order — the relay can then
/// publish strictly in order without ever passing a row that is not yet visible. Producers keep
/// their transactions short (and batch several commands into one, as the matching task does),
/// so this serialization costs little.
pub async fn append(
    conn: &mut PgConnection,
    stream: &str,
    envelope: &Envelope,
) -> Result<(), Error> {
    append_all(conn, stream, std::slice::from_ref(envelope)).await
}

/// Appends several events in one statement (the table's triggers take the writers' lock and
/// wake the relay): what a producer writing many events per transaction — a matching task's
/// batch — should use.
pub async fn append_all(
    conn: &mut PgConnection,
    stream: &str,
    envelopes: &[Envelope],
) -> Result<(), Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.id).collect();
    let types: Vec<&str> = envelopes.iter().map(|e| e.event_type.as_str()).collect();
    let bodies = envelopes
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    // WITH ORDINALITY keeps the given order, so positions follow the slice.
    sqlx::query(
        "INSERT INTO outbox (event_id, stream, event_type, envelope)
         SELECT id, $1, event_type, envelope
         FROM UNNEST($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS e(id, event_type, envelope, n)
         ORDER BY n",
    )
    .bind(stream)
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The position of the newest event of this schema's outbox that the caller's transaction
/// sees. Writers commit in position order (the writers' lock), so a snapshot holds every event
/// at or below it and none above. Read in the same `REPEATABLE READ` transaction as the state
/// it goes with, it lets a consumer load that state and then apply only the stream's events
/// above it ([`crate::Origin`]; ADR 0023). Retention never deletes the newest row, so this is
/// 0 only for an outbox that has never been written to.
pub async fn snapshot_position(conn: &mut PgConnection) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM outbox")
            .fetch_one(conn)
            .await?,
    )
}
