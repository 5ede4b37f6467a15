//! Requests that many callers make at once, answered together.
//!
//! A caller hands its item to a [`Combiner`] and waits for its answer. If no batch is being
//! answered, a task starts and answers the item at once. Items that arrive while a batch is
//! being answered wait for the next batch, which takes all of them, up to `most`. A busy moment
//! therefore costs one call for everyone in it, and a quiet one costs no more than before,
//! because nothing waits for a batch to fill.
//!
//! Order entry uses this for the idempotency keys' look-ups (one statement for many,
//! `idempotency::LookUps`) and for risk's pre-trade checks (one call for many, orders'
//! `funds`).
//!
//! The task ends when nobody waits, and starts again with the next item. A caller cut off while
//! it waits leaves the others' batch untouched. A task that panics answers nobody in its batch
//! (each gets [`Stopped`]), and the next item starts a new task.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::Supervisor;

/// How a batch of items is answered: one answer per item, in the items' order.
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;

    fn answer(&self, items: Vec<Self::Item>) -> BoxFuture<'_, Vec<Self::Answer>>;
}

/// The task answering the item stopped before it answered (it panicked, or answered fewer items
/// than it was given).
#[derive(Debug, thiserror::Error)]
#[error("the task answering {0} stopped")]
pub struct Stopped(pub &'static str);

pub struct Combiner<B: Batch>(Arc<Shared<B>>);

impl<B: Batch> Clone for Combiner<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

struct Shared<B: Batch> {
    /// What the batches are, for the task's name and for [`Stopped`].
    name: &'static str,
    /// The most items one batch takes.
    most: usize,
    batch: B,
    tasks: Supervisor,
    queue: Mutex<Queue<B>>,
}

struct Queue<B: Batch> {
    waiting: Vec<(B::Item, oneshot::Sender<B::Answer>)>,
    /// A task is answering; it takes whatever waits before it ends.
    answering: bool,
}

impl<B: Batch> Combiner<B> {
    /// `name` names the task (`"risk checks"`); batches run as tasks of `tasks`.
    pub fn new(name: &'static str, most: usize, batch: B, tasks: Supervisor) -> Self {
        Self(Arc::new(Shared {
            name,
            most: most.max(1),
            batch,
            tasks,
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                answering: false,
            }),
        }))
    }

    /// `item`'s answer, worked out together with whatever else is waiting.
    pub async fn submit(&self, item: B::Item) -> Result<B::Answer, Stopped> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push((item, answer));
            !std::mem::replace(&mut queue.answering, true)
        };
        if start {
            self.0
                .tasks
                .spawn_tracked(self.0.name, answer_while_waiting(self.0.clone()));
        }
        answered.await.map_err(|_| Stopped(self.0.name))
    }

    /// Items waiting for a batch to start (how many the next one will carry).
    pub fn waiting(&self) -> usize {
        let queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.waiting.len()
    }
}

/// Answers what waits, batch after batch, until nothing does.
async fn answer_while_waiting<B: Batch>(shared: Arc<Shared<B>>) {
    let mut running = Running {
        shared: &shared,
        ended: false,
    };
    loop {
        let taken: Vec<(B::Item, oneshot::Sender<B::Answer>)> = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.waiting.is_empty() {
                // Under the lock: an item arriving after this starts a task of its own.
                queue.answering = false;
                running.ended = true;
                return;
            }
            let take = queue.waiting.len().min(shared.most);
            queue.waiting.drain(..take).collect()
        };
        let (items, senders): (Vec<B::Item>, Vec<oneshot::Sender<B::Answer>>) =
            taken.into_iter().unzip();
        let answers = shared.batch.answer(items).await;
        // A caller cut off while it waited no longer listens; one left without an answer gets
        // `Stopped` as its sender drops.
        for (sender, answer) in senders.into_iter().zip(answers) {
            let _ = sender.send(answer);
        }
    }
}

/// A task that ends any other way than by finding nothing waiting (a panic) lets the next item
/// start a new one; the items it had taken are answered `Stopped` as their senders drop.
struct Running<'a, B: Batch> {
    shared: &'a Shared<B>,
    ended: bool,
}

impl<B: Batch> Drop for Running<'_, B> {
    fn drop(&mut self) {
        if !self.ended {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.answering = false;
        }
    }
}
