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
//!
//! **Claims written with the answer.** Work that already commits its answer in a batch of many
//! (the orders service's matching task) need not pay a claim's own statement and commit per
//! request: [`look_up`] only reads the key (a replay, a mismatch, or go ahead), concurrent
//! duplicates in one process are turned away by [`InFlightKeys`], and [`record_all`] inserts the
//! claim *and* its answer in the work's transaction under the same primary key — a duplicate
//! that slipped through elsewhere (another replica) finds the key taken there and its work
//! rolls back. Work that fails without knowing whether its answer was stored settles it with
//! [`fence`], as [`withdraw`] does for claimed keys.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use sqlx::migrate::MigrateError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::combine::{Batch, Combiner};
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
    /// The request's fingerprint ([`request_hash`]), stored with the answer by [`record_all`].
    #[serde(default)]
    pub request_hash: Vec<u8>,
    /// The key had no row when this claim was made ([`look_up`] found none): [`record_all`]
    /// stores its answer with a plain insert. False (the default, for a claim from a replica
    /// that does not say) writes over the row the way any claim may.
    #[serde(default)]
    pub unwritten: bool,
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
            Begin::InFlight => Err(Box::new(in_flight())),
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

/// 409 `idempotency_key_in_flight`: a request with this key is still being processed.
pub fn in_flight() -> Response {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_flight",
        "a request with this key is still being processed",
    )
    .into_response()
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
            request_hash: hash.to_vec(),
            unwritten: false,
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
    Ok(match existing(pool, principal, key).await? {
        // Purged between our insert and select: treat as in flight; the client retries.
        None => Begin::InFlight,
        Some(row) => row.begin(hash),
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
    answered_under(pool, claim).await
}

/// [`Withdrawal::Answered`] when the key holds an answer stored under `claim`'s token.
async fn answered_under(pool: &PgPool, claim: &Claim) -> Result<Withdrawal> {
    let answered: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys
                         WHERE principal_id = $1 AND key = $2 AND claim = $3
                           AND response_status IS NOT NULL)",
    )
    .bind(claim.principal)
    .bind(&claim.key)
    .bind(claim.token)
    .fetch_one(pool)
    .await?;
    Ok(if answered {
        Withdrawal::Answered
    } else {
        Withdrawal::Withdrawn
    })
}

/// What is known of a key whose claim is written with its answer ([`record_all`]): a replay,
/// a mismatch, still in flight (a claim written the other way, within its lease), or a claim
/// to work under — not written anywhere yet. Reads only.
pub async fn look_up(pool: &PgPool, principal: Uuid, key: &str, hash: &[u8]) -> Result<Begin> {
    Ok(judge(
        existing(pool, principal, key).await?,
        principal,
        key,
        hash,
    ))
}

/// What [`look_up`] tells a request with body `hash` about key `key`, given its row.
fn judge(row: Option<Existing>, principal: Uuid, key: &str, hash: &[u8]) -> Begin {
    let unwritten = row.is_none();
    let proceed = || {
        Begin::Proceed(Claim {
            principal,
            key: key.to_owned(),
            token: Uuid::now_v7(),
            request_hash: hash.to_vec(),
            unwritten,
        })
    };
    match row {
        None => proceed(),
        // Work fenced off after an unknown outcome, or a claim cut off past its lease: the
        // key was never answered, and a retry (any body) works under a new token.
        Some(row) if row.response_status.is_none() && (row.fenced == Some(true) || row.expired) => {
            proceed()
        }
        Some(row) => row.begin(hash),
    }
}

/// A key's row as [`begin`] and [`look_up`] judge it.
#[derive(Clone, sqlx::FromRow)]
struct Existing {
    request_hash: Vec<u8>,
    response_status: Option<i16>,
    response_body: Option<String>,
    /// Some work under it was fenced off ([`fence`]).
    fenced: Option<bool>,
    /// Claimed longer ago than [`LEASE`].
    expired: bool,
}

