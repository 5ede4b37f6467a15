//! Matching tasks: one per symbol across all replicas, the only writer of that symbol's book
//! (TRD-03). A replica runs the tasks of the symbols it owns ([`crate::ownership`]) and
//! forwards the commands of the others to their owner ([`crate::forwarding`]).
//!
//! Requests reach a task through a bounded queue; a full queue is answered with 503 at once
//! instead of growing without bound. The task executes a command on its in-memory [`Book`],
//! then commits the resulting order rows, trades, outbox events and the idempotency response
//! in one transaction, and only then answers. If that transaction fails, the book has moved
//! ahead of the database: the task rebuilds it from the database (as on start-up, REL-16) and
//! answers 503, so memory never disagrees with what was committed. Every batch also proves,
//! inside its transaction, that its task still owns the symbol (its epoch): a task that lost
//! the symbol while it was paused commits nothing, hands its queue back as `not_owner`, and
//! stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matching::{
    AccountId, Book, Command as BookCommand, Event, NewOrder, OrderId, RestingOrder,
    SelfTradePrevention, Side,
};
use serde::{Deserialize, Serialize};
use service_kit::http::RequestContext;
use service_kit::{Shutdown, Supervisor};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use contracts::checks::RiskStart;
use contracts::fees::Fees;

use crate::book_feed::BookFeed;
use crate::error::{Error, Result};
use crate::forwarding::Forwarder;
use crate::group_commit::BatchWrites;
use crate::instruments::Instrument;
use crate::order_entry::ValidOrder;
use crate::ownership::{self, Owner, Ownership};
use crate::store;
use crate::view::OrderView;
use service_kit::idempotency::Claim;

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

/// When an order's risk check stops being good for booking it (ADR 0023, "Catching up before
/// deciding"): a restarted risk waits out the bound before it asks for its mark, so no order
/// its previous process checked may commit after that. An instant in memory; on the wire to
/// another replica, the milliseconds left (replicas' clocks need not agree).
#[derive(Clone, Copy, Debug)]
pub struct CheckDeadline(std::time::Instant);

impl CheckDeadline {
    /// `valid_for` from now: taken before the check is asked, so the bound covers the check.
    pub fn after(valid_for: std::time::Duration) -> Self {
        Self(std::time::Instant::now() + valid_for)
    }

    fn passed(self) -> bool {
        std::time::Instant::now() > self.0
    }
}

impl Serialize for CheckDeadline {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let left = self
            .0
            .saturating_duration_since(std::time::Instant::now())
            .as_millis();
        serializer.serialize_u64(u64::try_from(left).unwrap_or(u64::MAX))
    }
}

impl<'de> Deserialize<'de> for CheckDeadline {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let left = u64::deserialize(deserializer)?;
        // At most 49 days (u32::MAX ms), so the instant it makes cannot overflow.
        let left = std::time::Duration::from_millis(left.min(u64::from(u32::MAX)));
        Ok(Self::after(left))
    }
}

/// What a matching task is asked to do; also what a replica forwards to a symbol's owner.
// A placement is nearly every command, and each is moved once into its task's queue: boxing
// the order would cost an allocation per order to save the rare cancel some bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Place {
        order: ValidOrder,
        claim: Claim,
        /// Milliseconds left on the wire; absent from replicas that predate it (no bound).
        #[serde(default, rename = "check_valid_for_ms")]
        check_deadline: Option<CheckDeadline>,
        /// The start of risk that checked the order: booked only while no later start's fence
        /// is up (ADR 0023). Absent from replicas that predate it: 0, which no fence shuts out.
        #[serde(default)]
        risk_start: RiskStart,
    },
    Cancel {
        order_id: Uuid,
        account: Uuid,
    },
    CancelAccount {
        account: Uuid,
    },
    Depth {
        levels: usize,
    },
}

/// A command's result, once its batch committed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    Placed(Answer),
    /// The cancelled order; `None` when it was not the caller's or not open.
    Cancelled(Option<Box<OrderView>>),
    Counted(u64),
    Depth(Depth),
}

struct Job {
    command: Command,
    origin: Origin,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// A consistent view of the top of a book, in ticks and lots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Depth {
    pub sequence: u64,
    pub bids: Vec<matching::Level>,
    pub asks: Vec<matching::Level>,
}

/// The matching tasks of the symbols this replica owns, and the way to the others' owners.
#[derive(Clone)]
pub struct Engines {
    pool: PgPool,
    queueing: Queueing,
    /// Shown on the fills of the orders it answers with.
    fees: Fees,
    quotes: Quotes,
    feed: BookFeed,
    ownership: Ownership,
    forwarder: Forwarder,
    /// The symbols whose book is here: their task's queue and the epoch it commits under.
    local: Arc<Mutex<HashMap<String, LocalBook>>>,
    /// Where the other symbols' books were last found.
    remote: Arc<Mutex<HashMap<String, Remote>>>,
    /// Owns the matching tasks: a task that stopped (its book could not be rebuilt, it
    /// panicked, or it lost its symbol) is started again when the symbol is next needed here.
    supervisor: Supervisor,
}

