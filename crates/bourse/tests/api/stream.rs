//! The WebSocket stream (TRD-09) with a real WebSocket client (tokio-tungstenite) through the
//! gateway: authentication, own orders only, public trades, books with gap-free sequences that
//! never go back, a burst larger than a client's queue delivered whole to a client that keeps
//! reading, and a client that stops reading is cut off while the others keep receiving.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestApp, Tokens, spawn_app_with};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// BTC-USD, an admin and two funded traders.
struct Market {
    app: TestApp,
    alice: Tokens,
    bob: Tokens,
}

async fn market(pool: PgPool, env: &[(&str, &str)]) -> Market {
    let app = spawn_app_with(pool, env).await;
    let (_, alice, bob) = app.funded_market().await;
    Market { app, alice, bob }
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": price,
            "quantity": quantity, "time_in_force": "gtc" })
}

fn stream_url(app: &TestApp) -> String {
    format!("{}/v1/stream", app.gateway.replacen("http", "ws", 1))
}

/// Opens a stream, authenticated by header when `token` is given.
async fn open(app: &TestApp, token: Option<&str>) -> Result<Socket, WsError> {
    let mut request = stream_url(app).into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// An authenticated stream subscribed to `channels`, with the acknowledgements read.
async fn subscribed(app: &TestApp, who: &Tokens, channels: &[&str]) -> (Socket, Vec<Value>) {
    let mut socket = open(app, Some(&who.access_token)).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "authenticated");
    send(
        &mut socket,
        json!({ "op": "subscribe", "channels": channels }),
    )
    .await;
    let mut before = Vec::new();
    loop {
        let message = next(&mut socket).await;
        if message["type"] == "subscribed" {
            return (socket, before);
        }
        before.push(message);
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message (pings are answered by the client library as it reads).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("the stream is open")
            .unwrap();
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Messages until `done` holds for the collected ones.
async fn until(socket: &mut Socket, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while !done(&seen) {
        seen.push(next(socket).await);
    }
    seen
}

/// The close code the server ended the session with.
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("closed within 20 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[sqlx::test(migrations = false)]
async fn only_authenticated_clients_get_a_stream(pool: PgPool) {
    let m = market(pool, &[]).await;

    // A forged token is refused before the upgrade.
    match open(&m.app, Some("not.a.token")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::UNAUTHORIZED),
        other => panic!("expected 401, got {other:?}"),
    }
    // Without a header, the first message must authenticate.
    let mut anonymous = open(&m.app, None).await.unwrap();
    send(
        &mut anonymous,
        json!({ "op": "subscribe", "channels": ["orders"] }),
    )
    .await;
    assert_eq!(close_code(&mut anonymous).await, 1008);
    let mut forged = open(&m.app, None).await.unwrap();
    send(&mut forged, json!({ "op": "auth", "token": "forged" })).await;
    assert_eq!(close_code(&mut forged).await, 1008);

    let mut socket = open(&m.app, None).await.unwrap();
    send(
        &mut socket,
        json!({ "op": "auth", "token": m.alice.access_token }),
    )
    .await;
    let welcome = next(&mut socket).await;
    assert_eq!(welcome["type"], "authenticated");
    assert_eq!(
        welcome["account_id"],
        m.app.user_id(&m.alice).await.to_string()
    );
    // Hostile messages get an error, not a crash.
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["code"], "bad_message");
    send(
        &mut socket,
        json!({ "op": "subscribe", "channels": ["orders:someone-else"] }),
    )
    .await;
    assert_eq!(next(&mut socket).await["code"], "unknown_channel");
    send(
        &mut socket,
        json!({ "op": "subscribe", "channels": ["book:NOPE-USD"] }),
    )
    .await;
    assert_eq!(next(&mut socket).await["code"], "unknown_symbol");
}

#[sqlx::test(migrations = false)]
async fn a_trader_sees_its_own_orders_and_public_trades_never_anothers_orders(pool: PgPool) {
    let m = market(pool, &[]).await;
    let (mut alice, _) = subscribed(&m.app, &m.alice, &["orders", "trades:BTC-USD"]).await;
    let (mut bob, _) = subscribed(&m.app, &m.bob, &["orders"]).await;

    let sell = m
        .app
        .placed_order(&m.alice, &limit("sell", "30000.00", "0.5"))
        .await;
    let buy = m
        .app
        .placed_order(&m.bob, &limit("buy", "30000.00", "0.5"))
        .await;
    // Bob rests another order; then Alice one of hers. Whatever Alice's stream carries
    // before her own second order arrives is all it will ever carry of this period.
    let bobs_rest = m
        .app
        .placed_order(&m.bob, &limit("buy", "29000.00", "0.1"))
        .await;
    let alices_rest = m
        .app
        .placed_order(&m.alice, &limit("sell", "31000.00", "0.1"))
        .await;

    let seen = until(&mut alice, |seen| {
        seen.iter()
            .any(|v| v["type"] == "order_accepted" && v["data"]["order_id"] == alices_rest["id"])
    })
    .await;
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|v| (v["channel"].as_str().unwrap(), v["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("orders", "order_accepted"),
            ("trades:BTC-USD", "trade"),
            ("orders", "fill"),
            ("orders", "order_completed"),
            ("orders", "order_accepted"),
        ]
    );
    for message in seen.iter().filter(|v| v["channel"] == "orders") {
        let order = &message["data"]["order_id"];
        assert!(
            order == &sell["id"] || order == &alices_rest["id"],
            "not Alice's: {message}"
        );
        assert_ne!(order, &bobs_rest["id"]);
    }
    // The fill as Alice booked it, the trade as the market saw it.
    let fill = &seen[2]["data"];
    assert_eq!(
        (fill["liquidity"].as_str(), fill["side"].as_str()),
        (Some("maker"), Some("sell"))
    );
    assert_eq!(
        (fill["price"].as_str(), fill["quantity"].as_str()),
        (Some("30000.00"), Some("0.50000000"))
    );
    let trade = &seen[1]["data"];
    assert_eq!(trade["taker_side"], "buy");
    assert_eq!(trade["price"], "30000.00");
    // Consecutive per channel.
    let orders: Vec<u64> = seen
        .iter()
        .filter(|v| v["channel"] == "orders")
        .map(|v| v["sequence"].as_u64().unwrap())
        .collect();
    assert!(orders.windows(2).all(|w| w[1] == w[0] + 1), "{orders:?}");

    // Bob's stream has his side of the same trade.
    let bobs = until(&mut bob, |seen| seen.iter().any(|v| v["type"] == "fill")).await;
    let fill = bobs.iter().find(|v| v["type"] == "fill").unwrap();
    assert_eq!(fill["data"]["order_id"], buy["id"]);
    assert_eq!(fill["data"]["liquidity"], "taker");
}

#[sqlx::test(migrations = false)]
async fn a_book_is_a_snapshot_then_updates_with_gap_free_sequences(pool: PgPool) {
    let m = market(pool, &[]).await;
    m.app
        .placed_order(&m.alice, &limit("sell", "30100.00", "1"))
        .await;
    let (mut socket, before) = subscribed(&m.app, &m.bob, &["book:BTC-USD"]).await;
    let snapshot = &before[0];
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["data"]["asks"],
        json!([["30100.00", "1.00000000"]])
    );
    assert_eq!(snapshot["data"]["bids"], json!([]));

    for price in ["29900.00", "29800.00", "29700.00"] {
        m.app
            .placed_order(&m.alice, &limit("buy", price, "0.2"))
            .await;
    }
    m.app
        .placed_order(&m.bob, &limit("sell", "29900.00", "0.2"))
        .await;

    let final_bids = json!([["29800.00", "0.20000000"], ["29700.00", "0.20000000"]]);
    let updates = until(&mut socket, |seen| {
        seen.last().is_some_and(|u| u["data"]["bids"] == final_bids)
    })
    .await;
    assert!(updates.len() >= 2, "one update per batch: {updates:?}");
    let mut last = snapshot["sequence"].as_u64().unwrap();
    for update in &updates {
        assert_eq!(update["channel"], "book:BTC-USD");
        assert_eq!(update["type"], "update");
        assert_eq!(
            update["data"]["previous_sequence"], last,
            "no gap: {update}"
        );
        assert!(update["sequence"].as_u64().unwrap() > last);
        last = update["sequence"].as_u64().unwrap();
    }
    // The 29900 bid was taken by Bob's sell; the ask rests untouched.
    let book = &updates.last().unwrap()["data"];
    assert_eq!(book["asks"], json!([["30100.00", "1.00000000"]]));
}

