//! Background tasks, owned (REL-02, REL-11).
//!
//! Every task a service runs beside its listener — outbox relays, stream consumers, notifiers,
//! matching tasks — is spawned through the service's [`Supervisor`], never with a bare
//! `tokio::spawn` whose handle is dropped. A dropped handle hides a dead task: the process
//! still says it is ready while its events pile up unread. Under the supervisor:
//!
//! - a task that can simply start again ([`Supervisor::spawn`]) is restarted, with full-jitter
//!   backoff, whenever it ends or panics before shutdown — counted in
//!   `service_task_restarts_total{service,task}` and logged;
//! - a task the service cannot work without and cannot restart, because it owns what would be
//!   lost ([`Supervisor::spawn_essential`]: the receiving end of a channel), fails the service
//!   when it ends or panics: readiness answers 503, the service drains and stops, the process
//!   exits non-zero, and the orchestrator starts a fresh one;
//! - a task whose owner starts it again when next needed ([`Supervisor::spawn_tracked`]: a
//!   symbol's matching task, started again by the next order) is only tracked, its panic
//!   logged and counted (`service_task_panics_total{service,task}`);
//! - a task that must see everything the others wrote ([`Supervisor::spawn_last`]: the outbox
//!   relay) is restarted like the first kind, but told to stop only once the listener has
//!   drained and every other task has ended — by a [`LastShutdown`], a token of its own type,
//!   so such a task cannot be handed the service's [`Shutdown`] by mistake;
//! - at shutdown the server waits for every task, within the grace period.
//!
//! Tasks stop by watching the service's [`Shutdown`], which they are handed, or when their
//! channel closes; the supervisor never aborts them, so a task is never cut off halfway
//! through a transaction it could have finished.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::Shutdown;
use crate::backoff::Backoff;

/// The backoff between two starts of a task that keeps ending.
const RESTART_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(10),
};

/// The stop token of a task that stops last ([`Supervisor::spawn_last`]): it fires only once
/// the service's listener has drained and every other task has ended. A task that must see
/// everything the others wrote (the outbox relay) takes this instead of a [`Shutdown`], so
/// handing it to [`Supervisor::spawn`] instead does not compile: run with the others, it would
/// stop before their last writes.
#[derive(Clone, Debug)]
pub struct LastShutdown(Shutdown);

impl LastShutdown {
    /// For a task run on its own, outside a supervisor (a test, a tool): nothing runs beside
    /// it to wait for, so it stops when `shutdown` fires.
    pub fn alone(shutdown: Shutdown) -> Self {
        Self(shutdown)
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_triggered()
    }

    /// Resolves once the task is told to stop.
    pub async fn triggered(&self) {
        self.0.triggered().await;
    }
}

/// The owner of one service's background tasks.
#[derive(Clone, Debug)]
pub struct Supervisor {
    service: &'static str,
    tracker: TaskTracker,
    shutdown: Shutdown,
    /// The tasks that stop last, and the token that tells them to: triggered by
    /// [`Supervisor::wait_until`] once every other task has ended.
    last: TaskTracker,
    last_shutdown: Shutdown,
    backoff: Backoff,
}

/// How a task's run ended.
enum Ended {
    Returned,
    Panicked(String),
}

impl Supervisor {
    /// The supervisor of `service`, whose tasks stop on `shutdown` (the service's token).
    pub fn new(service: &'static str, shutdown: &Shutdown) -> Self {
        Self {
            service,
            tracker: TaskTracker::new(),
            shutdown: shutdown.clone(),
            last: TaskTracker::new(),
            last_shutdown: Shutdown::new(),
            backoff: RESTART_BACKOFF,
        }
    }

    /// Restarts after `backoff` instead of the default (tests restart quickly).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Runs the future `task` makes, handed the service's shutdown, for the life of the
    /// service: whenever it ends or panics before shutdown, a new one is made and run after a
    /// backoff.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, task: F)
    where
        F: FnMut(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.restarting(&self.tracker, self.shutdown.clone(), name.into(), task);
    }

    /// [`Supervisor::spawn`] for a task that must outlast the others: the token it is handed
    /// fires only once the listener has drained and every other task has ended, so it sees
    /// everything they wrote. The outbox relay runs so, and publishes a stopping service's last
    /// events before the process exits instead of leaving them to the next one.
    pub fn spawn_last<F, Fut>(&self, name: impl Into<String>, mut task: F)
    where
        F: FnMut(LastShutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.restarting(
            &self.last,
            self.last_shutdown.clone(),
            name.into(),
            move |stop| task(LastShutdown(stop)),
        );
    }

