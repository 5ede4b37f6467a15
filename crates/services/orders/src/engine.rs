//! Matching tasks: one per symbol, the only writer of that symbol's book (TRD-03).
//!
//! Requests reach a task through a bounded queue; a full queue is answered with 503 at once
//! instead of growing without bound. The task executes a command on its in-memory [`Book`],
//! then commits the resulting order rows, trades, outbox events and the idempotency response
//! in one transaction, and only then answers. If that transaction fails, the book has moved
//! ahead of the database: the task rebuilds it from the database (as on start-up, REL-16) and
//! answers 503, so memory never disagrees with what was committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use matching::{
    AccountId, Book, CancelReason, Command, Emitted, Event, NewOrder, OrderId, RestingOrder,
    SelfTradePrevention, Side,
};
use serde_json::json;
use service_kit::http::RequestContext;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::idempotency::{self, Claim};
use crate::instruments::{Instrument, PRODUCER, STREAM};
use crate::order_entry::{OrderType, ValidOrder};
use crate::store::{self, NewOrderRow, NewTrade};
use crate::view::OrderView;

/// The answer to a placed order: an HTTP status and its JSON body (also what is replayed).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The caller's request, carried into the task: its id and trace for errors and events, and
/// its span for logs.
struct Origin {
    context: Option<RequestContext>,
    span: tracing::Span,
}

impl Origin {
    fn current() -> Self {
        Self {
            context: service_kit::http::observe::current_context(),
            span: tracing::Span::current(),
        }
    }

    async fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        service_kit::http::observe::within(self.context.clone(), work.instrument(self.span.clone()))
            .await
    }
}

enum Job {
    Place {
        order: ValidOrder,
        claim: Claim,
        origin: Origin,
        reply: oneshot::Sender<Result<Answer>>,
    },
    Cancel {
        order_id: Uuid,
        account: Uuid,
        origin: Origin,
        reply: oneshot::Sender<Result<Option<OrderView>>>,
    },
    CancelAccount {
        account: Uuid,
        origin: Origin,
        reply: oneshot::Sender<Result<u64>>,
    },
    Depth {
        levels: usize,
        reply: oneshot::Sender<Depth>,
    },
}

/// A consistent view of the top of a book, in ticks and lots.
#[derive(Clone, Debug, Default)]
pub struct Depth {
    pub sequence: u64,
    pub bids: Vec<matching::Level>,
    pub asks: Vec<matching::Level>,
}

/// The running matching tasks, started on first use of a symbol.
#[derive(Clone)]
pub struct Engines {
    pool: PgPool,
    capacity: usize,
    tasks: Arc<Mutex<HashMap<String, mpsc::Sender<Job>>>>,
}

impl Engines {
    /// `capacity`: requests that may wait per symbol; beyond it they are shed with 503.
    pub fn new(pool: PgPool, capacity: usize) -> Self {
        Self {
            pool,
            capacity,
            tasks: Arc::default(),
        }
    }

    fn queue(&self, instrument: &Instrument) -> Result<mpsc::Sender<Job>> {
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| Error::Internal("engine registry poisoned".to_owned()))?;
        if let Some(sender) = tasks.get(&instrument.symbol)
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let (sender, receiver) = mpsc::channel(self.capacity);
        tokio::spawn(run(self.pool.clone(), instrument.clone(), receiver));
        tasks.insert(instrument.symbol.clone(), sender.clone());
        Ok(sender)
    }

    fn send(&self, instrument: &Instrument, job: Job) -> Result<()> {
        self.queue(instrument)?
            .try_send(job)
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => Error::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Internal("matching task stopped".to_owned())
                }
            })
    }

    /// Hands a job to the symbol's task and waits for its answer.
    async fn ask<T>(
        &self,
        instrument: &Instrument,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(instrument, job(reply))?;
        answer
            .await
            .map_err(|_| Error::Internal("matching task dropped the request".to_owned()))
    }

    pub async fn place(
        &self,
        instrument: &Instrument,
        order: ValidOrder,
        claim: Claim,
    ) -> Result<Answer> {
        let origin = Origin::current();
        self.ask(instrument, |reply| Job::Place {
            order,
            claim,
            origin,
            reply,
        })
        .await?
    }

    /// Cancels every resting order of `account` in this instrument; returns how many.
    pub async fn cancel_account(&self, instrument: &Instrument, account: Uuid) -> Result<u64> {
        let origin = Origin::current();
        self.ask(instrument, |reply| Job::CancelAccount {
            account,
            origin,
            reply,
        })
        .await?
    }

    /// The top `levels` of the book, read by the book's own task (so never torn).
    pub async fn depth(&self, instrument: &Instrument, levels: usize) -> Result<Depth> {
        self.ask(instrument, |reply| Job::Depth { levels, reply })
            .await
    }

    /// Cancels the caller's resting order; `None` when it is not theirs or does not exist.
    pub async fn cancel(
        &self,
        instrument: &Instrument,
        order_id: Uuid,
        account: Uuid,
    ) -> Result<Option<OrderView>> {
        let origin = Origin::current();
        self.ask(instrument, |reply| Job::Cancel {
            order_id,
            account,
            origin,
            reply,
        })
        .await?
    }
}

