//! One statement's round trip to PostgreSQL, in the clear and over TLS, by the size of what it
//! sends. A batch's statements (the matching task's inserts, settlement's transfers) carry tens
//! of kilobytes; over TLS that is more than one record, written to the socket one record at a
//! time. Without `TCP_NODELAY` the second record waited for the server's delayed ACK — about
//! 40 ms per statement, where the same statement in the clear took a tenth of a millisecond
//! (sqlx 0.9.0; 0.9.1 sets the option again: docs/performance.md, "Forty milliseconds a
//! statement"). Run with `cargo bench -p service-kit --bench database_round_trip`, against
//! `BOURSE_BENCH_DATABASE_URL` (default: the local server, which must offer TLS —
//! `tools/dev/prepare-tests.sh` turns it on). The same statements over the server's Unix socket
//! (`BOURSE_BENCH_DATABASE_SOCKET_DIR`, default `/var/run/postgresql`) show what loopback TCP
//! itself costs a round trip — next to nothing (docs/performance.md, "A Unix socket to
//! PostgreSQL").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};

fn main() {
    divan::main();
}

/// `parameters`: appended to the base URL's query, e.g. `sslmode=disable`.
fn connect(runtime: &tokio::runtime::Runtime, parameters: &str) -> PgConnection {
    let base = std::env::var("BOURSE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}{parameters}");
    runtime
        .block_on(PgConnection::connect(&url))
        .unwrap_or_else(|err| panic!("connecting with {parameters}: {err}"))
}

/// `SELECT length($1)` with a text parameter of `bytes`: the statement's size on the wire.
fn round_trip(bencher: divan::Bencher, parameters: &str, bytes: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut connection = connect(&runtime, parameters);
    let text = "x".repeat(bytes);
    bencher.bench_local(|| {
        runtime.block_on(async {
            let length: i32 = sqlx::query_scalar("SELECT length($1)")
                .bind(&text)
                .fetch_one(&mut connection)
                .await
                .unwrap();
            divan::black_box(length)
        })
    });
}

#[divan::bench(args = [1_000, 20_000, 64_000], sample_count = 50)]
fn in_the_clear(bencher: divan::Bencher, bytes: usize) {
    round_trip(bencher, "sslmode=disable", bytes);
}

#[divan::bench(args = [1_000, 20_000, 64_000], sample_count = 50)]
fn over_tls(bencher: divan::Bencher, bytes: usize) {
    round_trip(bencher, "sslmode=require", bytes);
}

#[divan::bench(args = [1_000, 20_000, 64_000], sample_count = 50)]
fn over_a_unix_socket(bencher: divan::Bencher, bytes: usize) {
    let directory = std::env::var("BOURSE_BENCH_DATABASE_SOCKET_DIR")
        .unwrap_or_else(|_| "/var/run/postgresql".to_owned());
    round_trip(bencher, &format!("sslmode=disable&host={directory}"), bytes);
}
