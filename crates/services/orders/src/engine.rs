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
    AccountId, Book, Command, Event, NewOrder, OrderId, RestingOrder, SelfTradePrevention, Side,
};
use service_kit::Supervisor;
use service_kit::http::RequestContext;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use contracts::fees::Fees;

use crate::book_feed::BookFeed;
use crate::error::{Error, Result};
use crate::group_commit::BatchWrites;
use crate::instruments::Instrument;
use crate::order_entry::ValidOrder;
use crate::store;
use crate::view::OrderView;
use service_kit::idempotency::{self, Claim};

/// The answer to a placed order: an HTTP status and its JSON body (also what is replayed).
pub use service_kit::idempotency::Answer;

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

    /// Runs synchronous `work` as part of the request: its logs in the request's span, its
    /// events carrying the request's correlation and trace.
    fn enter<R>(&self, work: impl FnOnce() -> R) -> R {
        self.span
            .in_scope(|| service_kit::http::observe::within_sync(self.context.clone(), work))
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
    /// Shown on the fills of the orders it answers with.
    fees: Fees,
    quotes: Quotes,
    feed: BookFeed,
    tasks: Arc<Mutex<HashMap<String, mpsc::Sender<Job>>>>,
    /// Owns the matching tasks: a task that stopped (its book could not be rebuilt, or it
    /// panicked) is started again by the next order for its symbol.
    supervisor: Supervisor,
}