#[derive(Clone)]
struct LocalBook {
    queue: mpsc::Sender<Job>,
    epoch: i64,
}

/// Another replica's book: who keeps it and where it listens.
#[derive(Clone)]
struct Remote {
    replica: Uuid,
    address: String,
}

/// Where a command goes.
enum Route {
    Here(mpsc::Sender<Job>),
    There(Remote),
}

/// How often a command is routed again when the book moved under it, with a short wait in
/// between: a book that moves is back within a batch or two.
const ROUTE_ATTEMPTS: u32 = 5;
const ROUTE_BACKOFF: service_kit::backoff::Backoff = service_kit::backoff::Backoff {
    base: std::time::Duration::from_millis(20),
    cap: std::time::Duration::from_millis(500),
};

impl Engines {
    pub fn new(
        pool: PgPool,
        queueing: Queueing,
        fees: Fees,
        feed: BookFeed,
        ownership: Ownership,
        forwarder: Forwarder,
        supervisor: Supervisor,
    ) -> Self {
        Self {
            pool,
            queueing,
            fees,
            quotes: Quotes::default(),
            feed,
            ownership,
            forwarder,
            supervisor,
            local: Arc::default(),
            remote: Arc::default(),
        }
    }

    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// The queue of this replica's task for `instrument` under `epoch`, started if needed.
    fn start(&self, instrument: &Instrument, epoch: i64) -> Result<mpsc::Sender<Job>> {
        let mut local = self
            .local
            .lock()
            .map_err(|_| Error::Internal("engine registry poisoned".to_owned()))?;
        if let Some(book) = local.get(&instrument.symbol)
            && !book.queue.is_closed()
            && book.epoch >= epoch
        {
            return Ok(book.queue.clone());
        }
        let (queue, receiver) = mpsc::channel(self.queueing.capacity);
        self.supervisor.spawn_tracked(
            format!("matching:{}", instrument.symbol),
            run(
                self.pool.clone(),
                instrument.clone(),
                epoch,
                self.fees,
                self.quotes.clone(),
                self.feed.clone(),
                Queue {
                    jobs: receiver,
                    linger: self.queueing.linger,
                },
            ),
        );
        local.insert(
            instrument.symbol.clone(),
            LocalBook {
                queue: queue.clone(),
                epoch,
            },
        );
        if let Ok(mut remote) = self.remote.lock() {
            remote.remove(&instrument.symbol);
        }
        Ok(queue)
    }

    /// Stops routing `symbol` here (its task ends once its queue drains) and forgets where
    /// it was found elsewhere: the next command looks its owner up again.
    fn forget(&self, symbol: &str) {
        if let Ok(mut local) = self.local.lock() {
            local.remove(symbol);
        }
        if let Ok(mut remote) = self.remote.lock() {
            remote.remove(symbol);
        }
    }

    /// Forgets `route` for `symbol` after a command sent along it failed — that route only.
    /// Between the route being read and the failure, this replica may have taken the symbol
    /// over and started its task: forgetting that task too would leave it running unseen while
    /// the next command starts a second one under the same epoch, and two books of one symbol
    /// would both pass the fence.
    fn forget_failed(&self, symbol: &str, route: &Route) {
        match route {
            Route::Here(queue) => {
                if let Ok(mut local) = self.local.lock() {
                    forget_local(&mut local, symbol, queue);
                }
            }
            Route::There(owner) => {
                if let Ok(mut remote) = self.remote.lock() {
                    forget_remote(&mut remote, symbol, owner);
                }
            }
        }
    }

    fn cached(&self, symbol: &str) -> Option<Route> {
        if let Some(book) = self.local.lock().ok()?.get(symbol)
            && !book.queue.is_closed()
        {
            return Some(Route::Here(book.queue.clone()));
        }
        let remote = self.remote.lock().ok()?;
        remote
            .get(symbol)
            .map(|address| Route::There(address.clone()))
    }

    async fn route(&self, instrument: &Instrument) -> Result<Route> {
        if let Some(route) = self.cached(&instrument.symbol) {
            return Ok(route);
        }
        match self.ownership.resolve(&instrument.symbol).await? {
            Some(Owner::Here { epoch }) => Ok(Route::Here(self.start(instrument, epoch)?)),
            Some(Owner::There { replica, address }) => {
                let owner = Remote { replica, address };
                if let Ok(mut remote) = self.remote.lock() {
                    remote.insert(instrument.symbol.clone(), owner.clone());
                }
                Ok(Route::There(owner))
            }
            None => Err(Error::NotFound),
        }
    }