/// Rebuilds a symbol's book from the database, keeping every order's time priority.
pub async fn recover(pool: &PgPool, instrument: &Instrument) -> Result<Book> {
    let mut book = Book::new();
    for order in store::resting_orders(pool, &instrument.symbol).await? {
        let (Some(price), Some(arrival)) = (order.price, order.book_sequence) else {
            return Err(Error::Internal(format!(
                "resting order {} lacks price or sequence",
                order.id
            )));
        };
        let remaining = (order.quantity - order.filled_quantity) / instrument.lot_size;
        book.restore(RestingOrder {
            id: OrderId(order.id.as_u128()),
            account: AccountId(order.account_id.as_u128()),
            side: if order.side == "buy" {
                Side::Buy
            } else {
                Side::Sell
            },
            price: price / instrument.tick_size,
            remaining: u64::try_from(remaining).unwrap_or(0),
            arrival: u64::try_from(arrival).unwrap_or(0),
        })
        .map_err(|reason| Error::Internal(format!("restoring order {}: {reason:?}", order.id)))?;
    }
    book.resume_sequence(
        u64::try_from(store::last_sequence(pool, &instrument.symbol).await?).unwrap_or(0),
    );
    Ok(book)
}

/// Most commands committed together in one transaction (group commit).
pub const MAX_BATCH: usize = 256;

/// What a job produced, held until its batch commits.
enum Output {
    Placed(Answer),
    Cancelled(Option<Box<OrderView>>),
    Counted(u64),
    Depth(Depth),
}