#[sqlx::test(migrations = false)]
async fn a_book_update_published_late_by_a_previous_owner_never_reaches_a_client(pool: PgPool) {
    let m = market(pool, &[]).await;
    let (mut socket, before) = subscribed(&m.app, &m.bob, &["book:BTC-USD"]).await;
    let snapshot = before[0]["sequence"].as_u64().unwrap();
    m.app
        .placed_order(&m.alice, &limit("buy", "29900.00", "0.1"))
        .await;
    let update = until(&mut socket, |seen| !seen.is_empty()).await.remove(0);
    let held = update["sequence"].as_u64().unwrap();

    // An orders replica that lost the symbol while an update waited in its queue publishes it
    // after the new owner moved on: an older book, at a sequence the client already holds.
    let (redis, keys) = m.app.redis().await;
    let stale = contracts::events::BookUpdated {
        symbol: "BTC-USD".to_owned(),
        sequence: held,
        previous_sequence: snapshot,
        bids: Vec::new(),
        asks: Vec::new(),
    };
    let event = events::Envelope::of("orders", "BTC-USD", 0, &stale).unwrap();
    events::direct::publish(&redis, &keys, "market", &event)
        .await
        .unwrap();

    // The next batch's update is published after it, so the gateway reads them in that order;
    // the client gets only the one that moves its book forward.
    m.app
        .placed_order(&m.alice, &limit("buy", "29800.00", "0.1"))
        .await;
    let next_update = next(&mut socket).await;
    assert_eq!(next_update["type"], "update");
    assert_eq!(
        next_update["data"]["previous_sequence"], held,
        "the stale update was not dropped: {next_update}"
    );
    assert_eq!(
        next_update["data"]["bids"],
        json!([["29900.00", "0.10000000"], ["29800.00", "0.10000000"]])
    );
}