impl Existing {
    /// What a request with body `hash` is told about a key that is not its own to work
    /// under: the answer replayed, a mismatch, or in flight.
    fn begin(self, hash: &[u8]) -> Begin {
        match self {
            row if row.request_hash != hash => Begin::Mismatch,
            Existing {
                response_status: Some(status),
                response_body: Some(body),
                ..
            } => Begin::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            _ => Begin::InFlight,
        }
    }
}

async fn existing(pool: &PgPool, principal: Uuid, key: &str) -> Result<Option<Existing>> {
    sqlx::query_as(
        "SELECT request_hash, response_status, response_body,
                cardinality(fenced) > 0 AS fenced,
                locked_at < now() - make_interval(secs => $3) AS expired
           FROM idempotency_keys WHERE principal_id = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .bind(LEASE.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// [`look_up`] for many requests at once: look-ups that arrive while a read is under way wait
/// for the next read, which takes all of them with one statement. Order entry looked its key
/// up once per order — a round trip per order, the only one left on its path (ADR 0025); read
/// together, a busy moment costs one round trip for everyone in it, and a quiet one no more
/// than before (nothing waits for a batch to fill).
///
/// The reads run in a task of their own, started when a look-up finds none running and ended
/// when nobody waits: a request cut off while waiting leaves the others' read untouched.
#[derive(Clone)]
pub struct LookUps(Combiner<KeyReads>);

/// The reads of [`LookUps`]: one statement per batch.
struct KeyReads {
    pool: PgPool,
}

struct Wanted {
    principal: Uuid,
    key: String,
    hash: Vec<u8>,
}

/// The most look-ups one statement reads.
const LOOK_UPS_PER_READ: usize = 512;

/// Why [`LookUps::look_up`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookUpError {
    /// The read failed; every look-up it carried shares the cause.
    #[error("reading idempotency keys: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// The read task ended without answering (it panicked).
    #[error("the idempotency key read stopped")]
    Stopped,
}

impl LookUpError {
    /// The database is away (a 503 with Retry-After, not a 500).
    pub fn is_database_unavailable(&self) -> bool {
        matches!(self, LookUpError::Database(err) if crate::db::is_unavailable(err))
    }
}

impl LookUps {
    /// Reads run as tasks of `tasks`.
    pub fn new(pool: PgPool, tasks: crate::Supervisor) -> Self {
        Self(Combiner::new(
            "idempotency key reads",
            LOOK_UPS_PER_READ,
            KeyReads { pool },
            tasks,
        ))
    }

    /// What [`look_up`] would answer, read together with whatever else is waiting.
    pub async fn look_up(
        &self,
        principal: Uuid,
        key: &str,
        hash: &[u8],
    ) -> std::result::Result<Begin, LookUpError> {
        let wanted = Wanted {
            principal,
            key: key.to_owned(),
            hash: hash.to_vec(),
        };
        self.0
            .submit(wanted)
            .await
            .unwrap_or(Err(LookUpError::Stopped))
    }

    /// Look-ups waiting for a read to start (a gauge of how many one read will carry).
    pub fn waiting(&self) -> usize {
        self.0.waiting()
    }
}

impl Batch for KeyReads {
    type Item = Wanted;
    type Answer = std::result::Result<Begin, LookUpError>;

    fn answer(&self, batch: Vec<Wanted>) -> BoxFuture<'_, Vec<Self::Answer>> {
        Box::pin(async move {
            metrics::histogram!("idempotency_look_ups_per_read").record(batch.len() as f64);
            let (principals, keys): (Vec<Uuid>, Vec<String>) =
                batch.iter().map(|w| (w.principal, w.key.clone())).unzip();
            match existing_all(&self.pool, &principals, &keys).await {
                Ok(found) => batch
                    .into_iter()
                    .map(|wanted| {
                        let row = found.get(&(wanted.principal, wanted.key.clone())).cloned();
                        Ok(judge(row, wanted.principal, &wanted.key, &wanted.hash))
                    })
                    .collect(),
                Err(err) => {
                    let err = Arc::new(err);
                    batch
                        .iter()
                        .map(|_| Err(LookUpError::Database(err.clone())))
                        .collect()
                }
            }
        })
    }
}

/// The rows of many keys at once, by (principal, key).
async fn existing_all(
    pool: &PgPool,
    principals: &[Uuid],
    keys: &[String],
) -> Result<HashMap<(Uuid, String), Existing>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        principal_id: Uuid,
        key: String,
        #[sqlx(flatten)]
        row: Existing,
    }
    #[derive(serde::Serialize)]
    struct Wanted<'a> {
        principal_id: Uuid,
        key: &'a str,
    }
    let wanted: Vec<Wanted<'_>> = principals
        .iter()
        .zip(keys)
        .map(|(&principal_id, key)| Wanted { principal_id, key })
        .collect();
    // The keys go as one JSON array, not as `UNNEST` of arrays like the batch writes: this
    // statement runs in no transaction of ours, so `db::begin_batch` cannot fix its plan, and
    // for `UNNEST` of parameters PostgreSQL plans every execution again (its custom plan knows
    // the arrays' lengths, so it always looks cheaper than the generic one — ADR 0026).
    // `jsonb_to_recordset` is estimated at 100 rows either way: after a few executions the
    // generic plan is kept.
    let found: Vec<Found> = sqlx::query_as(
        "SELECT k.principal_id, k.key, k.request_hash, k.response_status, k.response_body,
                cardinality(k.fenced) > 0 AS fenced,
                k.locked_at < now() - make_interval(secs => $2) AS expired
           FROM jsonb_to_recordset($1) AS q(principal_id uuid, key text)
           JOIN idempotency_keys k ON k.principal_id = q.principal_id AND k.key = q.key",
    )
    .bind(sqlx::types::Json(&wanted))
    .bind(LEASE.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(found
        .into_iter()
        .map(|f| ((f.principal_id, f.key), f.row))
        .collect())
}

