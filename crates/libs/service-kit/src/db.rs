//! PostgreSQL: one pool per service, bound to the service's own schema.
//!
//! Services never share tables (docs/design.md §1). Each pool sets `search_path` to its schema at
//! connect time, so a service's SQL names its tables unqualified and cannot reach another's by
//! accident; each schema also keeps its own migration history (`<schema>._sqlx_migrations`), so
//! services migrate independently.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

use crate::config::CommonConfig;
use crate::tasks::Supervisor;

/// Connects a pool whose sessions see only `schema` (and `public` is not on the path): for a
/// one-off job (migrations, an admin command). A service uses [`connect_following`].
pub async fn connect(config: &CommonConfig, schema: &'static str) -> Result<PgPool, sqlx::Error> {
    connect_with(options(&config.database_url, schema)?, config).await
}

/// [`connect`], and when the URL is a watched secret the pool follows its rotations, in a task
/// of `tasks`: new connections use the new credential, open ones finish their work and age out
/// (`max_lifetime`), no restart.
pub async fn connect_following(
    config: &CommonConfig,
    schema: &'static str,
    tasks: &Supervisor,
) -> Result<PgPool, sqlx::Error> {
    let pool = connect(config, schema).await?;
    let watched = pool.clone();
    tasks.spawn(format!("{schema} pool metrics"), move |shutdown| {
        report_pool(watched.clone(), schema, shutdown)
    });
    if let Some(changes) = config.database_url_changes.clone() {
        let following = pool.clone();
        tasks.spawn(format!("{schema} credential rotations"), move |shutdown| {
            let (pool, changes) = (following.clone(), changes.clone());
            async move {
                tokio::select! {
                    () = follow_rotations(pool, schema, changes) => {}
                    () = shutdown.triggered() => {}
                }
            }
        });
    }
    Ok(pool)
}

/// `db_pool_connections{schema,state}` and `db_pool_max_connections{schema}` every few seconds,
/// so a pool running out of connections shows before requests start waiting (OBS-03).
async fn report_pool(pool: PgPool, schema: &'static str, shutdown: crate::Shutdown) {
    let max = f64::from(pool.options().get_max_connections());
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = every.tick() => {}
        }
        let idle = pool.num_idle() as f64;
        let open = f64::from(pool.size());
        metrics::gauge!("db_pool_max_connections", "schema" => schema).set(max);
        metrics::gauge!("db_pool_connections", "schema" => schema, "state" => "idle").set(idle);
        metrics::gauge!("db_pool_connections", "schema" => schema, "state" => "in_use")
            .set((open - idle).max(0.0));
    }
}

/// How long a session may sit inside a transaction waiting for its client before PostgreSQL
/// ends it. A transaction's locks are held until it ends, and a client that stops sending — a
/// process paused (SIGSTOP, a frozen VM, a debugger) or hung — would otherwise hold them for as
/// long as it is stopped, since its socket stays open: an orders replica paused in the middle
/// of a matching batch keeps its symbol's owner row locked, and no other replica can take the
/// symbol over (ADR 0014), however long ago its lease ran out. Every transaction of ours sends
/// its statements back to back; none waits this long for anything of its own.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

fn options(url: &SecretString, schema: &'static str) -> Result<PgConnectOptions, sqlx::Error> {
    let idle_in_transaction = IDLE_IN_TRANSACTION_TIMEOUT.as_millis().to_string();
    Ok(PgConnectOptions::from_str(url.expose_secret())?
        .application_name(schema)
        .options([
            ("search_path", schema),
            (
                "idle_in_transaction_session_timeout",
                idle_in_transaction.as_str(),
            ),
        ]))
}

/// Points `pool`'s next connections at each new `DATABASE_URL`, until the sender is gone.
async fn follow_rotations(
    pool: PgPool,
    schema: &'static str,
    mut changes: tokio::sync::watch::Receiver<SecretString>,
) {
    while changes.changed().await.is_ok() {
        let url = changes.borrow_and_update().clone();
        match options(&url, schema) {
            Ok(options) => {
                pool.set_connect_options(options);
                tracing::info!(
                    schema,
                    "database credential rotated; new connections use it"
                );
            }
            // The error names what is malformed, never the URL (it holds the password).
            Err(err) => tracing::error!(schema, error = %err,
                "rotated DATABASE_URL is unusable; keeping the previous one"),
        }
    }
}

async fn connect_with(
    options: PgConnectOptions,
    config: &CommonConfig,
) -> Result<PgPool, sqlx::Error> {
    pool_options(config, PING_IF_IDLE_FOR)
        .connect_with(options)
        .await
}

/// A pooled connection idle at least this long is pinged before it is handed out; one used
/// more recently is not. sqlx pings every connection as it goes back to the pool, and by
/// default again as it comes out — under load, microseconds later, and on the path of every
/// request and every matching batch: one extra round trip per statement outside a
/// transaction. A connection that has been idle for a while is the one that may have lost its
/// server (a restart, a proxy's idle timeout, a rotated credential's sessions cut off), so that
/// one is still checked, and replaced if dead. The price: a session killed within this long of
/// its last use fails the one statement that next gets it (the pool then drops it) — so the
/// window is short; under load connections come back within milliseconds.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(100);

