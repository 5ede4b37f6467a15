//! `GET /v1/stream`: the WebSocket session (TRD-09, docs/design.md §5).
//!
//! Authentication by the `Authorization` header (a bad token is refused before the upgrade,
//! 401) or by a first message `{"op": "auth", "token": …}` within the auth timeout (else close
//! 1008). Then `{"op": "subscribe", "channels": [...]}` / `unsubscribe`. Server messages are
//! `{channel, type, data, sequence}`; a `book:{symbol}` subscription starts with a snapshot
//! whose `sequence` the following updates chain on from (`data.previous_sequence`). Pings go
//! out every heartbeat; a client silent for two heartbeats, one that cannot take messages as
//! fast as they come (its queue fills), or one whose token expires is disconnected with a
//! close code saying why. The connection ends with the token's lifetime: clients reconnect with
//! a fresh one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access::{TokenVerifier, VerifyError};
use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt as _;
use resilience::Call;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::http::{ClientIp, Problem};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::Gateway;
use crate::api_keys::ApiKeyVerifier;
use crate::route_table::Upstream;
use crate::stream::hub::Message;
use crate::stream::messages::valid_channel;

/// Close codes (RFC 6455 §7.4.1).
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const TRY_AGAIN_LATER: u16 = 1013;

/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// Who is on the line, until when.
struct Caller {
    account: Uuid,
    expires_at: Instant,
}

pub async fn upgrade(State(gw): State<Gateway>, ClientIp(ip): ClientIp, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    // A program signs the upgrade like any request (its body is empty) and needs `read`; its
    // stream lasts as long as the owner's token the gateway holds for the key.
    if ApiKeyVerifier::is_signed(&parts.headers) {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str())
            .to_owned();
        let signed = match gw
            .api_keys
            .verify(&parts.headers, &parts.method, &path, &[], ip)
            .await
            .and_then(|signed| {
                signed
                    .require_scope_for(&Method::GET, "/v1/stream")
                    .map(|()| signed)
            }) {
            Ok(signed) => signed,
            Err(problem) => return problem.into_response(),
        };
        parts.headers.remove(axum::http::header::AUTHORIZATION);
        let caller = caller(signed.principal.user_id, signed.token_expires_at);
        return upgraded(gw, parts, Some(caller)).await;
    }
    let caller = match access::principal::bearer_token(&parts) {
        Some(token) => match gw.verifier.verify(token).await {
            Ok(claims) => Some(caller(claims.sub, claims.exp)),
            // A forged or expired token is refused before the upgrade.
            Err(err) => return Problem::from(err).into_response(),
        },
        None => None,
    };
    upgraded(gw, parts, caller).await
}

async fn upgraded(
    gw: Gateway,
    mut parts: axum::http::request::Parts,
    caller: Option<Caller>,
) -> Response {
    if let Some(caller) = &caller
        && !gw.hub.has_room(caller.account)
    {
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "this principal has the most streams it may open",
        )
        .into_response();
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &gw).await {
        Ok(upgrade) => upgrade,
        Err(_) => {
            return Problem::bad_request("websocket_expected", "this path speaks WebSocket only")
                .into_response();
        }
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(gw, socket, caller))
}