/// Whether [`record_all`] stored every answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    All,
    /// At least one key was answered (or is claimed) already, or its work was fenced off:
    /// nothing of that transaction may commit. Look the key up again for what to answer.
    KeyTaken,
}

/// Claims the keys and stores their answers, in the transaction that did the work
/// ([`look_up`]'s claims). A key already answered, claimed within its lease, or fenced against
/// this claim's token is not overwritten, and the result says so — after which the transaction
/// can only roll back: it may have failed on the key.
pub async fn record_all(conn: &mut PgConnection, answers: &[(Claim, Answer)]) -> Result<Recorded> {
    // Keys that had no row when looked up — nearly all of them — are inserted plainly: `ON
    // CONFLICT` makes every insert speculative, one more WAL record per row (docs/performance.md,
    // "Inserts that are not speculative"). A row written since (a duplicate answered through
    // another replica, a fence) fails the insert on the key: taken, as the upsert would say.
    let (fresh, claimed): (Vec<&ClaimedAnswer>, Vec<&ClaimedAnswer>) =
        answers.iter().partition(|(claim, _)| claim.unwritten);
    if !fresh.is_empty() {
        match store_answers(&mut *conn, &fresh, false).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(err))
                if err.constraint() == Some("idempotency_keys_pkey") =>
            {
                return Ok(Recorded::KeyTaken);
            }
            Err(err) => return Err(err),
        }
    }
    if !claimed.is_empty()
        && store_answers(&mut *conn, &claimed, true).await? < claimed.len() as u64
    {
        return Ok(Recorded::KeyTaken);
    }
    Ok(Recorded::All)
}

/// A claim and the answer stored under it.
type ClaimedAnswer = (Claim, Answer);