impl Engines {
    /// `capacity`: requests that may wait per symbol; beyond it they are shed with 503.
    pub fn new(
        pool: PgPool,
        capacity: usize,
        fees: Fees,
        feed: BookFeed,
        supervisor: Supervisor,
    ) -> Self {
        Self {
            pool,
            capacity,
            fees,
            quotes: Quotes::default(),
            feed,
            supervisor,
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
        self.supervisor.spawn_tracked(
            format!("matching:{}", instrument.symbol),
            run(
                self.pool.clone(),
                instrument.clone(),
                self.fees,
                self.quotes.clone(),
                self.feed.clone(),
                receiver,
            ),
        );
        tasks.insert(instrument.symbol.clone(), sender.clone());
        Ok(sender)
    }

    fn send(&self, instrument: &Instrument, job: Job) -> Result<()> {
        self.queue(instrument)?
            .try_send(job)
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => Error::Overloaded,
                mpsc::error::TrySendError::Closed(_) => Error::MatchingStopped,
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
        answer.await.map_err(|_| Error::MatchingStopped)
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

    pub fn quotes(&self) -> &Quotes {
        &self.quotes
    }

    /// Where a market order on `side` is priced from: the last trade, else the best quote it
    /// would trade against. In quote minor units.
    pub async fn reference_price(
        &self,
        instrument: &Instrument,
        side: Side,
    ) -> Result<Option<i64>> {
        if let (Some(last), _) = store::ticker(&self.pool, &instrument.symbol).await? {
            return Ok(Some(last));
        }
        let top = self.depth(instrument, 1).await?;
        let opposite = match side {
            Side::Buy => &top.asks,
            Side::Sell => &top.bids,
        };
        Ok(opposite.first().map(|l| l.price * instrument.tick_size))
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

/// A job's output before its batch is written: a cancel's view is read after the writes.
enum Pending {
    Placed(Answer),
    Cancelled(Option<(Uuid, Uuid)>),
    Counted(u64),
    /// Levels wanted; read at the end of the batch.
    Depth(usize),
}

async fn run(
    pool: PgPool,
    instrument: Instrument,
    fees: Fees,
    quotes: Quotes,
    feed: BookFeed,
    mut jobs: mpsc::Receiver<Job>,
) {
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
    let mut published = book.sequence();
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
        let committed = commit_batch(&pool, &instrument, fees, &mut book, &batch).await;
        metrics::histogram!("orders_matching_batch_seconds", "symbol" => symbol.clone())
            .record(started.elapsed());
        match committed {
            Ok(outputs) => {
                // Before anyone hears back: a client that saw its order placed finds the
                // book's new quotes in what risk is told next.
                publish_quotes(&quotes, &instrument, &book);
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
                    match commit_batch(&pool, &instrument, fees, &mut book, single).await {
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
        // After a replay too (the book was rebuilt).
        publish_quotes(&quotes, &instrument, &book);
        if book.sequence() != published {
            feed.offer(&instrument, &book, published);
            published = book.sequence();
        }
    }
}

fn publish_quotes(quotes: &Quotes, instrument: &Instrument, book: &Book) {
    let (bids, asks) = book.depth(1);
    let price = |levels: &[matching::Level]| levels.first().map(|l| l.price * instrument.tick_size);
    quotes.set(&instrument.symbol, price(&bids), price(&asks));
}

/// The best bid and ask of each book as its matching task last left it (quote minor units),
/// readable without a trip through the task: what risk's collar falls back to before the
/// first trade (the mid).
#[derive(Clone, Default)]
pub struct Quotes(Arc<std::sync::RwLock<HashMap<String, BestPrices>>>);

/// (best bid, best ask), either side possibly empty.
type BestPrices = (Option<i64>, Option<i64>);

impl Quotes {
    fn set(&self, symbol: &str, bid: Option<i64>, ask: Option<i64>) {
        if let Ok(mut quotes) = self.0.write() {
            quotes.insert(symbol.to_owned(), (bid, ask));
        }
    }

    /// Halfway between the best bid and ask, when both exist.
    pub fn mid(&self, symbol: &str) -> Option<i64> {
        let quotes = self.0.read().ok()?;
        match quotes.get(symbol) {
            Some((Some(bid), Some(ask))) => Some(bid + (ask - bid) / 2),
            _ => None,
        }
    }
}

/// Applies `jobs` to the book, then writes all their effects in one transaction.
async fn commit_batch(
    pool: &PgPool,
    instrument: &Instrument,
    fees: Fees,
    book: &mut Book,
    jobs: &[Job],
) -> Result<Vec<Output>> {
    let mut writes = BatchWrites::new(instrument, fees);
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
                Pending::Placed(origin.enter(|| writes.place(order, claim, &events))?)
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
                origin.enter(|| writes.book_events(&events));
                let cancelled = events
                    .iter()
                    .any(|e| matches!(e.event, Event::Cancelled { .. }));
                // The order may predate this batch: its view is read once the batch is written.
                Pending::Cancelled(cancelled.then_some((*order_id, *account)))
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
                origin.enter(|| writes.book_events(&events));
                Pending::Counted(events.len() as u64)
            }
            // Read once the whole batch is applied: a snapshot is always of a batch's end, the
            // state the book feed publishes too, so a WebSocket client's updates chain on from
            // its snapshot's sequence without a gap.
            Job::Depth { levels, .. } => Pending::Depth(*levels),
        };
        outputs.push(output);
    }
    let mut tx = pool.begin().await?;
    writes.flush(&mut tx).await?;
    let mut answers = Vec::with_capacity(outputs.len());
    for output in outputs {
        answers.push(match output {
            Pending::Cancelled(Some((order_id, account))) => {
                Output::Cancelled(store::own_order(&mut tx, order_id, account).await?.map(
                    |(order, fills)| Box::new(OrderView::new(&order, &fills, instrument, fees)),
                ))
            }
            Pending::Cancelled(None) => Output::Cancelled(None),
            Pending::Placed(answer) => Output::Placed(answer),
            Pending::Counted(count) => Output::Counted(count),
            Pending::Depth(levels) => {
                let (bids, asks) = book.depth(levels);
                Output::Depth(Depth {
                    sequence: book.sequence(),
                    bids,
                    asks,
                })
            }
        });
    }
    tx.commit().await?;
    Ok(answers)
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
        time_in_force: order.matching_time_in_force(),
        post_only: order.post_only,
        self_trade: SelfTradePrevention::CancelTaker,
    }
}