fn caller(account: Uuid, exp: u64) -> Caller {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = u64::try_from(i64::try_from(exp).unwrap_or(i64::MAX) - now).unwrap_or(0);
    Caller {
        account,
        expires_at: Instant::now() + Duration::from_secs(left),
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Auth { token: String },
    Subscribe { channels: Vec<String> },
    Unsubscribe { channels: Vec<String> },
}

async fn session(gw: Gateway, mut socket: WebSocket, caller: Option<Caller>) {
    let settings = gw.hub.settings().clone();
    let caller = match caller {
        Some(caller) => caller,
        None => match first_message_auth(&mut socket, &gw.verifier, settings.auth_timeout).await {
            Ok(caller) => caller,
            Err(reason) => return close(socket, POLICY, reason).await,
        },
    };
    let Ok(mut subscriber) = gw.hub.connect(caller.account) else {
        return close(socket, POLICY, "too many streams for this principal").await;
    };
    metrics::counter!("gateway_stream_sessions_total").increment(1);
    let mut session = Session {
        gw: &gw,
        connection: subscriber.id,
        book_floor: HashMap::new(),
        channels: Vec::new(),
    };
    if session
        .send(
            &mut socket,
            json!({ "type": "authenticated", "account_id": caller.account }),
        )
        .await
        .is_err()
    {
        return;
    }
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    let mut last_heard = Instant::now();
    let expiry = tokio::time::sleep_until(caller.expires_at);
    tokio::pin!(expiry);
    let shutdown = gw.shutdown.clone();
    let (code, reason) = loop {
        tokio::select! {
            () = subscriber.cut_off.cancelled() => {
                break (TRY_AGAIN_LATER, "too slow: messages were queuing up");
            }
            message = subscriber.messages.recv() => {
                let Some(message) = message else { break (TRY_AGAIN_LATER, "cut off") };
                if deliver(&mut socket, &mut subscriber.messages, message, &session.book_floor, settings.heartbeat).await.is_err() {
                    break (TRY_AGAIN_LATER, "too slow: a write did not complete");
                }
            }
            frame = socket.recv() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    last_heard = Instant::now();
                    if session.handle(&mut socket, &text).await.is_err() {
                        break (GOING_AWAY, "connection lost");
                    }
                }
                Some(Ok(Frame::Binary(_))) => break (1003, "text messages only"),
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > settings.heartbeat * 2 {
                    metrics::counter!("gateway_stream_disconnects_total", "reason" => "silent").increment(1);
                    break (POLICY, "no heartbeat answered");
                }
                if send_within(&mut socket, Frame::Ping(Default::default()), settings.heartbeat).await.is_err() {
                    break (TRY_AGAIN_LATER, "too slow: a write did not complete");
                }
            }
            () = &mut expiry => break (POLICY, "token expired; reconnect with a fresh one"),
            () = shutdown.triggered() => break (GOING_AWAY, "server shutting down"),
        }
    };
    drop(session);
    subscriber.cut_off.cancel();
    close(socket, code, reason).await;
}

/// A session's own state: the channels it holds and, per book, the snapshot sequence below
/// which updates are already in the snapshot.
struct Session<'a> {
    gw: &'a Gateway,
    /// The hub's id of this session's connection.
    connection: u64,
    book_floor: HashMap<String, u64>,
    channels: Vec<String>,
}

impl Session<'_> {
    async fn send(&self, socket: &mut WebSocket, value: Value) -> Result<(), ()> {
        let text = Utf8Bytes::from(value.to_string());
        send_within(socket, Frame::Text(text), self.gw.hub.settings().heartbeat).await
    }

    async fn error(&self, socket: &mut WebSocket, code: &str, message: &str) -> Result<(), ()> {
        self.send(
            socket,
            json!({ "type": "error", "code": code, "message": message }),
        )
        .await
    }

    async fn handle(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), ()> {
        let request = match serde_json::from_str::<ClientMessage>(text) {
            Ok(request) => request,
            Err(_) => {
                return self
                    .error(
                        socket,
                        "bad_message",
                        "expected {\"op\": \"subscribe\"|\"unsubscribe\", \"channels\": [...]}",
                    )
                    .await;
            }
        };
        match request {
            ClientMessage::Auth { .. } => {
                self.error(
                    socket,
                    "already_authenticated",
                    "this stream is authenticated",
                )
                .await
            }
            ClientMessage::Subscribe { channels } => self.subscribe(socket, channels).await,
            ClientMessage::Unsubscribe { channels } => {
                for channel in &channels {
                    self.gw.hub.unsubscribe(self.connection, channel);
                    self.book_floor.remove(channel);
                    self.channels.retain(|c| c != channel);
                }
                self.send(
                    socket,
                    json!({ "type": "unsubscribed", "channels": channels }),
                )
                .await
            }
        }
    }

    async fn subscribe(&mut self, socket: &mut WebSocket, channels: Vec<String>) -> Result<(), ()> {
        if let Some(bad) = channels.iter().find(|c| !valid_channel(c)) {
            let message = format!("{bad:?} is not orders, trades:<SYMBOL> or book:<SYMBOL>");
            return self.error(socket, "unknown_channel", &message).await;
        }
        let limit = self.gw.hub.settings().max_subscriptions;
        if self.channels.len() + channels.len() > limit {
            return self
                .error(
                    socket,
                    "too_many_subscriptions",
                    &format!("at most {limit} channels"),
                )
                .await;
        }
        let mut subscribed = Vec::new();
        for channel in channels {
            if self.channels.contains(&channel) {
                continue;
            }
            // Subscribe before the snapshot is read: an update made meanwhile waits in the
            // queue and is kept if the snapshot does not already contain it.
            self.gw.hub.subscribe(self.connection, &channel);
            if let Some(symbol) = channel.strip_prefix("book:") {
                match self.snapshot(symbol).await {
                    Ok(book) => {
                        let sequence = book["sequence"].as_u64().unwrap_or(0);
                        self.book_floor.insert(channel.clone(), sequence);
                        self.send(
                            socket,
                            json!({
                                "channel": channel, "type": "snapshot", "sequence": sequence,
                                "data": { "bids": book["bids"], "asks": book["asks"] },
                            }),
                        )
                        .await?;
                    }
                    Err((code, message)) => {
                        self.gw.hub.unsubscribe(self.connection, &channel);
                        self.error(socket, code, &message).await?;
                        continue;
                    }
                }
            }
            self.channels.push(channel.clone());
            subscribed.push(channel);
        }
        self.send(
            socket,
            json!({ "type": "subscribed", "channels": subscribed }),
        )
        .await
    }

    /// The book as orders' REST API has it, through the same resilient upstream as any call.
    async fn snapshot(&self, symbol: &str) -> Result<Value, (&'static str, String)> {
        let path = format!("/v1/markets/{symbol}/book?depth={}", BOOK_DEPTH);
        let orders = self.gw.upstreams.get(Upstream::ORDERS).ok_or((
            "upstream_unavailable",
            "orders is not an upstream".to_owned(),
        ))?;
        let response = orders
            .send(Call::get(&path))
            .await
            .map_err(|e| ("upstream_unavailable", e.to_string()))?;
        match response.status() {
            status if status.is_success() => response
                .json()
                .await
                .map_err(|e| ("upstream_unavailable", e.to_string())),
            StatusCode::NOT_FOUND => Err(("unknown_symbol", format!("no instrument {symbol}"))),
            status => Err(("upstream_unavailable", format!("orders answered {status}"))),
        }
    }
}

