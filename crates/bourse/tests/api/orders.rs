//! Order entry through the gateway (TRD-02, REL-07, REL-13, REL-16, SEC-06).

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;

use crate::helpers::{
    TestApp, Tokens, assert_problem, count, shed, spawn_app, spawn_app_with, spawn_replica_of,
};

/// An exchange with BTC-USD (tick 0.01, lot 0.0001) and two traders.
struct Market {
    app: TestApp,
    admin: Tokens,
    alice: Tokens,
    bob: Tokens,
}

async fn market_on(app: TestApp) -> Market {
    let admin = app
        .signed_up_with_roles("exchange-admin@example.com", &["admin"])
        .await;
    app.btc_usd(&admin).await;
    let alice = funded_trader(&app, &admin, "alice@example.com").await;
    let bob = funded_trader(&app, &admin, "bob@example.com").await;
    Market {
        app,
        admin,
        alice,
        bob,
    }
}

/// A trader with plenty for every test here; the funds checks are tested on their own.
async fn funded_trader(app: &TestApp, admin: &Tokens, email: &str) -> Tokens {
    let trader = app.signed_up(email).await;
    let account = app.user_id(&trader).await;
    app.deposit(admin, account, "USD", "10000000").await;
    app.deposit(admin, account, "BTC", "1000").await;
    trader
}

async fn market(pool: PgPool) -> Market {
    market_on(spawn_app(pool).await).await
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": price, "quantity": quantity, "time_in_force": "gtc" })
}

impl Market {
    /// Stalls the matching task: it waits for this lock when it writes its next order, until
    /// the transaction ends.
    async fn lock_orders(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut blocker = self.app.db.begin().await.unwrap();
        sqlx::query("LOCK TABLE orders.orders IN EXCLUSIVE MODE")
            .execute(&mut *blocker)
            .await
            .unwrap();
        blocker
    }