#[sqlx::test(migrations = false)]
async fn a_client_that_stops_reading_is_cut_off_while_others_keep_receiving(pool: PgPool) {
    let m = market(
        pool,
        &[
            ("BOURSE_GATEWAY_STREAM_HEARTBEAT_MS", "100"),
            ("BOURSE_GATEWAY_STREAM_MAX_PER_PRINCIPAL", "1"),
        ],
    )
    .await;
    let (mut reader, _) = subscribed(&m.app, &m.alice, &["trades:BTC-USD"]).await;
    // Alice's client reads all the time (and so answers every ping).
    let (received, mut alice_got) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = reader.next().await {
            if let Message::Text(text) = frame {
                let _ = received.send(serde_json::from_str(&text).unwrap());
            }
        }
    });
    let (mut stalled, _) = subscribed(&m.app, &m.bob, &["trades:BTC-USD"]).await;
    // One stream per principal here: a second is refused before the upgrade.
    match open(&m.app, Some(&m.bob.access_token)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS)
        }
        other => panic!("expected 429, got {other:?}"),
    }

    // Bob's client stops reading: it answers no pings. Once the gateway has cut it off, Bob
    // has room for a stream again — the state to wait for.
    eventually("the stalled client cut off", || async {
        match open(&m.app, Some(&m.bob.access_token)).await {
            Ok(mut replacement) => {
                let _ = replacement.close(None).await;
                true
            }
            Err(_) => false,
        }
    })
    .await;

    // Alice's client, reading all along, still gets every trade.
    m.app
        .placed_order(&m.bob, &limit("sell", "30000.00", "0.1"))
        .await;
    m.app
        .placed_order(&m.alice, &limit("buy", "30000.00", "0.1"))
        .await;
    let trade = tokio::time::timeout(Duration::from_secs(20), alice_got.recv())
        .await
        .expect("a trade within 20 s")
        .expect("Alice's stream is open");
    assert_eq!(trade["type"], "trade");
    assert_eq!(trade["data"]["price"], "30000.00");
    // And the stalled one was told why, if it can still read it: its library answers the
    // queued pings as it reads, and the closed server may reset the connection first.
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the stalled stream ended");
    // None: reset before the close frame was read — disconnected all the same.
    if let Some(code) = code {
        assert_eq!(code, 1008);
    }
}