    /// Runs `command` on the symbol's book, wherever it is kept.
    async fn ask(&self, instrument: &Instrument, command: Command) -> Result<Outcome> {
        self.ask_routed(instrument, command, true).await
    }

    /// Runs a command forwarded by another replica to `owner`: here, or `not_owner` — when
    /// this replica is not the one the sender meant (an address reused by a new process) or
    /// no longer keeps the book. Never forwarded on, so two replicas with stale views cannot
    /// bounce a command between them.
    pub async fn ask_owner(
        &self,
        instrument: &Instrument,
        owner: Uuid,
        command: Command,
    ) -> Result<Outcome> {
        if owner != self.ownership.replica() {
            return Err(Error::NotOwner);
        }
        self.ask_routed(instrument, command, false).await
    }

    async fn ask_routed(
        &self,
        instrument: &Instrument,
        command: Command,
        forward: bool,
    ) -> Result<Outcome> {
        for attempt in 0..ROUTE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(ROUTE_BACKOFF.delay(attempt - 1)).await;
            }
            let route = self.route(instrument).await?;
            let outcome = match &route {
                Route::Here(queue) => self.ask_here(queue, command.clone()).await,
                Route::There(owner) if forward => {
                    let sent = self
                        .forwarder
                        .send(&owner.address, owner.replica, &instrument.symbol, &command)
                        .await;
                    if sent.is_err() {
                        // Unreachable, or it answered from a book that moved: look again.
                        self.forget_failed(&instrument.symbol, &route);
                    }
                    sent
                }
                Route::There(_) => Err(Error::NotOwner),
            };
            match outcome {
                // The book moved (fenced, released, or its task gone before taking the job):
                // the command never ran, so it may be routed again.
                Err(Error::NotOwner) if forward => self.forget_failed(&instrument.symbol, &route),
                Err(Error::NotOwner) => {
                    self.forget_failed(&instrument.symbol, &route);
                    return Err(Error::NotOwner);
                }
                other => return other,
            }
        }
        Err(Error::OwnerMoving)
    }

    async fn ask_here(&self, queue: &mpsc::Sender<Job>, command: Command) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            origin: Origin::current(),
            reply,
        };
        queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded,
            // The task ended before taking the job: nothing ran.
            mpsc::error::TrySendError::Closed(_) => Error::NotOwner,
        })?;
        answer.await.map_err(|_| Error::MatchingStopped)?
    }

    pub async fn place(
        &self,
        instrument: &Instrument,
        order: ValidOrder,
        claim: Claim,
        check_deadline: CheckDeadline,
        risk_start: RiskStart,
    ) -> Result<Answer> {
        let command = Command::Place {
            order,
            claim,
            check_deadline: Some(check_deadline),
            risk_start,
        };
        match self.ask(instrument, command).await? {
            Outcome::Placed(answer) => Ok(answer),
            _ => Err(mismatch()),
        }
    }

    /// Cancels every resting order of `account` in this instrument; returns how many.
    pub async fn cancel_account(&self, instrument: &Instrument, account: Uuid) -> Result<u64> {
        match self
            .ask(instrument, Command::CancelAccount { account })
            .await?
        {
            Outcome::Counted(count) => Ok(count),
            _ => Err(mismatch()),
        }
    }

    /// Halfway between the best bid and ask, when both exist: what risk's collar falls back to
    /// before the first trade. Read without a trip through the task where the book is here.
    pub async fn mid(&self, instrument: &Instrument) -> Result<Option<i64>> {
        if let Some(Route::Here(_)) = self.cached(&instrument.symbol) {
            return Ok(self.quotes.mid(&instrument.symbol));
        }
        let top = self.depth(instrument, 1).await?;
        Ok(midpoint(
            best_price(&top.bids, instrument),
            best_price(&top.asks, instrument),
        ))
    }

    /// Where a market order on `side` is priced from: the last trade, else the best quote it
    /// would trade against. In quote minor units.
    pub async fn reference_price(
        &self,
        instrument: &Instrument,
        side: Side,
    ) -> Result<Option<i64>> {
        if let Some(last) = store::last_price(&self.pool, &instrument.symbol).await? {
            return Ok(Some(last));
        }
        let top = self.depth(instrument, 1).await?;
        let opposite = match side {
            Side::Buy => &top.asks,
            Side::Sell => &top.bids,
        };
        Ok(best_price(opposite, instrument))
    }

    /// The top `levels` of the book, read by the book's own task (so never torn).
    pub async fn depth(&self, instrument: &Instrument, levels: usize) -> Result<Depth> {
        match self.ask(instrument, Command::Depth { levels }).await? {
            Outcome::Depth(depth) => Ok(depth),
            _ => Err(mismatch()),
        }
    }

    /// Cancels the caller's resting order; `None` when it is not theirs or does not exist.
    pub async fn cancel(
        &self,
        instrument: &Instrument,
        order_id: Uuid,
        account: Uuid,
    ) -> Result<Option<OrderView>> {
        match self
            .ask(instrument, Command::Cancel { order_id, account })
            .await?
        {
            Outcome::Cancelled(view) => Ok(view.map(|v| *v)),
            _ => Err(mismatch()),
        }
    }

    /// Keeps this replica's share of the books until `stop`: renews its lease every second,
    /// takes orphaned symbols and hands surplus ones over ([`ownership::plan`]), starts the
    /// task of every symbol it owns (so a takeover rebuilds the book before the first order
    /// arrives) and stops routing to the ones it lost. On `stop` it gives its symbols up, so
    /// the other replicas take them at once.
    pub async fn keep_books(self, stop: Shutdown) {
        for round in 0u64.. {
            if let Err(err) = self.balance().await {
                tracing::warn!(error = %err, "could not renew this replica's books");
            }
            // Dead replicas' rows (every process has a new id) are kept a while for the
            // runbook's questions, then dropped.
            if round % 60 == 0
                && let Err(err) = self.ownership.purge_dead().await
            {
                tracing::warn!(error = %err, "could not purge dead replicas");
            }
            tokio::select! {
                () = stop.triggered() => break,
                () = tokio::time::sleep(ownership::RENEW_EVERY) => {}
            }
        }
        match self.ownership.leave().await {
            Ok(()) => tracing::info!("gave up this replica's books"),
            Err(err) => {
                tracing::warn!(error = %err, "could not give up this replica's books; they move when its lease runs out")
            }
        }
    }

    async fn balance(&self) -> Result<()> {
        self.ownership.renew().await?;
        let me = self.ownership.replica();
        let (owners, live) = self.ownership.survey().await?;
        let plan = ownership::plan(me, &owners, &live);
        for (symbol, seen) in &plan.take {
            self.ownership.take(symbol, *seen, me).await?;
        }
        for (symbol, epoch, to) in &plan.hand_over {
            if self.ownership.take(symbol, *epoch, *to).await?.is_some() {
                self.forget(symbol);
            }
        }
        if plan.take.is_empty() && plan.hand_over.is_empty() {
            self.follow(&owners).await?;
        } else {
            // Act on what the moves left, read again.
            let (owners, _) = self.ownership.survey().await?;
            self.follow(&owners).await?;
        }
        Ok(())
    }

    /// Starts the task of every symbol owned here; forgets the local task of every symbol
    /// owned elsewhere.
    async fn follow(&self, owners: &[store::OwnerRow]) -> Result<()> {
        let me = self.ownership.replica();
        let mut owned = 0;
        for row in owners {
            if row.replica == Some(me) {
                owned += 1;
                let running = self
                    .local
                    .lock()
                    .map_err(|_| Error::Internal("engine registry poisoned".to_owned()))?
                    .get(&row.symbol)
                    .is_some_and(|book| book.epoch == row.epoch && !book.queue.is_closed());
                if !running
                    && let Some(instrument) = store::instrument(&self.pool, &row.symbol).await?
                {
                    self.start(&instrument, row.epoch)?;
                }
            } else {
                // Only a newer epoch means the book moved: a survey older than this replica's
                // own takeover still names the previous owner.
                let superseded = self
                    .local
                    .lock()
                    .map_err(|_| Error::Internal("engine registry poisoned".to_owned()))?
                    .get(&row.symbol)
                    .is_some_and(|book| book.epoch < row.epoch);
                if superseded {
                    self.forget(&row.symbol);
                }
            }
        }
        metrics::gauge!("orders_owned_symbols").set(owned as f64);
        Ok(())
    }
}