    /// Until PostgreSQL shows the matching task waiting on [`Market::lock_orders`]'s lock (a
    /// state, with no event to await).
    async fn until_matching_waits_on_the_lock(&self) {
        eventually("the matching task to block on the lock", || async {
            count(&self.app.db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orders' AND wait_event_type = 'Lock'").await > 0
        })
        .await;
    }

    /// Alice bids 0.1 at `price` in the background; the handle answers the status.
    fn alice_bids_in_background(&self, price: &str) -> tokio::task::JoinHandle<StatusCode> {
        let (client, url, token) = (
            self.app.client.clone(),
            self.app.url("/v1/orders"),
            self.alice.access_token.clone(),
        );
        let order = limit("buy", price, "0.1");
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&order)
                .send()
                .await
                .unwrap()
                .status()
        })
    }

    /// What `who` is shown held of `asset` by `GET /v1/balances`: what risk has reserved for
    /// their open orders (ADR 0023).
    async fn held(&self, who: &Tokens, asset: &str) -> String {
        let response = self.app.get_authed("/v1/balances", &who.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let balances: Vec<Value> = response.json().await.unwrap();
        balances
            .iter()
            .find(|b| b["asset"] == asset)
            .map(|b| b["held"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    async fn place_with_key(&self, who: &Tokens, key: &str, order: &Value) -> Response {
        self.app
            .client
            .post(self.app.url("/v1/orders"))
            .bearer_auth(&who.access_token)
            .header("idempotency-key", key)
            .json(order)
            .send()
            .await
            .unwrap()
    }

    async fn place(&self, who: &Tokens, order: &Value) -> Response {
        self.place_with_key(who, &uuid::Uuid::now_v7().to_string(), order)
            .await
    }

    async fn placed(&self, who: &Tokens, order: &Value) -> Value {
        let response = self.place(who, order).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        response.json().await.unwrap()
    }

    async fn order(&self, who: &Tokens, id: &str) -> Response {
        self.app
            .get_authed(&format!("/v1/orders/{id}"), &who.access_token)
            .await
    }

    /// The admin halts trading in `symbol`.
    async fn halt(&self, symbol: &str) {
        let halted = self
            .app
            .client
            .patch(self.app.url(&format!("/v1/admin/instruments/{symbol}")))
            .bearer_auth(&self.admin.access_token)
            .json(&json!({ "status": "halted" }))
            .send()
            .await
            .unwrap();
        assert_eq!(halted.status(), StatusCode::OK);
    }

    async fn cancel(&self, who: &Tokens, id: &str) -> Response {
        self.app
            .client
            .delete(self.app.url(&format!("/v1/orders/{id}")))
            .bearer_auth(&who.access_token)
            .send()
            .await
            .unwrap()
    }
}

#[sqlx::test(migrations = false)]
async fn two_traders_trade_at_the_makers_price(pool: PgPool) {
    let m = market(pool).await;
    let ask = m.placed(&m.alice, &limit("sell", "30000.00", "1.0")).await;
    assert_eq!(ask["status"], "open");
    assert_eq!(ask["quantity"], "1.00000000");
    assert_eq!(ask["price"], "30000.00");

    // Bob is willing to pay more; he trades at Alice's resting price.
    let bid = m.placed(&m.bob, &limit("buy", "30100.00", "0.4")).await;
    assert_eq!(bid["status"], "filled");
    assert_eq!(bid["filled_quantity"], "0.40000000");
    assert_eq!(bid["average_fill_price"], "30000.00");
    assert_eq!(bid["fills"][0]["price"], "30000.00");
    assert_eq!(bid["fills"][0]["liquidity"], "taker");
    assert_eq!(bid["fills"][0]["fee_asset"], "USD");

    let ask: Value = m
        .order(&m.alice, ask["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ask["status"], "partially_filled");
    assert_eq!(ask["filled_quantity"], "0.40000000");
    assert_eq!(ask["fills"][0]["liquidity"], "maker");
    assert_eq!(ask["fills"][0]["trade_id"], bid["fills"][0]["trade_id"]);

    // Nobody reads anyone else's order: it is simply not found.
    assert_problem(
        m.order(&m.bob, ask["id"].as_str().unwrap()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        m.cancel(&m.bob, ask["id"].as_str().unwrap()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let events: Vec<String> = sqlx::query_scalar("SELECT event_type FROM orders.outbox WHERE event_type LIKE 'Order%' OR event_type = 'TradeExecuted' ORDER BY position")
        .fetch_all(&m.app.db)
        .await
        .unwrap();
    assert_eq!(
        events,
        [
            "OrderAccepted",
            "OrderAccepted",
            "TradeExecuted",
            "OrderCompleted"
        ]
    );
}

/// The answer to a placed order is built in memory by the matching task (docs/performance.md);
/// it must be exactly what reading the order back returns, rounding and timestamps included.
#[sqlx::test(migrations = false)]
async fn a_placed_orders_answer_is_exactly_what_reading_it_back_returns(pool: PgPool) {
    let m = market(pool).await;
    m.placed(&m.alice, &limit("sell", "100.00", "0.0001")).await;
    m.placed(&m.alice, &limit("sell", "100.01", "0.0002")).await;

    // Sweeps both levels and rests the rest: average (100.00 + 2 × 100.01) / 3 = 100.0066…
    let bid = m.placed(&m.bob, &limit("buy", "100.01", "0.0005")).await;
    assert_eq!(bid["status"], "partially_filled");
    assert_eq!(bid["average_fill_price"], "100.01");
    assert_eq!(bid["fills"].as_array().unwrap().len(), 2);

    let read: Value = m
        .order(&m.bob, bid["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, bid);
}

#[sqlx::test(migrations = false)]
async fn the_idempotency_matrix(pool: PgPool) {
    let m = market(pool).await;
    let order = limit("buy", "29000.00", "0.1");

    let missing = m
        .app
        .client
        .post(m.app.url("/v1/orders"))
        .bearer_auth(&m.alice.access_token)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::BAD_REQUEST, "idempotency_key_missing").await;
    let too_long = m.place_with_key(&m.alice, &"k".repeat(256), &order).await;
    assert_problem(too_long, StatusCode::BAD_REQUEST, "idempotency_key_invalid").await;

    let first = m.place_with_key(&m.alice, "key-1", &order).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.unwrap();

    // Same key, same body (even reformatted): the first answer, replayed.
    let reordered = json!({ "time_in_force": "gtc", "quantity": "0.1", "price": "29000.00", "type": "limit", "side": "buy", "symbol": "BTC-USD" });
    let replay = m.place_with_key(&m.alice, "key-1", &reordered).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), first_body);

    // Same key, another body.
    let other = m
        .place_with_key(&m.alice, "key-1", &limit("buy", "29000.00", "0.2"))
        .await;
    assert_problem(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Keys are per principal: Bob's "key-1" is his own.
    assert_eq!(
        m.place_with_key(&m.bob, "key-1", &order).await.status(),
        StatusCode::CREATED
    );

    // A refused order is an answer too, and replays as such.
    let bad = limit("buy", "29000.001", "0.1");
    let refused = m.place_with_key(&m.alice, "key-2", &bad).await;
    let refused_body =
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_price").await;
    let again = m.place_with_key(&m.alice, "key-2", &bad).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, refused_body);

    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        2
    );
}

#[sqlx::test(migrations = false)]
async fn concurrent_requests_with_one_key_create_exactly_one_order(pool: PgPool) {
    let m = market(pool).await;
    let order = limit("sell", "31000.00", "0.5");
    let requests = (0..24).map(|_| m.place_with_key(&m.alice, "race", &order));
    let responses = futures_util::future::join_all(requests).await;
    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "idempotency_key_in_flight");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(created >= 1, "the winner (and possibly replays) answer 201");
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        1
    );
    // Only the winner reserved funds: a duplicate reaching this replica while the winner is
    // at work is turned away before its risk check, and later ones are replayed. (One that
    // had reserved would still show here: its reservation goes back through the outbox.)
    assert_eq!(m.held(&m.alice, "BTC").await, "0.50000000");
}

/// REL-03, REL-07 (ADR 0034): the gateway waits for orders no longer than orders' own timeout,
/// and a placement it stopped waiting for runs on to its end. The 504 says only that the answer
/// did not come in time: sent again with its Idempotency-Key, the placement is answered 409
/// while it is still at work, then with the order it became — booked once, its funds reserved.
#[sqlx::test(migrations = false)]
async fn a_placement_the_gateway_stopped_waiting_for_is_learnt_by_sending_it_again(pool: PgPool) {
    let m =
        market_on(spawn_app_with(pool, &[("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS", "300")]).await).await;
    m.placed(&m.bob, &limit("sell", "31000.00", "0.1")).await; // starts the BTC-USD task
    let order = limit("buy", "29000.00", "0.1");

    // The matching task waits for this lock when it writes Alice's order.
    let blocker = m.lock_orders().await;
    let cut_short = m.place_with_key(&m.alice, "slow", &order).await;
    assert_problem(cut_short, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
    m.until_matching_waits_on_the_lock().await;

    // Still at work: a retry is told so, and reserves nothing a second time.
    let retried = m.place_with_key(&m.alice, "slow", &order).await;
    assert_problem(retried, StatusCode::CONFLICT, "idempotency_key_in_flight").await;

    blocker.rollback().await.unwrap();
    eventually("Alice's order to be booked", || async {
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await == 2
    })
    .await;
    let learnt = m.place_with_key(&m.alice, "slow", &order).await;
    assert_eq!(learnt.status(), StatusCode::CREATED);
    assert_eq!(learnt.headers()["idempotent-replayed"], "true");
    let learnt: Value = learnt.json().await.unwrap();
    assert_eq!(
        (learnt["status"].as_str(), learnt["price"].as_str()),
        (Some("open"), Some("29000.00"))
    );
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        2,
        "Bob's ask and Alice's bid, once"
    );
    // 0.1 at 29,000.00 and the highest fee it may pay: reserved once, and kept.
    assert_eq!(m.held(&m.alice, "USD").await, "2905.80");
}

#[sqlx::test(migrations = false)]
async fn a_halt_through_one_replica_stops_orders_through_the_other(pool: PgPool) {
    // Each orders replica keeps the instruments it has read in memory (ADR 0025): the halt
    // reaches the other replica's copy by the notice its commit sends.
    let first = spawn_app(pool).await;
    let second = spawn_replica_of(&first).await;
    let m = market_on(first).await;
    let through_second = |order: Value| {
        second
            .client
            .post(second.url("/v1/orders"))
            .bearer_auth(&m.alice.access_token)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&order)
            .send()
    };
    // The second replica validated an order against BTC-USD, so it holds it in memory.
    let placed = through_second(limit("buy", "28000.00", "0.1"))
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);

    m.halt("BTC-USD").await;

    eventually(
        "the second replica to refuse the halted instrument",
        || async {
            let response = through_second(limit("buy", "28000.00", "0.1"))
                .await
                .unwrap();
            response.status() == StatusCode::UNPROCESSABLE_ENTITY
        },
    )
    .await;
    assert_problem(
        through_second(limit("buy", "28000.00", "0.1"))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "instrument_halted",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_duplicate_that_reached_another_replica_is_replayed_the_first_answer_and_its_reservation_released(
    pool: PgPool,
) {
    // Two platforms on one database and one Redis prefix: two orders replicas, as deployed.
    // The key is claimed only in the matching batch, so a duplicate that reached the other
    // replica gets as far as reserving funds before the batch tells the two apart.
    let first = spawn_app(pool).await;
    let second = spawn_replica_of(&first).await;
    let m = market_on(first).await;
    m.placed(&m.alice, &limit("buy", "28000.00", "0.1")).await; // starts the BTC-USD task
    let owner: String = sqlx::query_scalar(
        "SELECT r.address FROM orders.symbol_owners o JOIN orders.replicas r ON r.id = o.replica
          WHERE o.symbol = 'BTC-USD'",
    )
    .fetch_one(&m.app.db)
    .await
    .unwrap();
    // The original goes through the replica without the book (its command is forwarded), the
    // duplicate through the one with it.
    let (with_book, without_book) = if owner == m.app.orders {
        (&m.app, &second)
    } else {
        (&second, &m.app)
    };

    // Stall the original's batch where it claims the key: an uncommitted row of the same key
    // makes its insert wait (and, uncommitted, it is invisible to the duplicate's look-up).
    let alice = m.app.user_id(&m.alice).await;
    let mut blocker = m.app.db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO orders.idempotency_keys (principal_id, key, request_hash)
         VALUES ($1, 'race', '')",
    )
    .bind(alice)
    .execute(&mut *blocker)
    .await
    .unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    let order = limit("sell", "31000.00", "0.5");
    let send = |app: &TestApp| {
        let request = app
            .client
            .post(app.url("/v1/orders"))
            .bearer_auth(&m.alice.access_token)
            .header("idempotency-key", "race")
            .json(&order);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    let original = send(without_book);
    // Waiting on the blocker itself: any other lock wait of an orders replica (its relay, its
    // ownership of a symbol) would let the duplicate go first.
    eventually("the original's batch to wait on the key", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'orders' AND $1 = ANY (pg_blocking_pids(pid))",
        )
        .bind(blocker_pid)
        .fetch_one(&m.app.db)
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    // The duplicate finds no answer yet, so it is checked and reserves like the original.
    let duplicate = send(with_book);
    eventually("both requests' funds reserved", || async {
        m.held(&m.alice, "BTC").await == "1.00000000"
    })
    .await;

    blocker.rollback().await.unwrap();
    let original = original.await.unwrap();
    assert_eq!(original.status(), StatusCode::CREATED);
    assert!(original.headers().get("idempotent-replayed").is_none());
    let original = original.text().await.unwrap();
    let duplicate = duplicate.await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CREATED);
    assert_eq!(duplicate.headers()["idempotent-replayed"], "true");
    assert_eq!(duplicate.text().await.unwrap(), original);

    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        2,
        "the first order and the original, never the duplicate"
    );
    // The duplicate's reservation goes back (through the outbox); the original keeps its own.
    eventually("the duplicate's reservation released", || async {
        m.held(&m.alice, "BTC").await == "0.50000000"
    })
    .await;
    second.stop().await;
}

#[sqlx::test(migrations = false)]
async fn ioc_fok_and_post_only_behave(pool: PgPool) {
    let m = market(pool).await;
    m.placed(&m.alice, &limit("sell", "30000.00", "0.3")).await;

    let mut ioc = limit("buy", "30000.00", "0.5");
    ioc["time_in_force"] = json!("ioc");
    let ioc = m.placed(&m.bob, &ioc).await;
    assert_eq!(
        (ioc["status"].as_str(), ioc["filled_quantity"].as_str()),
        (Some("cancelled"), Some("0.30000000"))
    );

    m.placed(&m.alice, &limit("sell", "30000.00", "0.3")).await;
    let mut fok = limit("buy", "30000.00", "0.5");
    fok["time_in_force"] = json!("fok");
    let fok = m.placed(&m.bob, &fok).await;
    assert_eq!(
        (fok["status"].as_str(), fok["filled_quantity"].as_str()),
        (Some("cancelled"), Some("0.00000000"))
    );
    assert!(fok["fills"].as_array().unwrap().is_empty());

    let mut post_only = limit("buy", "30000.00", "0.1");
    post_only["post_only"] = json!(true);
    assert_problem(
        m.place(&m.bob, &post_only).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "post_only_would_take",
    )
    .await;
    assert_eq!(
        count(
            &m.app.db,
            "SELECT count(*) FROM orders.orders WHERE status = 'rejected'"
        )
        .await,
        1
    );

    let mut market_order = json!({ "symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.1", "time_in_force": "ioc" });
    let filled = m.placed(&m.bob, &market_order).await;
    assert_eq!(filled["status"], "filled");
    market_order["price"] = json!("1.00");
    assert_problem(
        m.place(&m.bob, &market_order).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "price_not_allowed",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn hostile_orders_are_refused_and_change_nothing(pool: PgPool) {
    let m = market(pool).await;
    let cases = [
        (
            limit("buy", "30000.001", "0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
        ),
        (
            limit("buy", "-1", "0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
        ),
        (
            limit("buy", "1e400", "0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
        ),
        (
            limit("buy", "99999999999999999999", "0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
        ),
        (
            limit("buy", "0", "0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
        ),
        (
            limit("buy", "30000", "0.00001"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
        (
            limit("buy", "30000", "-0.1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
        (
            limit("buy", "30000", "1000000"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity_out_of_range",
        ),
        (
            json!({ "symbol": "BTC-USD", "side": "buy", "type": "limit", "quantity": "0.1", "time_in_force": "gtc" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_required",
        ),
        (
            json!({ "symbol": "DOGE-USD", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "time_in_force": "gtc" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_symbol",
        ),
        (
            json!({ "symbol": "BTC-USD", "side": "up", "type": "limit", "price": "1", "quantity": "1", "time_in_force": "gtc" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "symbol": "BTC-USD", "side": "buy", "type": "limit", "price": 1, "quantity": "1", "time_in_force": "gtc" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "symbol": "BTC-USD", "side": "buy", "type": "limit", "price": "1", "quantity": "1", "time_in_force": "gtc", "leverage": 50 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (order, status, code) in cases {
        let response = m.place(&m.alice, &order).await;
        assert_eq!(response.status(), status, "{order}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{order}: {body}");
    }
    m.halt("BTC-USD").await;
    assert_problem(
        m.place(&m.alice, &limit("buy", "30000", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "instrument_halted",
    )
    .await;

    // Only traders place orders.
    let admin_order = m.place(&m.admin, &limit("buy", "30000", "0.1")).await;
    assert_problem(admin_order, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(
        m.order(&m.alice, "not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        0,
        "nothing was written"
    );
}

#[sqlx::test(migrations = false)]
async fn a_trader_cancels_a_resting_order_once(pool: PgPool) {
    let m = market(pool).await;
    let order = m.placed(&m.alice, &limit("buy", "29000.00", "0.2")).await;
    let id = order["id"].as_str().unwrap();
    let cancelled = m.cancel(&m.alice, id).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_problem(
        m.cancel(&m.alice, id).await,
        StatusCode::CONFLICT,
        "order_not_open",
    )
    .await;
    // The book no longer holds it: a crossing sell rests instead of trading.
    let sell = m.placed(&m.bob, &limit("sell", "29000.00", "0.2")).await;
    assert_eq!(sell["status"], "open");
}

#[sqlx::test(migrations = false)]
async fn a_reused_client_order_id_is_refused_and_leaves_no_trace_in_the_book(pool: PgPool) {
    let m = market(pool).await;
    let mut order = limit("buy", "29000.00", "0.1");
    order["client_order_id"] = json!("my-ref-1");
    let first = m.placed(&m.alice, &order).await;
    assert_eq!(first["client_order_id"], "my-ref-1");

    let mut again = limit("buy", "29500.00", "0.3");
    again["client_order_id"] = json!("my-ref-1");
    assert_problem(
        m.place(&m.alice, &again).await,
        StatusCode::CONFLICT,
        "client_order_id_taken",
    )
    .await;

    // The refused order never rests: a sell at 29500 does not trade with it.
    let sell = m.placed(&m.bob, &limit("sell", "29500.00", "0.3")).await;
    assert_eq!(sell["status"], "open");
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.trades").await,
        0
    );
}

#[sqlx::test(migrations = false)]
async fn after_a_restart_the_book_is_identical_including_time_priority(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let prefix = first.redis_prefix.clone();
    let m = market_on(first).await;
    let early = m.placed(&m.alice, &limit("sell", "30000.00", "0.2")).await;
    let late = m.placed(&m.bob, &limit("sell", "30000.00", "0.2")).await;
    m.placed(&m.bob, &limit("sell", "30000.00", "0.1")).await;
    // A third trader takes 0.1 of the early order (Alice buying would self-trade).
    let carol = funded_trader(&m.app, &m.admin, "carol@example.com").await;
    let partly = m.placed(&carol, &limit("buy", "30000.00", "0.1")).await;
    assert_eq!(partly["status"], "filled");
    let carol_session = carol.refresh_token.clone();
    let book_before: Value = m
        .app
        .get("/v1/markets/BTC-USD/book")
        .await
        .json()
        .await
        .unwrap();
    let orders_before = count(&m.app.db, "SELECT count(*) FROM orders.orders").await;
    // A clean stop: the replica gives its books up as it goes (a killed one's are taken over
    // when its lease runs out, which the fault suite covers).
    m.app.stop().await;

    // A new process on the same database rebuilds the book from it.
    let second =
        market_on(spawn_app_with(pool, &[("BOURSE_REDIS_KEY_PREFIX", prefix.as_str())]).await)
            .await;
    // The same book, the same orders: nothing lost, nothing doubled.
    let book_after: Value = second
        .app
        .get("/v1/markets/BTC-USD/book")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(book_after, book_before);
    assert_eq!(
        count(&second.app.db, "SELECT count(*) FROM orders.orders").await,
        orders_before
    );

    // Carol's session survives the restart too.
    let buyer: Tokens = second
        .app
        .refresh(&carol_session)
        .await
        .json()
        .await
        .unwrap();
    let sweep = second
        .placed(&buyer, &limit("buy", "30000.00", "0.5"))
        .await;
    let makers: Vec<String> =
        sqlx::query_scalar("SELECT maker_order_id::text FROM orders.trades ORDER BY sequence")
            .fetch_all(&second.app.db)
            .await
            .unwrap();
    // The partly filled early order first (with only its remaining 0.1), then the later one.
    assert_eq!(
        makers[1..3],
        [
            early["id"].as_str().unwrap().to_owned(),
            late["id"].as_str().unwrap().to_owned()
        ]
    );
    assert_eq!(
        sweep["filled_quantity"], "0.40000000",
        "0.1 left of the early order + 0.2 + 0.1"
    );
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM orders.trades ORDER BY sequence")
            .fetch_all(&second.app.db)
            .await
            .unwrap();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers continue after the restart"
    );
}

/// A book's sequence only moves forward, across a restart too: a client comparing snapshots,
/// or an event's place in its order's history, never sees a number given out twice. The last
/// events before the stop are a cancel's, which leave no order or trade row holding their
/// sequence — the book resumes from the one its last batch stored with its owner.
#[sqlx::test(migrations = false)]
async fn a_books_sequence_never_goes_back_across_a_restart(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let prefix = first.redis_prefix.clone();
    let m = market_on(first).await;
    let resting = m.placed(&m.alice, &limit("sell", "31000.00", "0.1")).await;
    m.placed(&m.bob, &limit("buy", "29000.00", "0.1")).await;
    let cancelled = m.cancel(&m.alice, resting["id"].as_str().unwrap()).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let before = book_sequence(&m.app).await.unwrap();
    m.app.stop().await;

    let second =
        market_on(spawn_app_with(pool, &[("BOURSE_REDIS_KEY_PREFIX", prefix.as_str())]).await)
            .await;
    assert_eq!(
        book_sequence(&second.app).await,
        Some(before),
        "the rebuilt book goes on from where the stopped one was"
    );
    second
        .placed(&second.bob, &limit("buy", "28000.00", "0.1"))
        .await;
    // The events of the book, in the order they were written: their sequences never go back.
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT (envelope::jsonb ->> 'sequence')::int8 FROM orders.outbox
          WHERE event_type IN ('OrderAccepted', 'OrderCancelled', 'TradeExecuted')
          ORDER BY position",
    )
    .fetch_all(&second.app.db)
    .await
    .unwrap();
    assert_eq!(
        sequences.len(),
        4,
        "three placed, one cancelled: {sequences:?}"
    );
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "a sequence given out again after the restart: {sequences:?}"
    );
}

async fn book_sequence(app: &TestApp) -> Option<u64> {
    let book: Value = app
        .get("/v1/markets/BTC-USD/book")
        .await
        .json()
        .await
        .unwrap();
    book["sequence"].as_u64()
}

/// The ticker's volume is the last 24 hours' by the minute (migration `volume_by_minute`): every
/// trade counts once in its minute, and a minute older than a day drops out — while the last
/// price stays the last trade's, however old.
#[sqlx::test(migrations = false)]
async fn the_tickers_volume_counts_the_last_24_hours_of_trades(pool: PgPool) {
    let m = market(pool).await;
    m.placed(&m.alice, &limit("sell", "30000.00", "0.5")).await;
    m.placed(&m.alice, &limit("sell", "30010.00", "0.5")).await;
    // One taker that fills against both makers, and one more trade: three trades, 0.7 in all.
    m.placed(&m.bob, &limit("buy", "30010.00", "0.6")).await;
    m.placed(&m.bob, &limit("buy", "30010.00", "0.1")).await;
    assert_eq!(
        ticker(&m.app).await,
        (json!("30010.00"), json!("0.70000000"))
    );
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.trades").await,
        3
    );

    // A day passes (the minutes' rows grow older, as the clock would make them): the volume
    // drops out, the last price does not.
    sqlx::query("UPDATE orders.volume_by_minute SET minute = minute - interval '1 day 1 minute'")
        .execute(&m.app.db)
        .await
        .unwrap();
    assert_eq!(
        ticker(&m.app).await,
        (json!("30010.00"), json!("0.00000000"))
    );

    // A new trade counts in a minute of its own.
    m.placed(&m.alice, &limit("sell", "29990.00", "0.2")).await;
    m.placed(&m.bob, &limit("buy", "29990.00", "0.2")).await;
    assert_eq!(
        ticker(&m.app).await,
        (json!("29990.00"), json!("0.20000000"))
    );
}

/// A trader's own trades page newest first across the trades it made as maker and as taker
/// (read down two indexes and merged, migration `trades_by_account`), each once, and never
/// another trader's.
#[sqlx::test(migrations = false)]
async fn own_trades_page_newest_first_across_maker_and_taker(pool: PgPool) {
    let m = market(pool).await;
    // Alice makes, then takes, then makes, then takes: four trades at rising prices.
    for (price, alice_makes) in [
        ("30000.00", true),
        ("30010.00", false),
        ("30020.00", true),
        ("30030.00", false),
    ] {
        let (maker, taker) = if alice_makes {
            (&m.alice, &m.bob)
        } else {
            (&m.bob, &m.alice)
        };
        let (maker_side, taker_side) = if alice_makes {
            ("sell", "buy")
        } else {
            ("buy", "sell")
        };
        m.placed(maker, &limit(maker_side, price, "0.1")).await;
        m.placed(taker, &limit(taker_side, price, "0.1")).await;
    }

    let (first, cursor) = own_trades_page(&m.app, &m.alice, "?limit=3").await;
    assert_eq!(
        first,
        [
            ("30030.00", "taker"),
            ("30020.00", "maker"),
            ("30010.00", "taker"),
        ]
        .map(|(p, l)| (p.to_owned(), l.to_owned()))
    );
    let cursor = cursor.expect("a fourth trade is left");
    let (rest, after) =
        own_trades_page(&m.app, &m.alice, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(rest, [("30000.00".to_owned(), "maker".to_owned())]);
    assert_eq!(after, None);
    // Bob's side of the same four, from his own view.
    let (bobs, _) = own_trades_page(&m.app, &m.bob, "?limit=10").await;
    let liquidity: Vec<&str> = bobs.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(liquidity, ["maker", "taker", "maker", "taker"]);
}

/// docs/stream.md, "Reconnecting": a client whose stream closed asks for the trades after the
/// last one it saw, page by page, and gets each trade it missed once, oldest first.
#[sqlx::test(migrations = false)]
async fn a_client_that_lost_its_stream_catches_up_on_the_trades_after_the_last_it_saw(
    pool: PgPool,
) {
    let m = market(pool).await;
    m.placed(&m.alice, &limit("sell", "30000.00", "0.5")).await;
    for _ in 0..5 {
        m.placed(&m.bob, &limit("buy", "30000.00", "0.1")).await;
    }
    let trades = |query: String| {
        let app = &m.app;
        async move {
            let response = app.get(&format!("/v1/markets/BTC-USD/trades{query}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            let trades: Vec<Value> = response.json().await.unwrap();
            trades
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mut in_order = trades(String::new()).await;
    in_order.reverse();
    assert_eq!(in_order.len(), 5, "newest first without `after`");

    // The client saw the first trade; it pages through the rest, two at a time.
    let mut caught_up = Vec::new();
    let mut last = in_order[0].clone();
    // Bounded: a page that repeated a trade would otherwise never end.
    for _ in 0..in_order.len() {
        let page = trades(format!("?after={last}&limit=2")).await;
        assert!(page.len() <= 2);
        let Some(newest) = page.last() else { break };
        last = newest.clone();
        caught_up.extend(page);
    }
    assert_eq!(
        caught_up,
        in_order[1..],
        "each missed trade once, oldest first"
    );
    assert!(trades(format!("?after={}", in_order[4])).await.is_empty());

    // A trade this symbol never had, bounds and shapes outside the contract: refused, 4xx.
    let unknown = format!("after={}", uuid::Uuid::now_v7());
    let refused = [
        (unknown.as_str(), StatusCode::NOT_FOUND, "unknown_trade"),
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"),
        (
            "limit=501",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        ),
        (
            "limit=-1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        ),
        ("after=yesterday", StatusCode::BAD_REQUEST, "invalid_query"),
        ("limit=many", StatusCode::BAD_REQUEST, "invalid_query"),
        ("since=1", StatusCode::BAD_REQUEST, "invalid_query"),
    ];
    for (query, status, code) in refused {
        let response = m
            .app
            .get(&format!("/v1/markets/BTC-USD/trades?{query}"))
            .await;
        assert_problem(response, status, code).await;
    }
    let unknown_symbol = m
        .app
        .get(&format!(
            "/v1/markets/DOGE-USD/trades?after={}",
            in_order[0]
        ))
        .await;
    assert_problem(unknown_symbol, StatusCode::NOT_FOUND, "not_found").await;
}

#[sqlx::test(migrations = false)]
async fn market_data_shows_the_book_trades_and_ticker(pool: PgPool) {
    let m = market(pool).await;
    m.placed(&m.alice, &limit("sell", "30010.00", "0.5")).await;
    m.placed(&m.alice, &limit("sell", "30020.00", "0.3")).await;
    m.placed(&m.alice, &limit("sell", "30010.00", "0.2")).await;
    m.placed(&m.bob, &limit("buy", "29990.00", "0.4")).await;
    m.placed(&m.bob, &limit("buy", "30010.00", "0.1")).await;

    let book: Value = m
        .app
        .get("/v1/markets/BTC-USD/book?depth=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(book["symbol"], "BTC-USD");
    assert_eq!(book["bids"], json!([["29990.00", "0.40000000"]]));
    assert_eq!(
        book["asks"],
        json!([["30010.00", "0.60000000"], ["30020.00", "0.30000000"]]),
        "best first, aggregated"
    );
    assert!(book["sequence"].as_u64().unwrap() > 0);

    let trades: Value = m
        .app
        .get("/v1/markets/BTC-USD/trades")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(trades.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            trades[0]["price"].as_str(),
            trades[0]["taker_side"].as_str()
        ),
        (Some("30010.00"), Some("buy"))
    );

    let ticker: Value = m
        .app
        .get("/v1/markets/BTC-USD/ticker")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        ticker,
        json!({ "last": "30010.00", "best_bid": "29990.00", "best_ask": "30010.00", "volume_24h": "0.10000000" })
    );

    let unknown = m.app.get("/v1/markets/DOGE-USD/book").await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let too_deep = m.app.get("/v1/markets/BTC-USD/book?depth=1000").await;
    assert_problem(too_deep, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;
}

#[sqlx::test(migrations = false)]
async fn traders_page_through_their_own_orders_and_trades_and_cancel_all(pool: PgPool) {
    let m = market(pool).await;
    let mut ids = Vec::new();
    for price in ["29000.00", "29100.00", "29200.00", "29300.00", "29400.00"] {
        ids.push(
            m.placed(&m.alice, &limit("buy", price, "0.1")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    m.placed(&m.bob, &limit("sell", "29400.00", "0.1")).await;

    let page: Value = m
        .app
        .get_authed("/v1/orders?limit=2", &m.alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[4].as_str(), ids[3].as_str()], "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = m
        .app
        .get_authed(
            &format!("/v1/orders?limit=2&cursor={cursor}"),
            &m.alice.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let second: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [ids[2].as_str(), ids[1].as_str()]);
    let filled: Value = m
        .app
        .get_authed("/v1/orders?status=filled", &m.alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filled["items"][0]["id"], ids[4].as_str());
    assert_eq!(filled["items"][0]["fills"][0]["liquidity"], "maker");
    // Resting orders page too (read from their own index), the filled one left out.
    let open = |query: String| {
        let app = &m.app;
        let token = &m.alice.access_token;
        async move {
            let page: Value = app
                .get_authed(&format!("/v1/orders?{query}"), token)
                .await
                .json()
                .await
                .unwrap();
            page
        }
    };
    let page = open("status=open&symbol=BTC-USD&limit=2".to_owned()).await;
    assert_eq!(page["items"][0]["id"], ids[3].as_str());
    assert_eq!(page["items"][1]["id"], ids[2].as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = open(format!("status=open&limit=2&cursor={cursor}")).await;
    assert_eq!(page["items"][0]["id"], ids[1].as_str());
    assert_eq!(page["items"][1]["id"], ids[0].as_str());

    // Bob sees only his own orders and trades.
    let bobs: Value = m
        .app
        .get_authed("/v1/orders", &m.bob.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1);
    // Another trader's order is no place in Alice's list: an empty page, not Bob's position.
    let bobs_order = bobs["items"][0]["id"].as_str().unwrap();
    let page = open(format!("cursor={bobs_order}")).await;
    assert_eq!(page["items"], json!([]));
    let trades: Value = m
        .app
        .get_authed("/v1/trades", &m.alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            trades["items"][0]["side"].as_str(),
            trades["items"][0]["liquidity"].as_str()
        ),
        (Some("buy"), Some("maker"))
    );
    // A fill shows the fee settlement books, the same figure as inside its order.
    assert_eq!(
        trades["items"][0]["fee"],
        filled["items"][0]["fills"][0]["fee"]
    );
    assert_eq!(trades["items"][0]["fee_asset"], "USD");
    let trades: Value = m
        .app
        .get_authed("/v1/trades", &m.bob.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            trades["items"][0]["side"].as_str(),
            trades["items"][0]["liquidity"].as_str()
        ),
        (Some("sell"), Some("taker"))
    );
    assert_eq!(
        trades["items"][0]["fee"],
        bobs["items"][0]["fills"][0]["fee"]
    );
    assert_ne!(trades["items"][0]["fee"], "0.00", "a taker pays a fee");

    let bad = m
        .app
        .get_authed("/v1/orders?limit=0", &m.alice.access_token)
        .await;
    // Out of range is refused (422), not clamped; not a status at all is malformed (400).
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;
    let bad = m
        .app
        .get_authed("/v1/orders?limit=101", &m.alice.access_token)
        .await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query").await;
    let bad = m
        .app
        .get_authed("/v1/orders?status=lost", &m.alice.access_token)
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_query").await;

    let cancelled: Value = m
        .app
        .client
        .delete(m.app.url("/v1/orders?symbol=BTC-USD"))
        .bearer_auth(&m.alice.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled, json!({ "cancelled": 4 }));
    let book: Value = m
        .app
        .get("/v1/markets/BTC-USD/book")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(book["bids"], json!([]));
    assert_eq!(
        count(
            &m.app.db,
            "SELECT count(*) FROM orders.orders WHERE status = 'cancelled'"
        )
        .await,
        4
    );
}

#[sqlx::test(migrations = false)]
async fn concurrent_orders_sharing_a_client_order_id_yield_one_winner(pool: PgPool) {
    let m = market(pool).await;
    // Ten orders at once; two of them claim the same client_order_id. However the matching
    // task batches them, exactly one of the two wins and every other order is unaffected.
    let orders: Vec<Value> = (0..10)
        .map(|i| {
            let mut order = limit("buy", &format!("2900{i}.00"), "0.1");
            order["client_order_id"] = json!(if i < 2 {
                "shared".to_owned()
            } else {
                format!("own-{i}")
            });
            order
        })
        .collect();
    let responses =
        futures_util::future::join_all(orders.iter().map(|o| m.place(&m.alice, o))).await;
    let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        9,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        9
    );

    // The book holds exactly the nine stored orders.
    let book: Value = m
        .app
        .get("/v1/markets/BTC-USD/book?depth=20")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(book["bids"].as_array().unwrap().len(), 9);
}

#[sqlx::test(migrations = false)]
async fn an_order_that_would_trade_with_its_own_account_is_cancelled(pool: PgPool) {
    let m = market(pool).await;
    let ask = m.placed(&m.alice, &limit("sell", "30000.00", "0.2")).await;
    let own_bid = m.placed(&m.alice, &limit("buy", "30000.00", "0.1")).await;
    assert_eq!(
        own_bid["status"], "cancelled",
        "self-trade prevention cancels the incoming order"
    );
    assert!(own_bid["fills"].as_array().unwrap().is_empty());
    let ask: Value = m
        .order(&m.alice, ask["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ask["status"], "open", "the resting order stays");
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.trades").await,
        0
    );
}

/// REL-06: the gateway sheds what it cannot take, but the operators have permits of their own —
/// an overloaded platform is when a risk officer needs the kill switch most — on every
/// upstream, the overloaded one too.
#[sqlx::test(migrations = false)]
async fn a_gateway_full_of_orders_still_admits_the_kill_switch(pool: PgPool) {
    let m = market_on(
        spawn_app_with(
            pool,
            &[
                ("BOURSE_GATEWAY_MAX_IN_FLIGHT", "1"),
                ("BOURSE_GATEWAY_ADMIN_MAX_IN_FLIGHT", "1"),
                ("BOURSE_GATEWAY_QUEUE_DEADLINE_MS", "20"),
            ],
        )
        .await,
    )
    .await;
    m.placed(&m.alice, &limit("buy", "28000.00", "0.1")).await; // starts the BTC-USD task
    let alice_id = m.app.user_id(&m.alice).await;

    // An order that cannot finish holds the traffic's one permit: the matching task waits
    // for this lock when it writes it.
    let blocker = m.lock_orders().await;
    let stalled = m.alice_bids_in_background("28001.00");
    m.until_matching_waits_on_the_lock().await;

    // Traffic is shed at once...
    let refused = m.place(&m.bob, &limit("sell", "29000.00", "0.1")).await;
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    // ...while the operators' lane is free: the kill switch goes through.
    let killed = m
        .app
        .client
        .post(m.app.url("/v1/admin/kill-switches"))
        .bearer_auth(&m.admin.access_token)
        .json(&json!({ "scope": "account", "target": alice_id, "reason": "runaway algo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), StatusCode::CREATED);
    // And on orders itself, whose traffic permit is taken: an operator's route takes the
    // operators' permit of orders.
    let created = m
        .app
        .client
        .post(m.app.url("/v1/admin/instruments"))
        .bearer_auth(&m.admin.access_token)
        .json(
            &json!({ "symbol": "ETH-USD", "base_asset": "ETH", "quote_asset": "USD",
                       "tick_size": "0.01", "lot_size": "0.0001" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    // (The recorder is the test binary's, shared by tests running beside this one: at least.)
    let shed = shed(&m.app.metrics().await, "traffic", "orders");
    assert!(
        shed >= 1.0,
        "the order counted as shed in the traffic's lane: {shed}"
    );

    // The stalled order was admitted before the switch, and is stored once the lock goes.
    blocker.rollback().await.unwrap();
    assert_eq!(stalled.await.unwrap(), StatusCode::CREATED);
}

#[sqlx::test(migrations = false)]
async fn a_full_matching_queue_sheds_orders_with_503(pool: PgPool) {
    let m = market_on(spawn_app_with(pool, &[("BOURSE_ORDERS_QUEUE_CAPACITY", "2")]).await).await;
    m.placed(&m.alice, &limit("buy", "28000.00", "0.1")).await; // starts the BTC-USD task

    // Stall the matching task: it will wait for this lock when it writes the next order.
    let blocker = m.lock_orders().await;
    let send = |price: &'static str| m.alice_bids_in_background(price);
    let stalled = send("28001.00");
    m.until_matching_waits_on_the_lock().await;

    // The task holds one order; two more fit in the queue; the third is shed at once — so
    // while the task is blocked, exactly one of these three requests can finish: await it.
    let (shed, _, waiting) =
        futures_util::future::select_all([send("28002.00"), send("28003.00"), send("28004.00")])
            .await;
    assert_eq!(shed.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waiting.iter().all(|h| !h.is_finished()),
        "only one was shed"
    );

    blocker.rollback().await.unwrap();
    assert_eq!(stalled.await.unwrap(), StatusCode::CREATED);
    for handle in waiting {
        assert_eq!(
            handle.await.unwrap(),
            StatusCode::CREATED,
            "queued, not lost"
        );
    }
    assert_eq!(
        count(&m.app.db, "SELECT count(*) FROM orders.orders").await,
        4,
        "1 before + stalled + 2 queued"
    );
    // The shed order's funds were reserved before it met the full queue: its claim is
    // withdrawn and the reservation given back (through the outbox), never left without an
    // order. What stays reserved is exactly what the four stored bids need.
    let prices: Vec<i64> = sqlx::query_scalar("SELECT price FROM orders.orders")
        .fetch_all(&m.app.db)
        .await
        .unwrap();
    let reserved: i64 = prices
        .iter()
        .map(|price| {
            contracts::fees::hold_amount(
                contracts::Side::Buy,
                *price,
                10_000_000,
                8,
                contracts::fees::Fees::DEFAULT,
            )
            .unwrap()
        })
        .sum();
    let expected = contracts::format_units(reserved, 2);
    eventually("the shed order's reservation released", || async {
        m.held(&m.alice, "USD").await == expected
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn idempotency_keys_are_kept_a_day_then_purged(pool: PgPool) {
    let m = market(pool).await;
    m.place_with_key(&m.alice, "old-key", &limit("buy", "29000.00", "0.1"))
        .await;
    m.place_with_key(&m.alice, "new-key", &limit("buy", "29000.00", "0.1"))
        .await;
    sqlx::query("UPDATE orders.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old-key'")
        .execute(&m.app.db)
        .await
        .unwrap();

    let orders_pool = crate::helpers::schema_pool(&m.app.db, "orders").await;
    let purged =
        service_kit::idempotency::purge(&orders_pool, std::time::Duration::from_secs(24 * 3600))
            .await
            .unwrap();
    assert_eq!(purged, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM orders.idempotency_keys")
        .fetch_all(&m.app.db)
        .await
        .unwrap();
    assert_eq!(keys, ["new-key"], "a key younger than 24 h is kept");
}

/// The ticker's last price and 24-hour volume.
async fn ticker(app: &TestApp) -> (Value, Value) {
    let ticker: Value = app
        .get("/v1/markets/BTC-USD/ticker")
        .await
        .json()
        .await
        .unwrap();
    (ticker["last"].clone(), ticker["volume_24h"].clone())
}

/// A page of `who`'s own trades: (price, liquidity) of each, newest first, and the next cursor.
async fn own_trades_page(
    app: &TestApp,
    who: &Tokens,
    query: &str,
) -> (Vec<(String, String)>, Option<String>) {
    let page: Value = app
        .get_authed(&format!("/v1/trades{query}"), &who.access_token)
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["price"].as_str().unwrap().to_owned(),
                t["liquidity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (items, page["next_cursor"].as_str().map(str::to_owned))
}