/// Levels per side in a snapshot: the depth of the book feed's updates.
const BOOK_DEPTH: usize = 20;

async fn first_message_auth(
    socket: &mut WebSocket,
    verifier: &TokenVerifier,
    timeout: Duration,
) -> Result<Caller, &'static str> {
    let first = tokio::time::timeout(timeout, socket.recv())
        .await
        .map_err(|_| "authenticate first: {\"op\": \"auth\", \"token\": …}")?;
    let Some(Ok(Frame::Text(text))) = first else {
        return Err("authenticate first: {\"op\": \"auth\", \"token\": …}");
    };
    let Ok(ClientMessage::Auth { token }) = serde_json::from_str::<ClientMessage>(&text) else {
        return Err("authenticate first: {\"op\": \"auth\", \"token\": …}");
    };
    match verifier.verify(&token).await {
        Ok(claims) => Ok(caller(claims.sub, claims.exp)),
        Err(VerifyError::KeysUnavailable(_)) => Err("tokens cannot be verified right now"),
        Err(_) => Err("the token is invalid or expired"),
    }
}

/// The most queued messages one write takes.
const WRITE_BATCH: usize = 64;

/// Writes `first` and what is queued behind it (up to [`WRITE_BATCH`]) with one flush: one
/// write to the socket for a burst instead of one per message, which is what lets a client that
/// reads at its socket's pace keep up with a backlog. Book updates the session's snapshot
/// already holds are skipped. Like any write, it must finish within `limit`.
async fn deliver(
    socket: &mut WebSocket,
    queue: &mut mpsc::Receiver<Arc<Message>>,
    first: Arc<Message>,
    book_floor: &HashMap<String, u64>,
    limit: Duration,
) -> Result<(), ()> {
    let write = async {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next {
            taken += 1;
            let stale = book_floor
                .get(&message.channel)
                .is_some_and(|floor| message.sequence <= *floor);
            if !stale {
                let text = Utf8Bytes::from(message.text.as_str());
                socket.feed(Frame::Text(text)).await?;
            }
            next = if taken < WRITE_BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        socket.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A write that must finish within `limit`: a client that stopped reading fills its TCP
/// window and would otherwise hold the session (and its queue) for ever.
async fn send_within(socket: &mut WebSocket, frame: Frame, limit: Duration) -> Result<(), ()> {
    match tokio::time::timeout(limit, socket.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = Frame::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(frame)).await;
}
