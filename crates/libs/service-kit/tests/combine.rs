//! Requests answered together (`service_kit::combine`): what waits goes in the next batch, and
//! a batch that fails answers its own items only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use service_kit::combine::{Batch, Combiner, Stopped};
use service_kit::testing::eventually;
use service_kit::{Shutdown, Supervisor};
use tokio::sync::Notify;

/// Doubles its items and records each batch. Unless `open`, the first batch says it has begun
/// (`entered`) and waits for `gate`. An item 13 makes its batch panic.
#[derive(Default)]
struct Doubling {
    batches: Mutex<Vec<Vec<u32>>>,
    entered: Notify,
    gate: Notify,
    open: AtomicBool,
}

/// The combiner's handle on the test's [`Doubling`].
struct Shared(Arc<Doubling>);

impl Batch for Shared {
    type Item = u32;
    type Answer = u32;

    fn answer(&self, items: Vec<u32>) -> BoxFuture<'_, Vec<u32>> {
        let doubling = &self.0;
        Box::pin(async move {
            if !doubling.open.swap(true, Ordering::SeqCst) {
                doubling.entered.notify_one();
                doubling.gate.notified().await;
            }
            assert!(!items.contains(&13), "unlucky");
            doubling.batches.lock().unwrap().push(items.clone());
            items.iter().map(|i| i * 2).collect()
        })
    }
}

fn combiner(doubling: &Arc<Doubling>, most: usize, shutdown: &Shutdown) -> Combiner<Shared> {
    Combiner::new(
        "doubling",
        most,
        Shared(doubling.clone()),
        Supervisor::new("test", shutdown),
    )
}

#[tokio::test]
async fn what_arrives_while_a_batch_is_answered_goes_together_in_the_next_one() {
    let shutdown = Shutdown::new();
    let doubling = Arc::new(Doubling::default());
    let combiner = combiner(&doubling, 3, &shutdown);
    let submit = |item: u32| {
        let combiner = combiner.clone();
        tokio::spawn(async move { combiner.submit(item).await })
    };

    // The first item goes out at once, in a batch of its own, held at the gate.
    let entered = doubling.entered.notified();
    let first = submit(1);
    entered.await;
    // Four more arrive meanwhile: they wait, and go out in batches of at most three.
    let rest: Vec<_> = (2..=5).map(submit).collect();
    eventually("four items waiting", || async { combiner.waiting() == 4 }).await;
    doubling.gate.notify_one();

    assert_eq!(first.await.unwrap().unwrap(), 2);
    for (task, item) in rest.into_iter().zip(2..) {
        assert_eq!(
            task.await.unwrap().unwrap(),
            item * 2,
            "each gets its own answer"
        );
    }
    assert_eq!(
        *doubling.batches.lock().unwrap(),
        vec![vec![1], vec![2, 3, 4], vec![5]]
    );
}

#[tokio::test]
async fn a_batch_that_panics_answers_its_items_stopped_and_the_next_item_starts_afresh() {
    let shutdown = Shutdown::new();
    let doubling = Arc::new(Doubling {
        open: AtomicBool::new(true),
        ..Doubling::default()
    });
    let combiner = combiner(&doubling, 8, &shutdown);

    let failed = combiner.submit(13).await;

    assert!(matches!(failed, Err(Stopped("doubling"))), "{failed:?}");
    assert_eq!(combiner.submit(4).await.unwrap(), 8);
}