    /// Runs `task` on `tracker`, made again after a backoff whenever it ends before `shutdown`.
    fn restarting<F, Fut>(
        &self,
        tracker: &TaskTracker,
        shutdown: Shutdown,
        name: String,
        mut task: F,
    ) where
        F: FnMut(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (service, backoff) = (self.service, self.backoff);
        // Born at zero: a dashboard's increase() and an alert's rule see the series before
        // the first restart, instead of "No data".
        metrics::counter!("service_task_restarts_total", "service" => service, "task" => name.clone())
            .increment(0);
        tracker.spawn(async move {
            let mut restarts: u32 = 0;
            loop {
                let ended = run_caught(task(shutdown.clone())).await;
                if shutdown.is_triggered() {
                    return;
                }
                report(service, &name, &ended, "restarting it");
                metrics::counter!("service_task_restarts_total", "service" => service, "task" => name.clone())
                    .increment(1);
                tokio::select! {
                    () = shutdown.triggered() => return,
                    () = tokio::time::sleep(backoff.delay(restarts)) => {}
                }
                restarts = restarts.saturating_add(1);
            }
        });
    }

    /// Runs the future `task` makes, handed the service's shutdown; the service cannot work
    /// without it and it cannot be started again: if it ends or panics before shutdown, the
    /// service fails ([`Shutdown::fail`]).
    pub fn spawn_essential<F, Fut>(&self, name: impl Into<String>, task: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (service, name, shutdown) = (self.service, name.into(), self.shutdown.clone());
        let task = task(shutdown.clone());
        self.tracker.spawn(async move {
            let ended = run_caught(task).await;
            if shutdown.is_triggered() {
                return;
            }
            report(
                service,
                &name,
                &ended,
                "the service cannot go on without it",
            );
            shutdown.fail(format!("essential task {name} stopped"));
        });
    }

    /// Runs `task` once, tracked: for a task its owner starts again when it is next needed.
    /// It ends by itself (its channel closes); a panic is logged and counted, nothing more.
    pub fn spawn_tracked<Fut>(&self, name: impl Into<String>, task: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (service, name) = (self.service, name.into());
        self.tracker.spawn(async move {
            if let Ended::Panicked(message) = run_caught(task).await {
                tracing::error!(service, task = name, panic = %message,
                    "background task panicked; its owner starts it again when needed");
                metrics::counter!("service_task_panics_total", "service" => service, "task" => name)
                    .increment(1);
            }
        });
    }

    /// Runs `work` to its end even if whoever awaits the handle goes away — for work that must
    /// not stop halfway (an order whose funds are held must reach the book or release them),
    /// which a request's cancellation (its client gone, its timeout) would otherwise cut.
    /// Tracked: shutdown waits for it. It runs in the caller's request context and span, so
    /// its logs, problems and events carry the request id and trace. A panic surfaces as the
    /// handle's error.
    pub fn complete<T, Fut>(&self, work: Fut) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let context = crate::http::observe::current_context();
        let span = tracing::Span::current();
        self.tracker
            .spawn(crate::http::observe::within(context, work.instrument(span)))
    }

    /// Waits until every task has ended, or `deadline`; `false` if some were still running.
    /// Call it once shutdown has been triggered (and the listener has drained): tasks end by
    /// watching it. The tasks that stop last are told to once the others have ended — or at
    /// the deadline, with nothing left of it.
    pub async fn wait_until(&self, deadline: Instant) -> bool {
        self.tracker.close();
        let others = tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok();
        self.last_shutdown.trigger();
        self.last.close();
        let last = tokio::time::timeout_at(deadline, self.last.wait())
            .await
            .is_ok();
        others && last
    }

    /// How many tasks are running.
    pub fn running(&self) -> usize {
        self.tracker.len() + self.last.len()
    }

    /// The service's shutdown, which its tasks watch.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

async fn run_caught(task: impl Future<Output = ()>) -> Ended {
    match AssertUnwindSafe(task).catch_unwind().await {
        Ok(()) => Ended::Returned,
        Err(panic) => Ended::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned()),
        ),
    }
}