/// Drops `symbol`'s local task from the registry if it is still the one behind `queue`: a
/// newer task started meanwhile stays.
fn forget_local(local: &mut HashMap<String, LocalBook>, symbol: &str, queue: &mpsc::Sender<Job>) {
    if local
        .get(symbol)
        .is_some_and(|book| book.queue.same_channel(queue))
    {
        local.remove(symbol);
    }
}

/// Drops where `symbol`'s book was found if it still names `owner`.
fn forget_remote(remote: &mut HashMap<String, Remote>, symbol: &str, owner: &Remote) {
    if remote
        .get(symbol)
        .is_some_and(|found| found.replica == owner.replica && found.address == owner.address)
    {
        remote.remove(symbol);
    }
}

fn mismatch() -> Error {
    Error::Internal("a command answered with another command's outcome".to_owned())
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
            side: crate::order_entry::engine_side(order.side),
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

/// How commands wait for one symbol's matching task.
#[derive(Clone, Copy, Debug)]
pub struct Queueing {
    /// Commands that may wait; beyond, they are shed with 503 (`BOURSE_ORDERS_QUEUE_CAPACITY`).
    pub capacity: usize,
    /// How long a batch that found other commands queued waits for more before it commits
    /// (`BOURSE_ORDERS_MATCHING_LINGER_MS`; zero: never).
    pub linger: Duration,
}

/// A matching task's end of its queue.
struct Queue<T> {
    jobs: mpsc::Receiver<T>,
    linger: Duration,
}

impl<T> Queue<T> {
    /// Fills `batch` (empty) with the next batch; `false` once the queue is closed and empty.
    ///
    /// Group commit: whatever queued up while the last batch was committing goes together, so
    /// throughput is not one commit per order. When that found company — orders are arriving
    /// faster than batches commit — the batch also waits up to `linger` for more, like
    /// PostgreSQL's `commit_delay` with `commit_siblings`: what a batch costs the database
    /// whatever its size (the fence, the round trips, the commit) is shared by more orders,
    /// which frees CPU for the rest of the order path (docs/performance.md, "A matching
    /// batch that lingers"). A lone command at a quiet time is never held back.
    async fn gather(&mut self, batch: &mut Vec<T>) -> bool {
        let Some(first) = self.jobs.recv().await else {
            return false;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match self.jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() > 1 && !self.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + self.linger;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, self.jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        true
    }
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
    epoch: i64,
    fees: Fees,
    quotes: Quotes,
    feed: BookFeed,
    mut queue: Queue<Job>,
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
    tracing::info!(%symbol, epoch, resting = book.len(), "matching task started");
    let batches = Batches {
        pool: &pool,
        instrument: &instrument,
        epoch,
        fees,
    };
    let mut published = book.sequence();
    // The newest start of risk this task knows has raised its fence: checks of earlier starts
    // are refused before they cost a batch (the fence in the database decides either way).
    let mut fence = RiskStart::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.gather(&mut batch).await {
        refuse_expired_checks(&mut batch);
        fence = fence.max(newest_check(&batch));
        refuse_fenced_checks(&mut batch, fence);
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("orders_matching_batch_size", "symbol" => symbol.clone())
            .record(batch.len() as f64);
        let started = std::time::Instant::now();
        let committed = batches.commit(&mut book, &batch).await;
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
            Err(Error::NotOwner) => return lost(&symbol, epoch, batch.drain(..), queue.jobs),
            Err(err) => {
                // A start of risk raised its fence while the batch was gathered: its checks of
                // earlier starts go, the rest are replayed below.
                if let Error::RiskFenced { newest } = err {
                    tracing::info!(%symbol, newest = newest.0, "a later start of risk fenced off checks of this batch");
                    fence = fence.max(newest);
                    refuse_fenced_checks(&mut batch, fence);
                }
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
                let mut replayed = batch.drain(..);
                while let Some(job) = replayed.next() {
                    let single = std::slice::from_ref(&job);
                    match batches.commit(&mut book, single).await {
                        Ok(mut outputs) => match outputs.pop() {
                            Some(output) => reply(job, Ok(output)),
                            None => reply(job, Err(Error::Internal("no output".to_owned()))),
                        },
                        Err(Error::NotOwner) => {
                            return lost(
                                &symbol,
                                epoch,
                                std::iter::once(job).chain(replayed),
                                queue.jobs,
                            );
                        }
                        Err(err) => {
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

/// Answers `check_expired` to the placements whose risk check is too old to book them, and
/// takes them out of the batch: they never reach the book (ADR 0023).
fn refuse_expired_checks(batch: &mut Vec<Job>) {
    let expired = |job: &Job| {
        matches!(
            job.command,
            Command::Place {
                check_deadline: Some(deadline),
                ..
            } if deadline.passed()
        )
    };
    refuse_checks(batch, expired, "orders_check_expired_total");
}

/// Takes the placements `refused` picks out of the batch and answers them `check_expired`,
/// counted in `counter`: they never reach the book.
fn refuse_checks(batch: &mut Vec<Job>, refused: impl Fn(&Job) -> bool, counter: &'static str) {
    if !batch.iter().any(&refused) {
        return;
    }
    let (refused, current): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(refused);
    batch.extend(current);
    for job in refused {
        metrics::counter!(counter).increment(1);
        reply(job, Err(Error::CheckExpired));
    }
}

/// The starts of risk that checked the batch's placements, leaving out checks without a
/// number: a risk of a release before the numbers passed those, and no fence shuts them out,
/// so that risk rolled back alone keeps trading (a start after it waits out the bound instead).
fn checks_starts(batch: &[Job]) -> impl Iterator<Item = RiskStart> + '_ {
    batch.iter().filter_map(|job| match job.command {
        Command::Place { risk_start, .. } if !risk_start.is_unnumbered() => Some(risk_start),
        _ => None,
    })
}

/// The newest start of risk among the batch's checks. Its verdicts come only once its mark is
/// written, after its fence went up, so every earlier start is fenced off already.
fn newest_check(batch: &[Job]) -> RiskStart {
    checks_starts(batch).max().unwrap_or_default()
}

/// The earliest start of risk among the batch's numbered checks, which the batch's fence
/// compares; `None` when it has none.
fn earliest_check(batch: &[Job]) -> Option<RiskStart> {
    checks_starts(batch).min()
}

/// Answers `check_expired` to the placements checked by a start of risk earlier than `fence`,
/// and takes them out of the batch: the start whose fence is up does not count their funds
/// (ADR 0023, "A fence instead of the wait").
fn refuse_fenced_checks(batch: &mut Vec<Job>, fence: RiskStart) {
    let fenced = |job: &Job| {
        matches!(
            job.command,
            Command::Place { risk_start, .. }
                if risk_start < fence && !risk_start.is_unnumbered()
        )
    };
    refuse_checks(batch, fenced, "orders_checks_fenced_total");
}

/// The symbol moved to another replica while this task held it (it was paused past its lease,
/// or cut off from the database): nothing of `batch` committed, so it and everything queued
/// behind it is answered `not_owner` — the callers route those commands to the new owner —
/// and the task ends with its book.
fn lost(symbol: &str, epoch: i64, batch: impl Iterator<Item = Job>, mut jobs: mpsc::Receiver<Job>) {
    tracing::warn!(%symbol, epoch, "this replica lost the symbol; its queue goes to the new owner");
    metrics::counter!("orders_symbols_lost_total").increment(1);
    for job in batch {
        reply(job, Err(Error::NotOwner));
    }
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        reply(job, Err(Error::NotOwner));
    }
}

fn publish_quotes(quotes: &Quotes, instrument: &Instrument, book: &Book) {
    let (bids, asks) = book.depth(1);
    quotes.set(
        &instrument.symbol,
        best_price(&bids, instrument),
        best_price(&asks, instrument),
    );
}

/// The best price of one side of a book, in quote minor units.
fn best_price(levels: &[matching::Level], instrument: &Instrument) -> Option<i64> {
    levels.first().map(|l| l.price * instrument.tick_size)
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
        let (bid, ask) = quotes.get(symbol)?;
        midpoint(*bid, *ask)
    }
}

/// Halfway between a best bid and ask (quote minor units, rounded down), when both exist.
fn midpoint(bid: Option<i64>, ask: Option<i64>) -> Option<i64> {
    Some(bid? + (ask? - bid?) / 2)
}

/// What every batch of one task shares.
struct Batches<'a> {
    pool: &'a PgPool,
    instrument: &'a Instrument,
    /// The task's ownership of the symbol, proven in every batch's transaction.
    epoch: i64,
    fees: Fees,
}

impl Batches<'_> {
    /// Applies `jobs` to the book, then writes all their effects in one transaction — only
    /// while the symbol's epoch is still this task's (`Error::NotOwner` otherwise).
    async fn commit(&self, book: &mut Book, jobs: &[Job]) -> Result<Vec<Outcome>> {
        let instrument = self.instrument;
        let phase = PhaseClock::start(&instrument.symbol);
        let mut writes = BatchWrites::new(instrument, self.fees);
        let mut outputs = Vec::with_capacity(jobs.len());
        let mut events = Vec::new();
        for job in jobs {
            events.clear();
            let origin = &job.origin;
            let output = match &job.command {
                Command::Place { order, claim, .. } => {
                    book.execute(
                        BookCommand::Place(new_order(instrument, order)),
                        &mut events,
                    );
                    Pending::Placed(origin.enter(|| writes.place(order, claim, &events))?)
                }
                Command::Cancel { order_id, account } => {
                    book.execute(
                        BookCommand::Cancel {
                            id: OrderId(order_id.as_u128()),
                            account: AccountId(account.as_u128()),
                        },
                        &mut events,
                    );
                    origin.enter(|| writes.book_events(&events))?;
                    let cancelled = events
                        .iter()
                        .any(|e| matches!(e.event, Event::Cancelled { .. }));
                    // The order may predate this batch: its view is read once the batch is
                    // written.
                    Pending::Cancelled(cancelled.then_some((*order_id, *account)))
                }
                Command::CancelAccount { account } => {
                    book.execute(
                        BookCommand::CancelAccount {
                            account: AccountId(account.as_u128()),
                        },
                        &mut events,
                    );
                    origin.enter(|| writes.book_events(&events))?;
                    Pending::Counted(events.len() as u64)
                }
                // Read once the whole batch is applied: a snapshot is always of a batch's end,
                // the state the book feed publishes too, so a WebSocket client's updates chain
                // on from its snapshot's sequence without a gap.
                Command::Depth { levels } => Pending::Depth(*levels),
            };
            outputs.push(output);
        }
        let phase = phase.lap("apply");
        let mut tx = service_kit::db::begin_batch(self.pool).await?;
        let phase = phase.lap("begin");
        // Behind the fence: a task that lost the symbol writes nothing, and the owner row stays
        // locked until this commit, so a takeover waits for it, then rebuilds the book with it
        // — from the sequence stored here, the last this batch gave out.
        writes
            .flush(&mut tx, self.epoch, book.sequence(), earliest_check(jobs))
            .await?;
        let phase = phase.lap("flush");
        let mut answers = Vec::with_capacity(outputs.len());
        for output in outputs {
            answers.push(match output {
                Pending::Cancelled(Some((order_id, account))) => {
                    Outcome::Cancelled(store::own_order(&mut tx, order_id, account).await?.map(
                        |(order, fills)| {
                            Box::new(OrderView::new(&order, &fills, instrument, self.fees))
                        },
                    ))
                }
                Pending::Cancelled(None) => Outcome::Cancelled(None),
                Pending::Placed(answer) => Outcome::Placed(answer),
                Pending::Counted(count) => Outcome::Counted(count),
                Pending::Depth(levels) => {
                    let (bids, asks) = book.depth(levels);
                    Outcome::Depth(Depth {
                        sequence: book.sequence(),
                        bids,
                        asks,
                    })
                }
            });
        }
        let phase = phase.lap("answers");
        tx.commit().await?;
        phase.lap("commit");
        Ok(answers)
    }
}

/// Times the steps of a batch one after another into `orders_matching_phase_seconds{phase}`:
/// `apply` (matching in memory and building the writes), then each round trip of the
/// transaction — `begin`, `flush` (the fence and the batch's writes), `answers` (cancels' reads)
/// and `commit`. Their sums over `orders_matching_batch_seconds`' say whether the task waits on
/// its own work or on the database (docs/performance.md, "The matching batch by phase").
struct PhaseClock<'a> {
    symbol: &'a str,
    at: std::time::Instant,
}

impl<'a> PhaseClock<'a> {
    fn start(symbol: &'a str) -> Self {
        Self {
            symbol,
            at: std::time::Instant::now(),
        }
    }

    /// Records the time since the last lap as `phase`; the next phase starts now.
    fn lap(self, phase: &'static str) -> Self {
        metrics::histogram!(
            "orders_matching_phase_seconds",
            "symbol" => self.symbol.to_owned(),
            "phase" => phase
        )
        .record(self.at.elapsed());
        Self::start(self.symbol)
    }
}

fn reply(job: Job, outcome: Result<Outcome>) {
    // The caller may be gone (its request cut off); the outcome stands regardless.
    let _ = job.reply.send(outcome);
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// On a paused clock: time moves only when every task waits, straight to the next timer,
    /// so what a batch waited is exact.
    #[tokio::test(start_paused = true)]
    async fn a_batch_that_found_company_lingers_for_more_and_a_lone_command_never_waits() {
        // Tokio's timers tick in milliseconds: a linger of a few ticks, arrivals between them.
        let linger = Duration::from_millis(5);
        let (commands, jobs) = mpsc::channel(16);
        let mut queue = Queue { jobs, linger };
        let mut batch = Vec::new();

        // A lone command at a quiet time is committed at once.
        commands.send(1).await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(queue.gather(&mut batch).await);
        assert_eq!(batch, [1]);
        assert_eq!(started.elapsed(), Duration::ZERO, "a lone command waited");

        // Two queued: the batch takes them, then waits out the linger and takes what arrives
        // within it; what arrives after goes in the next batch.
        batch.clear();
        commands.send(2).await.unwrap();
        commands.send(3).await.unwrap();
        let started = tokio::time::Instant::now();
        {
            let gathering = queue.gather(&mut batch);
            tokio::pin!(gathering);
            assert!(
                gathering.as_mut().now_or_never().is_none(),
                "with company it waits for more"
            );
            tokio::time::advance(Duration::from_millis(2)).await;
            commands.send(4).await.unwrap();
            assert!(gathering.await);
        }
        assert_eq!(batch, [2, 3, 4]);
        assert_eq!(started.elapsed(), linger);
        commands.send(5).await.unwrap();
        batch.clear();
        assert!(queue.gather(&mut batch).await);
        assert_eq!(batch, [5]);

        // With the linger off, a batch is what had queued, at once.
        let (commands, jobs) = mpsc::channel(16);
        let mut queue = Queue {
            jobs,
            linger: Duration::ZERO,
        };
        batch.clear();
        commands.send(6).await.unwrap();
        commands.send(7).await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(queue.gather(&mut batch).await);
        assert_eq!(
            (batch.as_slice(), started.elapsed()),
            (&[6, 7][..], Duration::ZERO)
        );

        // A closed queue ends the task once it is empty.
        drop(commands);
        batch.clear();
        assert!(!queue.gather(&mut batch).await);
    }

    fn local_book(epoch: i64) -> (LocalBook, mpsc::Receiver<Job>) {
        let (queue, receiver) = mpsc::channel(1);
        (LocalBook { queue, epoch }, receiver)
    }

    #[test]
    fn a_failed_route_forgets_that_route_and_never_a_task_started_since() {
        // A command read the route "BTC-USD is with replica A" and was forwarded; meanwhile this
        // replica took the symbol over and started its task. The forward then fails.
        let a = Remote {
            replica: Uuid::now_v7(),
            address: "http://10.0.0.1:8082".to_owned(),
        };
        let (task, _running) = local_book(3);
        let mut local = HashMap::from([("BTC-USD".to_owned(), task.clone())]);
        let mut remote = HashMap::from([("BTC-USD".to_owned(), a.clone())]);
        forget_remote(&mut remote, "BTC-USD", &a);
        assert!(remote.is_empty(), "the failed route is forgotten");
        assert!(
            local["BTC-USD"].queue.same_channel(&task.queue),
            "the task started here stays the symbol's one task"
        );

        // A task that answered not_owner is forgotten only if it is still the registered one:
        // a newer task (a later epoch taken back) stays.
        let (old, _ended) = local_book(2);
        forget_local(&mut local, "BTC-USD", &old.queue);
        assert!(local["BTC-USD"].queue.same_channel(&task.queue));
        forget_local(&mut local, "BTC-USD", &task.queue);
        assert!(local.is_empty());

        // Likewise a remote route learned again since (the book moved on to replica B).
        let b = Remote {
            replica: Uuid::now_v7(),
            address: "http://10.0.0.2:8082".to_owned(),
        };
        remote.insert("BTC-USD".to_owned(), b.clone());
        forget_remote(&mut remote, "BTC-USD", &a);
        assert_eq!(remote["BTC-USD"].replica, b.replica);
    }

    #[test]
    fn a_check_deadline_and_risk_start_travel_with_a_placement_and_may_be_absent() {
        let deadline = CheckDeadline::after(std::time::Duration::from_secs(3600));
        let wire = serde_json::to_value(deadline).unwrap();
        let left = wire.as_u64().unwrap();
        assert!(left > 0 && left <= 3_600_000, "{left} ms left");
        let back: CheckDeadline = serde_json::from_value(wire).unwrap();
        assert!(!back.passed());

        // A replica from before the bound forwards no deadline: booked as before. One from
        // before risk's starts were numbered forwards no start: 0, which no fence shuts out.
        let placement = Command::Place {
            order: ValidOrder {
                id: Uuid::now_v7(),
                account: Uuid::now_v7(),
                client_order_id: None,
                symbol: "BTC-USD".to_owned(),
                side: Side::Buy,
                order_type: crate::order_entry::OrderType::Limit,
                price: Some(3_000_000),
                quantity: 1_000_000,
                time_in_force: matching::TimeInForce::Gtc,
                post_only: false,
                protection: None,
            },
            claim: Claim {
                principal: Uuid::now_v7(),
                key: "key".to_owned(),
                token: Uuid::now_v7(),
                request_hash: Vec::new(),
                unwritten: true,
            },
            check_deadline: Some(deadline),
            risk_start: RiskStart(7),
        };
        let mut older = serde_json::to_value(&placement).unwrap();
        assert!(older["check_valid_for_ms"].is_u64());
        assert_eq!(older["risk_start"], 7);
        let fields = older.as_object_mut().unwrap();
        fields.remove("check_valid_for_ms");
        fields.remove("risk_start");
        let Command::Place {
            check_deadline,
            risk_start,
            ..
        } = serde_json::from_value(older).unwrap()
        else {
            panic!("not a placement");
        };
        assert!(check_deadline.is_none());
        assert_eq!(risk_start, RiskStart(0));
    }
}
