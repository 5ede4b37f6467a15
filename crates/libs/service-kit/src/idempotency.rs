//! Idempotency keys with Stripe semantics (REL-07, docs/design.md §5), for every service whose POSTs
//! honour `Idempotency-Key`.
//!
//! A key is *claimed* before any work starts: the primary key (principal, key) lets exactly one
//! of many concurrent duplicates proceed. The first response is stored *in the work's own
//! transaction*, so a retry replays exactly what the first call answered — or, if the work
//! failed without an answer worth keeping, the claim is released and a retry runs afresh.
//! The table lives in each service's schema ([`migrate`]).
//!
//! A claim is a lease ([`LEASE`]), as the IETF idempotency-key draft and Stripe describe: work
//! cut off without releasing it (a process killed, a panic) does not leave its key answering
//! 409 "in flight" for a day — a retry of the same request after the lease takes the claim over.
//! Each claim carries a token, and storing the answer checks it: work whose claim was taken
//! over cannot commit, so a key never has two outcomes.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sqlx::migrate::MigrateError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::http::Problem;

type Result<T> = std::result::Result<T, sqlx::Error>;

pub const HEADER: &str = "idempotency-key";

/// Creates `idempotency_keys` in `schema` (tracked in `<schema>._idempotency_migrations`).
pub async fn migrate(pool: &PgPool, schema: &'static str) -> std::result::Result<(), MigrateError> {
    crate::db::migrate_with_history(
        pool,
        schema,
        "_idempotency_migrations",
        sqlx::migrate!("./migrations/idempotency"),
    )
    .await
}

/// The `Idempotency-Key` of a request that requires one: missing → 400
/// `idempotency_key_missing`, not 1–255 visible ASCII characters (`^[!-~]{1,255}$`, as the
/// API documents state it) → 400 `idempotency_key_invalid`.
pub fn required_key<'h>(
    headers: &'h HeaderMap,
    route: &str,
) -> std::result::Result<&'h str, Problem> {
    let key = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Problem::bad_request(
                "idempotency_key_missing",
                format!("{route} needs an Idempotency-Key header"),
            )
        })?;
    if !(1..=255).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(key)
}

/// A stored answer: what the first request got, replayed to its retries.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The answer as a response; `replayed` adds `Idempotent-Replayed: true`.
    pub fn into_response(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = if status.is_success() {
            "application/json"
        } else {
            crate::http::problem::CONTENT_TYPE
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            self.body,
        )
            .into_response();
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// How long a claim holds before a retry of the same request may take it over: well beyond
/// any request's timeout (`BOURSE_HTTP_REQUEST_TIMEOUT_MS`, 10 s by default).
pub const LEASE: Duration = Duration::from_secs(60);

/// A key this request owns until it completes or abandons it, or its lease is taken over.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    pub principal: Uuid,
    pub key: String,
    /// Fences the completion: only the current claimant's answer is stored.
    pub token: Uuid,
}

/// What to do with a request carrying an idempotency key.
pub enum Begin {
    /// First time: do the work.
    Proceed(Claim),
    /// Done before with the same body: answer the same.
    Replay { status: u16, body: String },
    /// The first request with this key is still running.
    InFlight,
    /// The key was used with a different body.
    Mismatch,
}

impl Begin {
    /// The claim to work under, or the response to give instead: the replayed answer, 409
    /// `idempotency_key_in_flight`, or 422 `idempotency_key_reused`.
    pub fn claim(self) -> std::result::Result<Claim, Box<Response>> {
        match self {
            Begin::Proceed(claim) => Ok(claim),
            Begin::Replay { status, body } => {
                Err(Box::new(Answer { status, body }.into_response(true)))
            }
            Begin::InFlight => Err(Box::new(
                Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_flight",
                    "a request with this key is still being processed",
                )
                .into_response(),
            )),
            Begin::Mismatch => Err(Box::new(
                Problem::unprocessable(
                    "idempotency_key_reused",
                    "this key was used with a different request",
                )
                .into_response(),
            )),
        }
    }
}

/// A fingerprint of the request body that ignores formatting and key order.
pub fn request_hash(body: &serde_json::Value) -> Vec<u8> {
    // serde_json's default map is sorted, so equal documents serialize identically.
    digest(&SHA256, body.to_string().as_bytes())
        .as_ref()
        .to_vec()
}

pub async fn begin(pool: &PgPool, principal: Uuid, key: &str, hash: &[u8]) -> Result<Begin> {
    begin_with_lease(pool, principal, key, hash, LEASE).await
}