async fn run(pool: PgPool, instrument: Instrument, mut jobs: mpsc::Receiver<Job>) {
    let symbol = instrument.symbol.clone();
    let mut book = match recover(&pool, &instrument).await {
        Ok(book) => book,
        Err(err) => {
            // Dropping the receiver fails queued requests; the next request starts a new task.
            tracing::error!(%symbol, error = %err, "cannot rebuild the book");
            return;
        }
    };
    tracing::info!(%symbol, resting = book.len(), "matching task started");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        // Group commit: whatever queued up while the last batch was committing goes together,
        // so throughput is not one fsync per order.
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("orders_matching_batch_size", "symbol" => symbol.clone())
            .record(batch.len() as f64);
        let started = std::time::Instant::now();
        let committed = commit_batch(&pool, &instrument, &mut book, &batch).await;
        metrics::histogram!("orders_matching_batch_seconds", "symbol" => symbol.clone())
            .record(started.elapsed());
        match committed {
            Ok(outputs) => {
                for (job, output) in batch.drain(..).zip(outputs) {
                    reply(job, Ok(output));
                }
            }
            Err(err) => {
                // The book ran ahead of what was committed: rebuild it, then redo the jobs one
                // at a time, so only a job that fails on its own gets an error.
                tracing::warn!(%symbol, error = %err, jobs = batch.len(), "batch failed; replaying it job by job");
                book = match recover(&pool, &instrument).await {
                    Ok(book) => book,
                    Err(err) => {
                        tracing::error!(%symbol, error = %err, "cannot rebuild the book; stopping this task");
                        return;
                    }
                };
                for job in batch.drain(..) {
                    let single = std::slice::from_ref(&job);
                    match commit_batch(&pool, &instrument, &mut book, single).await {
                        Ok(mut outputs) => match outputs.pop() {
                            Some(output) => reply(job, Ok(output)),
                            None => reply(job, Err(Error::Internal("no output".to_owned()))),
                        },
                        Err(err) => {
                            if let Job::Place { claim, .. } = &job {
                                idempotency::abandon(&pool, claim).await;
                            }
                            reply(job, Err(err));
                            match recover(&pool, &instrument).await {
                                Ok(rebuilt) => book = rebuilt,
                                Err(err) => {
                                    tracing::error!(%symbol, error = %err, "cannot rebuild the book; stopping this task");
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Applies `jobs` to the book and writes all their effects in one transaction.
async fn commit_batch(
    pool: &PgPool,
    instrument: &Instrument,
    book: &mut Book,
    jobs: &[Job],
) -> Result<Vec<Output>> {
    let mut tx = pool.begin().await?;
    let mut outputs = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        events.clear();
        let output = match job {
            Job::Place {
                order,
                claim,
                origin,
                ..
            } => {
                book.execute(Command::Place(new_order(instrument, order)), &mut events);
                Output::Placed(
                    origin
                        .run(write_place(&mut tx, instrument, order, claim, &events))
                        .await?,
                )
            }
            Job::Cancel {
                order_id,
                account,
                origin,
                ..
            } => {
                book.execute(
                    Command::Cancel {
                        id: OrderId(order_id.as_u128()),
                        account: AccountId(account.as_u128()),
                    },
                    &mut events,
                );
                Output::Cancelled(
                    origin
                        .run(write_cancel(
                            &mut tx, instrument, *order_id, *account, &events,
                        ))
                        .await?
                        .map(Box::new),
                )
            }
            Job::CancelAccount {
                account, origin, ..
            } => {
                book.execute(
                    Command::CancelAccount {
                        account: AccountId(account.as_u128()),
                    },
                    &mut events,
                );
                origin
                    .run(write_events(&mut tx, instrument, &events))
                    .await?;
                Output::Counted(events.len() as u64)
            }
            Job::Depth { levels, .. } => {
                let (bids, asks) = book.depth(*levels);
                Output::Depth(Depth {
                    sequence: book.sequence(),
                    bids,
                    asks,
                })
            }
        };
        outputs.push(output);
    }
    tx.commit().await?;
    Ok(outputs)
}

fn reply(job: Job, output: Result<Output>) {
    let mismatch = || Error::Internal("job and output do not match".to_owned());
    match job {
        Job::Place { reply, .. } => {
            let _ = reply.send(output.and_then(|o| match o {
                Output::Placed(answer) => Ok(answer),
                _ => Err(mismatch()),
            }));
        }
        Job::Cancel { reply, .. } => {
            let _ = reply.send(output.and_then(|o| match o {
                Output::Cancelled(view) => Ok(view.map(|v| *v)),
                _ => Err(mismatch()),
            }));
        }
        Job::CancelAccount { reply, .. } => {
            let _ = reply.send(output.and_then(|o| match o {
                Output::Counted(count) => Ok(count),
                _ => Err(mismatch()),
            }));
        }
        Job::Depth { reply, .. } => {
            if let Ok(Output::Depth(depth)) = output {
                let _ = reply.send(depth);
            }
        }
    }
}

fn new_order(instrument: &Instrument, order: &ValidOrder) -> NewOrder {
    NewOrder {
        id: OrderId(order.id.as_u128()),
        account: AccountId(order.account.as_u128()),
        side: order.side,
        kind: order.kind(instrument),
        quantity: order.lots(instrument),
        time_in_force: order.time_in_force,
        post_only: order.post_only,
        self_trade: SelfTradePrevention::CancelTaker,
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

fn time_in_force_name(order: &ValidOrder) -> &'static str {
    match order.time_in_force {
        matching::TimeInForce::Gtc => "gtc",
        matching::TimeInForce::Ioc => "ioc",
        matching::TimeInForce::Fok => "fok",
    }
}

fn event(
    event_type: &str,
    aggregate: Uuid,
    sequence: u64,
    payload: serde_json::Value,
) -> events::Envelope {
    events::Envelope::new(
        PRODUCER,
        event_type,
        1,
        aggregate.to_string(),
        i64::try_from(sequence).unwrap_or(i64::MAX),
        payload,
    )
}

/// Writes what one placed order did, and its answer, in the batch's transaction.
async fn write_place(
    tx: &mut PgConnection,
    instrument: &Instrument,
    order: &ValidOrder,
    claim: &Claim,
    emitted: &[Emitted],
) -> Result<Answer> {
    let taker = order.id;
    let mut status = "open";
    let mut rested_at = None;
    let mut rejection = None;
    for e in emitted {
        match e.event {
            Event::Rested { .. } => rested_at = Some(i64::try_from(e.sequence).unwrap_or(i64::MAX)),
            Event::Cancelled { id, .. } if id.0 == taker.as_u128() => status = "cancelled",
            Event::Rejected { reason, .. } => {
                status = "rejected";
                rejection = Some(reason);
            }
            _ => {}
        }
    }
    let inserted = store::insert_order(
        &mut *tx,
        &NewOrderRow {
            id: taker,
            account_id: order.account,
            client_order_id: order.client_order_id.as_deref(),
            symbol: &order.symbol,
            side: side_name(order.side),
            order_type: match order.order_type {
                OrderType::Limit => "limit",
                OrderType::Market => "market",
            },
            price: order.price,
            quantity: order.quantity,
            status,
            time_in_force: time_in_force_name(order),
            post_only: order.post_only,
            book_sequence: rested_at,
        },
    )
    .await?;
    if !inserted {
        // The book has already seen this order: the caller rebuilds it from the database.
        return Err(Error::ClientOrderIdTaken);
    }
    let mut outbox = Vec::new();
    let first_sequence = emitted.first().map_or(0, |e| e.sequence);
    if rejection.is_none() {
        outbox.push(event(
            "OrderAccepted",
            taker,
            first_sequence,
            json!({
                "order_id": taker, "account_id": order.account, "symbol": order.symbol,
                "side": side_name(order.side), "price": order.price, "quantity": order.quantity,
            }),
        ));
    }
    for e in emitted {
        apply_event(&mut *tx, instrument, e, &mut outbox).await?;
    }
    if let Some(reason) = rejection {
        outbox.push(event(
            "OrderRejected",
            taker,
            first_sequence,
            json!({
                "order_id": taker, "account_id": order.account, "symbol": order.symbol,
                "reason": format!("{reason:?}"),
            }),
        ));
    }
    events::outbox::append_all(&mut *tx, STREAM, &outbox).await?;
    let (order_row, fills) = store::own_order(&mut *tx, taker, order.account)
        .await?
        .ok_or_else(|| Error::Internal("order vanished inside its transaction".to_owned()))?;
    let answer = match rejection {
        None => Answer {
            status: 201,
            body: serde_json::to_string(&OrderView::new(&order_row, &fills, instrument))
                .map_err(|e| Error::Internal(e.to_string()))?,
        },
        Some(reason) => {
            let (code, detail) = crate::view::rejection_problem(reason);
            let problem = service_kit::http::Problem::unprocessable(code, detail);
            Answer {
                status: 422,
                body: problem_body(problem)?,
            }
        }
    };
    idempotency::complete(&mut *tx, claim, answer.status, &answer.body).await?;
    Ok(answer)
}

/// The JSON of a problem as the client receives it (request id included).
fn problem_body(problem: service_kit::http::Problem) -> Result<String> {
    let mut details = problem.details().clone();
    details.request_id = service_kit::http::observe::current_request_id();
    serde_json::to_string(&details).map_err(|e| Error::Internal(e.to_string()))
}

/// Applies one book event to the stored state (makers' fills, trades, cancellations).
async fn apply_event(
    conn: &mut PgConnection,
    instrument: &Instrument,
    emitted: &Emitted,
    outbox: &mut Vec<events::Envelope>,
) -> Result<()> {
    match emitted.event {
        Event::Trade {
            maker,
            maker_account,
            taker,
            taker_account,
            taker_side,
            price,
            quantity,
            maker_remaining,
            taker_remaining,
        } => {
            let price = price * instrument.tick_size;
            let quantity = i64::try_from(quantity).unwrap_or(i64::MAX) * instrument.lot_size;
            let (maker, taker) = (Uuid::from_u128(maker.0), Uuid::from_u128(taker.0));
            let trade_id = Uuid::now_v7();
            let sequence = i64::try_from(emitted.sequence).unwrap_or(i64::MAX);
            let status = |remaining: u64| {
                if remaining == 0 {
                    "filled"
                } else {
                    "partially_filled"
                }
            };
            store::add_fill(conn, maker, price, quantity, status(maker_remaining)).await?;
            store::add_fill(conn, taker, price, quantity, status(taker_remaining)).await?;
            store::insert_trade(
                conn,
                &NewTrade {
                    id: trade_id,
                    symbol: &instrument.symbol,
                    price,
                    quantity,
                    maker_order_id: maker,
                    taker_order_id: taker,
                    maker_account: Uuid::from_u128(maker_account.0),
                    taker_account: Uuid::from_u128(taker_account.0),
                    taker_side: side_name(taker_side),
                    sequence,
                },
            )
            .await?;
            outbox.push(event("TradeExecuted", trade_id, emitted.sequence, json!({
                "trade_id": trade_id, "symbol": instrument.symbol, "price": price, "quantity": quantity,
                "maker_order_id": maker, "taker_order_id": taker,
                "maker_account_id": Uuid::from_u128(maker_account.0), "taker_account_id": Uuid::from_u128(taker_account.0),
                "taker_side": side_name(taker_side),
            })));
            for (order, remaining) in [(maker, maker_remaining), (taker, taker_remaining)] {
                if remaining == 0 {
                    outbox.push(event(
                        "OrderCompleted",
                        order,
                        emitted.sequence,
                        json!({ "order_id": order, "symbol": instrument.symbol }),
                    ));
                }
            }
        }
        Event::Cancelled {
            id,
            remaining,
            reason,
            ..
        } => {
            let id = Uuid::from_u128(id.0);
            store::set_order_status(conn, id, "cancelled").await?;
            let remaining = i64::try_from(remaining).unwrap_or(i64::MAX) * instrument.lot_size;
            outbox.push(event(
                "OrderCancelled",
                id,
                emitted.sequence,
                json!({
                    "order_id": id, "symbol": instrument.symbol, "remaining": remaining,
                    "reason": cancel_reason(reason),
                }),
            ));
        }
        Event::Accepted { .. } | Event::Rested { .. } | Event::Rejected { .. } => {}
    }
    Ok(())
}

fn cancel_reason(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Requested => "requested",
        CancelReason::Unfilled => "unfilled",
        CancelReason::FillOrKill => "fill_or_kill",
        CancelReason::SelfTrade => "self_trade",
        CancelReason::MassCancel => "mass_cancel",
    }
}

/// Writes the effects of book events that answer nothing but a count (mass cancels).
async fn write_events(
    tx: &mut PgConnection,
    instrument: &Instrument,
    emitted: &[Emitted],
) -> Result<()> {
    let mut outbox = Vec::new();
    for e in emitted {
        apply_event(&mut *tx, instrument, e, &mut outbox).await?;
    }
    events::outbox::append_all(&mut *tx, STREAM, &outbox).await?;
    Ok(())
}

async fn write_cancel(
    tx: &mut PgConnection,
    instrument: &Instrument,
    order_id: Uuid,
    account: Uuid,
    emitted: &[Emitted],
) -> Result<Option<OrderView>> {
    let mut outbox = Vec::new();
    for e in emitted {
        apply_event(&mut *tx, instrument, e, &mut outbox).await?;
    }
    events::outbox::append_all(&mut *tx, STREAM, &outbox).await?;
    let cancelled = emitted
        .iter()
        .any(|e| matches!(e.event, Event::Cancelled { .. }));
    let view = if cancelled {
        store::own_order(&mut *tx, order_id, account)
            .await?
            .map(|(order, fills)| OrderView::new(&order, &fills, instrument))
    } else {
        None
    };
    Ok(view)
}