/// One statement storing `answers` with their claims: a plain insert, or (`over_rows`) an
/// upsert that takes over a row whose claim is past its lease or fenced off. Returns the rows
/// written.
async fn store_answers(
    conn: &mut PgConnection,
    answers: &[&ClaimedAnswer],
    over_rows: bool,
) -> std::result::Result<u64, sqlx::Error> {
    let principals: Vec<Uuid> = answers.iter().map(|(c, _)| c.principal).collect();
    let keys: Vec<&str> = answers.iter().map(|(c, _)| c.key.as_str()).collect();
    let hashes: Vec<&[u8]> = answers
        .iter()
        .map(|(c, _)| c.request_hash.as_slice())
        .collect();
    let statuses: Vec<i16> = answers
        .iter()
        .map(|(_, a)| i16::try_from(a.status).unwrap_or(500))
        .collect();
    let bodies: Vec<&str> = answers.iter().map(|(_, a)| a.body.as_str()).collect();
    let tokens: Vec<Uuid> = answers.iter().map(|(c, _)| c.token).collect();
    // One statement text each, so each is prepared once per connection.
    macro_rules! insert_answers {
        () => {
            "INSERT INTO idempotency_keys AS k
                (principal_id, key, request_hash, response_status, response_body, claim, locked_at)
         SELECT a.principal, a.key, a.hash, a.status, a.body, a.claim, now()
           FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::int2[], $5::text[], $6::uuid[])
                AS a(principal, key, hash, status, body, claim)"
        };
    }
    // ON CONFLICT … DO UPDATE locks the existing row and re-checks the condition on its latest
    // version, so a fence or an answer committed meanwhile is seen. A key twice in one batch
    // (a duplicate forwarded by another replica) fails either statement: the batch is replayed
    // job by job, and the second finds the key taken.
    const OVER_ROWS: &str = concat!(
        insert_answers!(),
        " ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,
                response_body = EXCLUDED.response_body, claim = EXCLUDED.claim,
                locked_at = EXCLUDED.locked_at
          WHERE k.response_status IS NULL
            AND NOT (EXCLUDED.claim = ANY (coalesce(k.fenced, '{}')))
            AND (cardinality(k.fenced) > 0 OR k.locked_at < now() - make_interval(secs => $7))"
    );
    let query = sqlx::query(if over_rows {
        OVER_ROWS
    } else {
        insert_answers!()
    })
    .bind(&principals)
    .bind(&keys)
    .bind(&hashes)
    .bind(&statuses)
    .bind(&bodies)
    .bind(&tokens);
    let query = if over_rows {
        query.bind(LEASE.as_secs_f64())
    } else {
        query
    };
    Ok(query.execute(conn).await?.rows_affected())
}

/// Settles work under a [`look_up`] claim that failed without knowing whether its answer was
/// stored (a commit whose outcome was lost, a command sent to another replica that did not
/// answer): records the claim's token as fenced unless the key is answered, so the work can
/// never store its answer any more — or finds that it did. Waits out a transaction that is
/// storing the key right now, like [`withdraw`].
pub async fn fence(pool: &PgPool, claim: &Claim) -> Result<Withdrawal> {
    let fenced = sqlx::query(
        "INSERT INTO idempotency_keys AS k (principal_id, key, request_hash, fenced)
         VALUES ($1, $2, $3, ARRAY[$4::uuid])
         ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
            SET fenced = array_append(coalesce(k.fenced, '{}'), $4::uuid)
          WHERE k.response_status IS NULL",
    )
    .bind(claim.principal)
    .bind(&claim.key)
    .bind(&claim.request_hash)
    .bind(claim.token)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if fenced {
        return Ok(Withdrawal::Withdrawn);
    }
    // Answered: by this work, or by another request with the key (then this work cannot
    // store its own any more).
    answered_under(pool, claim).await
}

/// The keys this process is working on right now, so that concurrent duplicates of a
/// [`look_up`] request are answered 409 at once instead of each doing the work up to the
/// point where the database tells them apart. Duplicates reaching different processes are
/// told apart by [`record_all`].
#[derive(Clone, Default)]
pub struct InFlightKeys(Arc<Mutex<HashSet<(Uuid, String)>>>);

impl InFlightKeys {
    /// Marks the key in flight until the guard drops; `None` when it is in flight already.
    pub fn enter(&self, principal: Uuid, key: &str) -> Option<InFlightGuard> {
        let mut keys = self.0.lock().ok()?;
        keys.insert((principal, key.to_owned()))
            .then(|| InFlightGuard {
                keys: self.clone(),
                entry: Some((principal, key.to_owned())),
            })
    }
}

/// A key marked in flight by [`InFlightKeys::enter`].
pub struct InFlightGuard {
    keys: InFlightKeys,
    entry: Option<(Uuid, String)>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let (Some(entry), Ok(mut keys)) = (self.entry.take(), self.keys.0.lock()) {
            keys.remove(&entry);
        }
    }
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