/// [`begin`] with a lease of `lease`.
pub async fn begin_with_lease(
    pool: &PgPool,
    principal: Uuid,
    key: &str,
    hash: &[u8],
    lease: Duration,
) -> Result<Begin> {
    let token = Uuid::now_v7();
    let proceed = || {
        Begin::Proceed(Claim {
            principal,
            key: key.to_owned(),
            token,
        })
    };
    // The claim commits without waiting for its WAL flush (synchronous_commit off for this one
    // statement's transaction). That is safe: the work's own transaction commits synchronously
    // and flushes all earlier WAL, the claim included; and a claim lost in a crash had no work
    // depending on it, so the client's retry simply claims again.
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (principal_id, key, request_hash, claim)
         SELECT $1, $2, $3, $4 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
         ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING",
    )
    .bind(principal)
    .bind(key)
    .bind(hash)
    .bind(token)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(proceed());
    }
    // The same request, unanswered, claimed longer ago than the lease: its work was cut off.
    // One retry wins the row; the old claimant can no longer store an answer.
    let taken_over = sqlx::query(
        "UPDATE idempotency_keys SET claim = $4, locked_at = now()
          WHERE principal_id = $1 AND key = $2 AND request_hash = $3
            AND response_status IS NULL
            AND locked_at < now() - make_interval(secs => $5)",
    )
    .bind(principal)
    .bind(key)
    .bind(hash)
    .bind(token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if taken_over {
        tracing::warn!(%principal, "idempotency claim taken over after its lease");
        return Ok(proceed());
    }
    let existing: Option<(Vec<u8>, Option<i16>, Option<String>)> = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys
         WHERE principal_id = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match existing {
        // Purged between our insert and select: treat as in flight; the client retries.
        None => Begin::InFlight,
        Some((stored, _, _)) if stored != hash => Begin::Mismatch,
        Some((_, Some(status), Some(body))) => Begin::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        Some(_) => Begin::InFlight,
    })
}

/// Stores the response, in the transaction that did the work.
pub async fn complete(conn: &mut PgConnection, claim: &Claim, answer: &Answer) -> Result<()> {
    complete_all(conn, &[(claim.clone(), answer.clone())]).await
}

/// Stores the responses of a batch, in the transaction that did the work. Fails when a claim
/// was taken over (its lease ran out): that work must not commit.
pub async fn complete_all(conn: &mut PgConnection, answers: &[(Claim, Answer)]) -> Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let principals: Vec<Uuid> = answers.iter().map(|(c, _)| c.principal).collect();
    let keys: Vec<&str> = answers.iter().map(|(c, _)| c.key.as_str()).collect();
    let statuses: Vec<i16> = answers
        .iter()
        .map(|(_, a)| i16::try_from(a.status).unwrap_or(500))
        .collect();
    let bodies: Vec<&str> = answers.iter().map(|(_, a)| a.body.as_str()).collect();
    let tokens: Vec<Uuid> = answers.iter().map(|(c, _)| c.token).collect();
    let stored = sqlx::query(
        "UPDATE idempotency_keys k SET response_status = a.status, response_body = a.body
           FROM UNNEST($1::uuid[], $2::text[], $3::int2[], $4::text[], $5::uuid[])
                AS a(principal, key, status, body, claim)
          WHERE k.principal_id = a.principal AND k.key = a.key AND k.claim = a.claim",
    )
    .bind(&principals)
    .bind(&keys)
    .bind(&statuses)
    .bind(&bodies)
    .bind(&tokens)
    .execute(conn)
    .await?
    .rows_affected();
    if stored != answers.len() as u64 {
        // A retry took a claim over after its lease: this work lost the key.
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Releases a claim whose work failed before producing an answer worth replaying (a 5xx).
pub async fn abandon(pool: &PgPool, claim: &Claim) {
    if let Err(err) = withdraw(pool, claim).await {
        tracing::warn!(error = %err, "could not release an idempotency key; it expires with the purge");
    }
}

/// What became of a claim whose work gave up without knowing whether it was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// The claim is gone unanswered: work under it can never commit any more (completing it
    /// fails), so whatever it set up beforehand may be undone.
    Withdrawn,
    /// The work committed its answer after all: it stands.
    Answered,
}

/// Settles an ambiguous failure (a commit whose outcome was lost, a worker that stopped after
/// taking the job): deletes the claim if it is still unanswered, which fences its work off for
/// good. A claim that a retry took over, or that the purge removed, is withdrawn too — its
/// token can no longer complete anything.
pub async fn withdraw(pool: &PgPool, claim: &Claim) -> Result<Withdrawal> {
    let withdrawn = sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE principal_id = $1 AND key = $2 AND claim = $3 AND response_status IS NULL",
    )
    .bind(claim.principal)
    .bind(&claim.key)
    .bind(claim.token)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if withdrawn {
        return Ok(Withdrawal::Withdrawn);
    }
    // A statement of its own, so its snapshot is taken after the delete waited out a batch
    // that was completing the claim.
    let answered: Option<bool> = sqlx::query_scalar(
        "SELECT response_status IS NOT NULL FROM idempotency_keys
          WHERE principal_id = $1 AND key = $2 AND claim = $3",
    )
    .bind(claim.principal)
    .bind(&claim.key)
    .bind(claim.token)
    .fetch_optional(pool)
    .await?;
    Ok(match answered {
        Some(true) => Withdrawal::Answered,
        _ => Withdrawal::Withdrawn,
    })
}

/// Deletes keys older than `retention` (at least 24 h per the API contract).
pub async fn purge(pool: &PgPool, retention: Duration) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes keys older than 24 hours (the API contract's minimum), hourly, until `shutdown`.
pub async fn purge_every_hour(pool: PgPool, shutdown: crate::Shutdown) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match purge(&pool, Duration::from_secs(24 * 3600)).await {
                    Ok(purged) if purged > 0 => tracing::info!(purged, "idempotency keys purged"),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "idempotency purge failed"),
                }
            }
            () = shutdown.triggered() => break,
        }
    }
}
