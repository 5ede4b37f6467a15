//! Carrying a run out: setup, the open-model schedule, the subscribers, the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::client::Gateway;
use crate::invariants::{self, Ledger};
use crate::report::{Report, Sample};
use crate::stream_checks::Subscriber;
use crate::workload::{Action, Kind, Workload};
use crate::{Config, Error};

/// What each account is given before trading.
pub const FUNDING: [(&str, &str); 2] = [("USD", "100000000.00"), ("BTC", "10000.00000000")];

/// How long a WebSocket subscriber may take to connect and subscribe before trading starts.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long risk may take to credit a new account's deposits.
const CREDIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until risk's pre-trade stage has the new account's deposits, as a client waits for a
/// deposit to be credited: risk refuses what its own view of an account cannot fund (ADR
/// 0023), and that view follows the ledger through a stream. While risk is still loading it
/// reserves nothing, and the snapshot it then loads includes the deposits.
async fn until_credited(gateway: &Gateway, admin: &str, account: Uuid) -> Result<(), Error> {
    let deadline = Instant::now() + CREDIT_TIMEOUT;
    loop {
        let credited = match gateway.risk_funds(admin, account).await? {
            None => true,
            Some(funds) => FUNDING.iter().all(|(asset, amount)| {
                funds
                    .iter()
                    .any(|b| b["asset"] == *asset && b["balance"] == *amount)
            }),
        };
        if credited {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotCredited(account, CREDIT_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A funded trading account of the run.
pub struct Trader {
    pub token: String,
    pub account: Uuid,
    /// Resting orders it might cancel; filled ones answer 409 and are forgotten.
    resting: Mutex<Vec<Uuid>>,
}

/// Everything an action needs.
struct Shared {
    gateway: Gateway,
    /// `/v1/markets/{symbol}/book`
    book: String,
    traders: Vec<Trader>,
    /// Every order answered 201: (trader index, order id).
    placed: Mutex<Vec<(usize, Uuid)>>,
}

/// Sets up, trades for `config.duration()`, lets the platform settle and checks the
/// invariants. `Err` only when the run could not be carried out at all.
pub async fn run(config: &Config) -> Result<Report, Error> {
    let gateway = Gateway::new(&config.gateway)?;
    let admin = gateway
        .log_in(&config.admin_email, &config.admin_password)
        .await?;
    gateway.ensure_instrument(&admin, &config.symbol).await?;
    let traders = sign_up_traders(&gateway, &admin, config).await?;
    let shared = Arc::new(Shared {
        gateway: gateway.clone(),
        book: format!("/v1/markets/{}/book", config.symbol),
        traders,
        placed: Mutex::new(Vec::new()),
    });

    let stop_streams = Arc::new(tokio::sync::Notify::new());
    let mut subscribers = JoinSet::new();
    let mut following = Vec::with_capacity(config.subscribers);
    for n in 0..config.subscribers {
        let token = shared.traders[trader_followed_by(n, shared.traders.len())]
            .token
            .clone();
        let (progress, watcher) = watch::channel(Subscriber::default());
        following.push(watcher);
        subscribers.spawn(subscribe(
            gateway.clone(),
            token,
            config.symbol.clone(),
            progress,
            stop_streams.clone(),
        ));
    }
    // Trading starts once every subscriber is subscribed (or has given up), so every trade
    // of the run must reach each one that was subscribed in time.
    let mut following_from_the_start = Vec::with_capacity(following.len());
    for watcher in &mut following {
        let subscribed =
            tokio::time::timeout(SUBSCRIBE_TIMEOUT, watcher.wait_for(|s| s.subscribed)).await;
        following_from_the_start.push(matches!(subscribed, Ok(Ok(_))));
    }

    let mut report = Report::new(config.rate, config.duration());
    // Halfway through, while orders trade and settle, risk's balances are compared with the
    // ledger's (ADR 0023): the comparison is cut at a position, so it must hold under load and
    // not only once the platform is quiet.
    let halfway = Instant::now() + config.duration() / 2;
    let under_load = {
        let (gateway, admin) = (gateway.clone(), admin.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(halfway).await;
            gateway.risk_reconciliation(&admin).await
        })
    };
    drive(config, &shared, &mut report).await;
    let under_load = match under_load.await {
        Ok(compared) => compared,
        Err(_) => Err(Error::Malformed("the halfway comparison's task panicked")),
    };

    // The end of the day: every account cancels what rests, so nothing should stay held. A
    // platform still working off the load may refuse (503), and a gateway restarted during
    // the run (tools/loadgen/pause-services.sh) may not be listening yet: ask again until it
    // answers.
    let deadline = Instant::now() + config.settle_timeout();
    for trader in &shared.traders {
        loop {
            match gateway.cancel_all(&trader.token).await {
                Ok(cancelled) if cancelled.status.is_success() => break,
                Ok(_) if Instant::now() >= deadline => break,
                Err(unreachable) if Instant::now() >= deadline => return Err(unreachable.into()),
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    let placed = shared.placed.lock().map(|p| p.clone()).unwrap_or_default();
    let ledger = Ledger {
        gateway: &gateway,
        admin: &admin,
        traders: &shared.traders,
        placed: &placed,
        settle_timeout: config.settle_timeout(),
        subscribers: &following,
        following_from_the_start: &following_from_the_start,
    };
    // The streams stay open through the checks: the last trades may still be on their way.
    report.violations = invariants::check(&ledger, &report).await?;
    stop_streams.notify_waiters();
    while subscribers.join_next().await.is_some() {}
    report.subscribers = following.iter().map(|w| w.borrow().clone()).collect();
    if let Some(violation) = invariants::risk_reconciled("halfway through the run", under_load) {
        report.violations.push(violation);
    }
    Ok(report)
}

async fn sign_up_traders(
    gateway: &Gateway,
    admin: &str,
    config: &Config,
) -> Result<Vec<Trader>, Error> {
    // Fresh accounts per run, so balances start from the deposits alone.
    let run = Uuid::now_v7().simple().to_string();
    let mut traders = Vec::with_capacity(config.accounts);
    for n in 0..config.accounts.max(2) {
        let token = gateway
            .sign_up(&format!("loadgen-{run}-{n}@example.com"))
            .await?;
        let account = gateway.account(&token).await?;
        for (asset, amount) in FUNDING {
            gateway.deposit(admin, account, asset, amount).await?;
        }
        until_credited(gateway, admin, account).await?;
        traders.push(Trader {
            token,
            account,
            resting: Mutex::new(Vec::new()),
        });
    }
    Ok(traders)
}

/// The open model: action `n` starts at `start + n / rate` whether or not earlier ones have
/// answered, and its latency counts from then.
async fn drive(config: &Config, shared: &Arc<Shared>, report: &mut Report) {
    let mut workload = Workload::new(config.seed, shared.traders.len(), &config.symbol);
    let interval = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    let total = u64::from(config.rate) * config.duration_secs;
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(sample) = done {
                report.record(&sample);
            }
        }
        if in_flight.len() >= config.max_in_flight {
            report.not_started += 1;
            continue;
        }
        let action = workload.next_action();
        in_flight.spawn(perform(shared.clone(), action, scheduled));
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok(sample) = done {
            report.record(&sample);
        }
    }
}

async fn perform(shared: Arc<Shared>, action: Action, scheduled: Instant) -> Sample {
    let trader = &shared.traders[action.trader];
    let gateway = &shared.gateway;
    let answered = match (action.kind, &action.order) {
        (_, Some(order)) => gateway.place(&trader.token, order).await,
        (Kind::Cancel, _) => {
            let victim = trader.resting.lock().ok().and_then(|mut r| r.pop());
            match victim {
                Some(order) => gateway.cancel(&trader.token, order).await,
                None => {
                    gateway
                        .read(Some(&trader.token), "/v1/orders?status=open")
                        .await
                }
            }
        }
        (Kind::CancelAll, _) => gateway.cancel_all(&trader.token).await,
        (Kind::ReadOrders, _) => gateway.read(Some(&trader.token), "/v1/orders").await,
        (Kind::ReadTrades, _) => gateway.read(Some(&trader.token), "/v1/trades").await,
        (Kind::ReadBalances, _) => gateway.read(Some(&trader.token), "/v1/balances").await,
        _ => gateway.read(None, &shared.book).await,
    };
    let latency = scheduled.elapsed();
    let status = answered.as_ref().ok().map(|a| a.status.as_u16());
    let code = answered
        .as_ref()
        .ok()
        .filter(|a| !a.status.is_success())
        .and_then(|a| a.body["code"].as_str().map(str::to_owned));
    if let Ok(answer) = &answered
        && answer.status == StatusCode::CREATED
        && let Some(id) = answer.body["id"].as_str().and_then(|id| id.parse().ok())
    {
        if let Ok(mut placed) = shared.placed.lock() {
            placed.push((action.trader, id));
        }
        let rests = answer.body["status"] == "open" || answer.body["status"] == "partially_filled";
        if rests && let Ok(mut resting) = trader.resting.lock() {
            resting.push(id);
        }
    }
    Sample {
        kind: action.kind,
        latency,
        status,
        code,
    }
}

/// Which trader's orders subscriber `subscriber` follows (its stream is opened with that
/// trader's token).
pub fn trader_followed_by(subscriber: usize, traders: usize) -> usize {
    subscriber % traders.max(1)
}

/// How long a subscriber whose stream closed keeps trying to connect again and catch up.
const RECONNECT_WITHIN: Duration = Duration::from_secs(15);

/// A WebSocket client following `symbol`'s trades and book and its trader's orders until
/// `stop`, telling `progress` what it received. When the stream closes it connects again and
/// catches up on the trades and its orders' news it missed, as a client should (docs/stream.md,
/// "Reconnecting").
async fn subscribe(
    gateway: Gateway,
    token: String,
    symbol: String,
    progress: watch::Sender<Subscriber>,
    stop: Arc<tokio::sync::Notify>,
) {
    // Created before anything is awaited: `notify_waiters` reaches it from then on.
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let connected = tokio::select! {
        socket = connect(gateway.base(), &token, &symbol) => socket,
        () = &mut stopped => None,
    };
    let Some(mut socket) = connected else {
        return;
    };
    loop {
        let why = tokio::select! {
            why = follow(&mut socket, &progress) => why,
            () = &mut stopped => return,
        };
        let again = tokio::select! {
            again = reconnect(&gateway, &token, &symbol, &progress, why.clone()) => again,
            () = &mut stopped => None,
        };
        match again {
            Some(again) => socket = again,
            None => {
                progress.send_modify(|seen| seen.closed = Some(why));
                return;
            }
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reads the stream into `progress` until it closes: why it did.
async fn follow(socket: &mut Socket, progress: &watch::Sender<Subscriber>) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => progress.send_modify(|seen| seen.observe(&text)),
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or_else(
                    || "without a close frame".to_owned(),
                    |f| format!("{} {}", u16::from(f.code), f.reason),
                );
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return "connection lost".to_owned(),
        }
    }
}

/// Connects again after the stream closed (`why`), subscribes, and once the subscription is
/// confirmed reads the trades missed since the last one received and its trader's orders — in
/// that order, so that nothing falls between the two. `None` if that could not be done within
/// [`RECONNECT_WITHIN`], or there is no trade to catch up from.
async fn reconnect(
    gateway: &Gateway,
    token: &str,
    symbol: &str,
    progress: &watch::Sender<Subscriber>,
    why: String,
) -> Option<Socket> {
    let deadline = Instant::now() + RECONNECT_WITHIN;
    for attempt in 0u32.. {
        if Instant::now() >= deadline {
            return None;
        }
        // Full jitter under a ceiling that doubles from 50 ms to a second: subscribers cut off
        // together do not come back together.
        let ceiling = (50u64 << attempt.min(5)).min(1_000);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=ceiling))).await;
        let Some(mut socket) = connect(gateway.base(), token, symbol).await else {
            continue;
        };
        if !until_subscribed(&mut socket, progress).await {
            continue;
        }
        let last = progress.borrow().trades.last?;
        let Ok(missed) = gateway.trades_after(symbol, last).await else {
            continue;
        };
        let Ok(orders) = gateway.all_orders(token).await else {
            continue;
        };
        progress.send_modify(|seen| {
            seen.trades.caught_up(&missed);
            seen.own_orders.caught_up(&orders);
            seen.reconnects.push(why.clone());
        });
        return Some(socket);
    }
    None
}

/// Reads a new connection until the server confirms the subscription; `false` if it closed
/// first. What arrives with it is taken as any message is.
async fn until_subscribed(socket: &mut Socket, progress: &watch::Sender<Subscriber>) -> bool {
    let mut numbered_from_start = false;
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let confirmed = serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|m| m["type"] == "subscribed");
        if !numbered_from_start {
            // Everything this connection sends is numbered from its start.
            progress.send_modify(Subscriber::connected_again);
            numbered_from_start = true;
        }
        progress.send_modify(|seen| seen.observe(&text));
        if confirmed {
            return true;
        }
    }
    false
}

/// A stream subscribed to `symbol`'s trades and book and its own orders; `None` if it could
/// not be opened.
async fn connect(base: &str, token: &str, symbol: &str) -> Option<Socket> {
    let url = format!("{}/v1/stream", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().ok()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().ok()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.ok()?;
    let subscription = json!({ "op": "subscribe",
                               "channels": ["orders", format!("trades:{symbol}"), format!("book:{symbol}")] });
    socket
        .send(Message::Text(subscription.to_string().into()))
        .await
        .ok()?;
    Some(socket)
}
