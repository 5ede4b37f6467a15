//! All of {{name}}'s SQL. The pool's search path is its own schema.

use sqlx::PgPool;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
pub struct Record {
    pub id: Uuid,
    pub note: String,
    pub created_at: time::OffsetDateTime,
}

/// A user's latest records (at most 100), newest first.
pub async fn records_of(pool: &PgPool, owner: Uuid) -> Result<Vec<Record>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, note, created_at FROM records
         WHERE owner_id = $1 ORDER BY created_at DESC LIMIT 100",
    )
    .bind(owner)
    .fetch_all(pool)
    .await
}
