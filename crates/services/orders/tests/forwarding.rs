//! What a replica remembers when a command it forwarded to a symbol's owner fails (TRD-08,
//! ADR 0014 "Two tasks under one epoch"). While the command was on its way, this replica may
//! have taken the symbol over and started the book's task; the failure must forget the route
//! that failed — the old owner — and never that task. Forgetting it would leave it running for
//! the commands already in its queue while the next command starts a second task under the
//! same epoch: two books of one symbol, both passing the fence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::FutureExt;
use matching::Side;
use orders::ownership::LEASE;
use orders::store;
use service_kit::idempotency::Answer;
use service_kit::testing::{eventually, until_waiting_for_a_lock};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

mod database;
mod replica;

use database::{SYMBOL, orders_db};
use replica::Replica;

#[sqlx::test(migrations = false)]
async fn a_forward_that_fails_after_a_takeover_leaves_the_new_task_the_only_book(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let instrument = store::instrument(&pool, SYMBOL).await.unwrap().unwrap();
    // Another replica owns the symbol; the test plays it, and holds what is forwarded to it.
    let owner = HeldOwner::start().await;
    let other = Uuid::now_v7();
    store::renew_replica(&pool, other, &owner.url, LEASE)
        .await
        .unwrap();
    store::take_symbol(&pool, SYMBOL, 0, other).await.unwrap();
    let replica = Replica::start(&pool, &owner.url).await;

    // A command placed here goes to the owner, and waits there.
    let forwarded = tokio::spawn(replica.place(&instrument, Side::Buy));
    let answer_forwarded = owner.requests.lock().await.recv().await.unwrap();

    // Meanwhile the owner's lease runs out: this replica takes the symbol over and starts the
    // book's task.
    sqlx::query("UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    let books = tokio::spawn(replica.engines.clone().keep_books(replica.shutdown.clone()));
    eventually("this replica's matching task for the symbol", || async {
        replica.matching.running() == 1
    })
    .await;

    // Its first batch is under way (the test holds the fence its commit must pass) when the
    // forwarded command fails.
    let mut fence = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM symbol_owners WHERE symbol = $1 FOR UPDATE")
        .bind(SYMBOL)
        .execute(&mut *fence)
        .await
        .unwrap();
    let resting = tokio::spawn(replica.place(&instrument, Side::Sell));
    until_waiting_for_a_lock(&pool, "UPDATE symbol_owners").await;
    answer_forwarded.send(()).unwrap();
    let failed = forwarded.await.unwrap();
    assert!(failed.is_err(), "the owner answered 503: {failed:?}");

    // The replica still knows the book is here. Its mid is read at once, from what the task
    // last left: a replica that forgot the task would go looking for the owner, find itself,
    // and start a second task under the same epoch, whose first batch waits on the fence too.
    let mid = replica.engines.mid(&instrument).now_or_never();
    assert!(
        matches!(mid, Some(Ok(_))),
        "the failed forward made the replica forget the task it had started since"
    );

    // The next command joins the same book: it trades with the order queued ahead of it.
    let crossing = tokio::spawn(replica.place(&instrument, Side::Buy));
    fence.rollback().await.unwrap();
    assert_eq!(order_status(&resting.await.unwrap().unwrap()), "open");
    assert_eq!(order_status(&crossing.await.unwrap().unwrap()), "filled");
    let trades: i64 = sqlx::query_scalar("SELECT count(*) FROM trades")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(trades, 1);
    assert_eq!(replica.matching.running(), 1, "one book for the symbol");

    replica.shutdown.trigger();
    books.await.unwrap();
}

fn order_status(answer: &Answer) -> String {
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    body["status"].as_str().unwrap().to_owned()
}

/// The replica that owns the symbol, played by the test on a port of its own: it hands out
/// service tokens (as auth would) and holds every forwarded command until the test answers it
/// — then answers 503, as an owner shutting down does.
struct HeldOwner {
    url: String,
    /// One per forwarded command: send to let its 503 go.
    requests: tokio::sync::Mutex<mpsc::Receiver<oneshot::Sender<()>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HeldOwner {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HeldOwner {
    async fn start() -> Self {
        let (arrived, requests) = mpsc::channel(8);
        let app = axum::Router::new()
            .route(
                "/internal/v1/service-tokens",
                post(|| async {
                    Json(serde_json::json!({ "access_token": "token", "expires_in": 300 }))
                }),
            )
            .route("/internal/v1/matching/{symbol}", post(hold))
            .with_state(arrived);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            requests: tokio::sync::Mutex::new(requests),
            server,
        }
    }
}

async fn hold(
    State(arrived): State<mpsc::Sender<oneshot::Sender<()>>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (release, released) = oneshot::channel();
    arrived.send(release).await.unwrap();
    let _ = released.await;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "code": "shutting_down", "detail": "this replica is stopping" })),
    )
}