fn report(service: &'static str, name: &str, ended: &Ended, then: &str) {
    match ended {
        Ended::Returned => {
            tracing::error!(
                service,
                task = name,
                "background task ended unexpectedly; {then}"
            );
        }
        Ended::Panicked(message) => {
            tracing::error!(service, task = name, panic = %message, "background task panicked; {then}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn supervisor(shutdown: &Shutdown) -> Supervisor {
        Supervisor::new("test", shutdown).with_backoff(Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        })
    }

    /// A task that counts its starts, ends at once for its first two (panicking when
    /// `panics`), then runs until shutdown; the third start is signalled.
    fn flaky(
        runs: Arc<AtomicUsize>,
        panics: bool,
        third: Arc<tokio::sync::Notify>,
    ) -> impl FnMut(Shutdown) -> futures_util::future::BoxFuture<'static, ()> {
        move |shutdown| {
            let (runs, third) = (runs.clone(), third.clone());
            Box::pin(async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if run < 3 {
                    if panics {
                        panic!("run {run} fails");
                    }
                    return;
                }
                third.notify_one();
                shutdown.triggered().await;
            })
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_is_started_again_until_shutdown() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        let (runs, third) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(tokio::sync::Notify::new()),
        );
        tasks.spawn("flaky", flaky(runs.clone(), false, third.clone()));
        third.notified().await;
        shutdown.trigger();
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(
            shutdown.failure().is_none(),
            "a restartable task fails nothing"
        );
    }

    #[tokio::test]
    async fn a_task_that_panics_is_started_again() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        let (runs, third) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(tokio::sync::Notify::new()),
        );
        tasks.spawn("panicky", flaky(runs.clone(), true, third.clone()));
        third.notified().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
    }

    #[tokio::test]
    async fn an_essential_task_that_dies_fails_the_service() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        tasks.spawn_essential("hold writer", |_| async { panic!("ledger corrupted") });
        shutdown.triggered().await;
        assert_eq!(
            shutdown.failure(),
            Some("essential task hold writer stopped")
        );
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
    }

    #[tokio::test]
    async fn tasks_that_end_at_shutdown_are_not_failures() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        tasks.spawn_essential("relay", |stop| async move { stop.triggered().await });
        shutdown.trigger();
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
        assert!(shutdown.failure().is_none());
    }

    #[tokio::test]
    async fn a_tracked_task_that_panics_fails_nothing() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        let (ran, started) = tokio::sync::oneshot::channel();
        tasks.spawn_tracked("matching:BTC-USD", async move {
            let _ = ran.send(());
            panic!("book corrupted");
        });
        started.await.unwrap();
        // Its owner starts it again when needed: the panic neither fails nor stops the service.
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
        assert!(shutdown.failure().is_none());
        assert!(!shutdown.is_triggered());
    }

    #[tokio::test]
    async fn work_to_complete_runs_to_its_end_without_its_caller_and_in_its_request() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        let (done, finished) = tokio::sync::oneshot::channel();
        let (go, release) = tokio::sync::oneshot::channel::<()>();
        let context = crate::http::RequestContext {
            request_id: "req-42".to_owned(),
            trace: crate::telemetry::TraceContext::child_of(None),
        };
        let handle = crate::http::observe::within_sync(Some(context), || {
            tasks.complete(async move {
                let _ = release.await;
                let _ = done.send(crate::http::observe::current_request_id());
            })
        });
        // The caller goes away (a request cut off by its timeout) before the work is done.
        drop(handle);
        let _ = go.send(());
        assert_eq!(finished.await.unwrap(), Some("req-42".to_owned()));
        shutdown.trigger();
        assert!(
            tasks
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
    }

    #[tokio::test]
    async fn a_task_that_stops_last_is_told_to_once_the_others_have_ended() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        // A writer that, told to stop, finishes its last piece of work when the test lets it.
        let (stopping, writer_stopping) = tokio::sync::oneshot::channel();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn_essential("writer", |stop| async move {
            stop.triggered().await;
            let _ = stopping.send(());
            let _ = finished.await;
        });
        let (handed, token) = tokio::sync::oneshot::channel();
        let mut handed = Some(handed);
        tasks.spawn_last("relay", move |stop| {
            if let Some(handed) = handed.take() {
                let _ = handed.send(stop.clone());
            }
            async move { stop.triggered().await }
        });
        let relay_stop = token.await.unwrap();

        shutdown.trigger();
        let waiting = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                tasks
                    .wait_until(Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        writer_stopping.await.unwrap();
        assert!(
            !relay_stop.is_triggered(),
            "the last task is told to stop while another is still working"
        );
        let _ = finish.send(());
        assert!(waiting.await.unwrap(), "every task ended");
        assert!(relay_stop.is_triggered());
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_at_the_deadline_on_a_task_that_ignores_shutdown() {
        let shutdown = Shutdown::new();
        let tasks = supervisor(&shutdown);
        tasks.spawn_essential("stubborn", |_| std::future::pending());
        shutdown.trigger();
        assert!(
            !tasks
                .wait_until(Instant::now() + Duration::from_secs(1))
                .await
        );
        assert_eq!(tasks.running(), 1);
    }
}