/// The pool every service uses; `ping_if_idle_for` as [`PING_IF_IDLE_FOR`] (tests vary it).
pub fn pool_options(config: &CommonConfig, ping_if_idle_for: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        // Keep one warm connection: the first request after idle should not pay a TLS+auth
        // handshake.
        .min_connections(1)
        .acquire_timeout(config.database_acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .test_before_acquire(false)
        .before_acquire(move |connection, meta| {
            Box::pin(async move {
                // An error closes the connection and the pool takes, or opens, another.
                if meta.idle_for >= ping_if_idle_for {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

/// Applies `migrator` inside `schema`, creating the schema first. Safe to run from several
/// replicas at once: sqlx takes an advisory lock.
pub async fn migrate(
    pool: &PgPool,
    schema: &'static str,
    migrator: Migrator,
) -> Result<(), MigrateError> {
    migrate_with_history(pool, schema, "_sqlx_migrations", migrator).await
}

/// Like [`migrate`], for a component shared by several services (the outbox of `events`):
/// its migrations are applied into each service's schema and tracked in their own history
/// table there, independent of the service's own migrations.
pub async fn migrate_with_history(
    pool: &PgPool,
    schema: &'static str,
    history_table: &'static str,
    mut migrator: Migrator,
) -> Result<(), MigrateError> {
    if !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(MigrateError::Source(
            format!("invalid schema name {schema:?}").into(),
        ));
    }
    // DDL cannot take bind parameters; the name was checked above and is a compile-time constant.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(pool)
    .await?;
    migrator.dangerous_set_table_name(format!("{schema}.{history_table}"));
    // Migrations are additive for one release (expand, then contract a release later:
    // docs/runbooks/deploy.md), so the previous image runs against a schema a newer one
    // migrated. Rolled back to, it finds migrations in the history it does not know, and must
    // start rather than refuse: what it knows is applied, and the rest is not its to undo.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    grant_service_role(pool, schema).await?;
    Ok(())
}

/// The least-privilege role of a service (SEC-17): `bourse_<schema>` may use its own schema's
/// tables and nothing else. Deployments give each service a login that is a member of its
/// role (`CREATE ROLE auth_login LOGIN PASSWORD '…' IN ROLE bourse_auth`). Idempotent, and
/// safe when several databases of one cluster migrate at once (roles are cluster-wide).
pub async fn grant_service_role(pool: &PgPool, schema: &'static str) -> Result<(), sqlx::Error> {
    let role = service_role(schema);
    // DDL cannot take bind parameters; `schema` was validated by `migrate_with_history`.
    sqlx::query(AssertSqlSafe(format!(
        "DO $$ BEGIN
             CREATE ROLE {role} NOLOGIN;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    )))
    .execute(pool)
    .await?;
    for statement in [
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
    }
    Ok(())
}

/// `bourse_<schema>`.
pub fn service_role(schema: &str) -> String {
    format!("bourse_{schema}")
}

/// Creates the database named in the URL if it does not exist yet, so `bourse migrate` (and a
/// development start) work on a fresh PostgreSQL.
pub async fn ensure_database(config: &CommonConfig) -> Result<(), sqlx::Error> {
    use sqlx::migrate::MigrateDatabase;
    let url = config.database_url.expose_secret();
    if !sqlx::Postgres::database_exists(url).await? {
        sqlx::Postgres::create_database(url).await?;
        tracing::info!("database created");
    }
    Ok(())
}

/// Whether a database error means "the database is unreachable, restarting, failing over or
/// saturated right now" — a 503 with `Retry-After` for a request, a retry (never a dead letter)
/// for an event: the work was fine and the same attempt may succeed shortly.
///
/// Opens the transaction and, in the same round trip, makes its statements run on generic
/// plans (`SET LOCAL`, so only until it ends).
///
/// For the batch transactions — the matching batch, a consumer's batch — whose statements pass
/// their rows as arrays (`UNNEST($1::uuid[], …)`). Given the arrays' values, PostgreSQL
/// estimates their rows exactly, so a custom plan always looks cheaper than the generic one (made
/// for 100 rows) and under the default `plan_cache_mode = auto` every execution is planned
/// again: 8–13% of PostgreSQL's CPU under load (docs/performance.md). These statements look
/// rows up by key, so the generic plan is the plan they would get anyway. Not for the pool as a
/// whole: a range over a column (`created_at < $1`) needs its value to be planned well.
pub async fn begin_batch(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await
}

/// Beyond the client-side failures (pool, socket, TLS, a connection cut mid-message), the
/// server says so with SQLSTATEs: class 08 (connection exception), 57P01-57P03 (terminated by an
/// administrator or a crash, not accepting connections yet — what a stopping or restarting
/// server answers), class 53 (out of resources: too many connections, disk full), 25006 (a
/// read-only transaction: a failed-over primary still running as a replica), and 40001/40P01
/// (a serialization failure or deadlock: the transaction itself should be retried).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_restart_states_are_transient_and_data_errors_are_not() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "25006", "40001", "40P01",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        // unique violation, check violation, syntax error, undefined table
        for code in ["23505", "23514", "42601", "42P01", "22003"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