/// What a relay publishes at once when the broker resumes after a stall: many times a
/// client's queue, all in the stream before the gateway's next read. A client that reads as
/// fast as its socket allows gets every message, in order, and is not cut off as too slow.
#[sqlx::test(migrations = false)]
async fn a_burst_many_times_a_clients_queue_reaches_a_client_that_keeps_reading(pool: PgPool) {
    const QUEUE: usize = 16;
    const BURST: usize = 20 * QUEUE;
    let m = market(pool, &[("BOURSE_GATEWAY_STREAM_BUFFER", "16")]).await;
    let (mut socket, _) = subscribed(&m.app, &m.bob, &["trades:BTC-USD"]).await;

    let (mut redis, keys) = m.app.redis().await;
    let mut burst = redis::pipe();
    burst.atomic();
    for _ in 0..BURST {
        let trade = contracts::events::TradeExecuted {
            trade_id: uuid::Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: 3_000_000,
            quantity: 10_000_000,
            maker_order_id: uuid::Uuid::now_v7(),
            taker_order_id: uuid::Uuid::now_v7(),
            maker_account_id: uuid::Uuid::now_v7(),
            taker_account_id: uuid::Uuid::now_v7(),
            taker_side: contracts::Side::Buy,
        };
        let event = events::Envelope::of("orders", "BTC-USD", 0, &trade).unwrap();
        burst
            .add_command(events::envelope::xadd(
                &keys.stream("orders"),
                None,
                &event.id.to_string(),
                &event.event_type,
                &serde_json::to_string(&event).unwrap(),
            ))
            .ignore();
    }
    let () = burst.query_async(&mut redis).await.unwrap();

    // `next` fails the test on a close frame: a client cut off as too slow never gets here.
    let trades = until(&mut socket, |seen| seen.len() == BURST).await;
    let first = trades[0]["sequence"].as_u64().unwrap();
    for (n, trade) in trades.iter().enumerate() {
        assert_eq!(trade["type"], "trade", "{trade}");
        assert_eq!(trade["sequence"].as_u64(), Some(first + n as u64), "no gap");
    }
}

#[sqlx::test(migrations = false)]
async fn an_event_a_relay_publishes_again_reaches_a_client_once(pool: PgPool) {
    let m = market(pool, &[]).await;
    let (mut socket, _) = subscribed(&m.app, &m.bob, &["trades:BTC-USD"]).await;
    m.app
        .placed_order(&m.alice, &limit("sell", "30000.00", "0.1"))
        .await;
    m.app
        .placed_order(&m.bob, &limit("buy", "30000.00", "0.1"))
        .await;
    let first = next(&mut socket).await;
    assert_eq!(first["type"], "trade", "{first}");

    // A relay leader that was stopped after publishing that batch and before recording it
    // gives way, and the next leader publishes the batch again (ADR 0005): the same entries,
    // with their outbox positions, added to the stream once more.
    let (mut redis, keys) = m.app.redis().await;
    let stream = keys.stream("orders");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    for (_, fields) in &entries {
        let mut again = redis::cmd("XADD");
        again.arg(&stream).arg("*");
        for (field, value) in fields {
            again.arg(field).arg(value);
        }
        let _: String = again.query_async(&mut redis).await.unwrap();
    }

    // The next trade is what the client gets next: not the first one again.
    m.app
        .placed_order(&m.alice, &limit("sell", "30000.00", "0.2"))
        .await;
    m.app
        .placed_order(&m.bob, &limit("buy", "30000.00", "0.2"))
        .await;
    let second = next(&mut socket).await;
    assert_eq!(second["type"], "trade", "{second}");
    assert_ne!(
        second["data"]["id"], first["data"]["id"],
        "the copy reached the client: {second}"
    );
    assert_eq!(second["data"]["quantity"], "0.20000000", "{second}");
    assert_eq!(
        second["sequence"].as_u64(),
        first["sequence"].as_u64().map(|s| s + 1)
    );
}
