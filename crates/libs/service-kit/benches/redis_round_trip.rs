//! A pipeline of `XADD`s of 1 KB each (what an outbox relay sends per batch) and one large
//! command, through the services' own Redis connection (`service_kit::redis::connect_url`, with
//! `TCP_NODELAY` left as the services leave it), in the clear or over TLS. It is the Redis side
//! of the check that found PostgreSQL statements waiting ~40 ms for a delayed ACK over TLS
//! (docs/performance.md, "Forty milliseconds a statement"): redis-rs hands each command buffer
//! to the socket in one write, so nothing here waits. Run with
//! `cargo bench -p service-kit --bench redis_round_trip` against `BOURSE_BENCH_REDIS_URL`
//! (default the local server); over TLS, a `rediss://` URL and `BOURSE_BENCH_REDIS_TLS_CA`
//! (the PEM of the CA that signed the server's certificate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use redis::aio::ConnectionManager;
use secrecy::SecretString;

fn main() {
    divan::main();
}

fn connect(runtime: &tokio::runtime::Runtime) -> ConnectionManager {
    let url = std::env::var("BOURSE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ca = std::env::var("BOURSE_BENCH_REDIS_TLS_CA")
        .ok()
        .map(|path| std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}")));
    runtime
        .block_on(service_kit::redis::connect_url(
            &SecretString::from(url),
            ca.as_deref(),
        ))
        .unwrap_or_else(|err| panic!("connecting to Redis: {err}"))
}

/// `commands` `XADD`s of `bytes` each, in one pipeline, to a stream of this run's own.
fn pipeline(bencher: divan::Bencher, commands: usize, bytes: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut redis = connect(&runtime);
    let stream = format!("bench:redis_round_trip:{}", std::process::id());
    let body = "x".repeat(bytes);
    let mut batch = redis::pipe();
    for _ in 0..commands {
        batch
            .cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(1_000)
            .arg("*")
            .arg("envelope")
            .arg(&body);
    }
    bencher.bench_local(|| {
        runtime.block_on(async {
            let ids: Vec<String> = batch.query_async(&mut redis).await.unwrap();
            divan::black_box(ids)
        })
    });
    let _: () = runtime
        .block_on(redis::cmd("DEL").arg(&stream).query_async(&mut redis))
        .unwrap();
}

#[divan::bench(args = [1, 16, 256], sample_count = 50)]
fn pipelined_xadds_of_1_kb(bencher: divan::Bencher, commands: usize) {
    pipeline(bencher, commands, 1_000);
}

#[divan::bench(args = [40_000, 200_000], sample_count = 50)]
fn one_large_xadd(bencher: divan::Bencher, bytes: usize) {
    pipeline(bencher, 1, bytes);
}
