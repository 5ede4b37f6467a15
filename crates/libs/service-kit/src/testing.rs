//! Test support, compiled only with the `testing` feature (enabled by test crates'
//! dev-dependencies, never in a service build).

use std::time::Duration;

/// A loopback port nothing listens on right now: for a server the test starts as a process
/// of its own (which must be told its port), or an address that refuses connections. Another
/// process could take it before it is used; tests on loopback accept that window.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    probe.local_addr().expect("a bound address").port()
}

/// Waits until `condition` holds, failing the test after 20 s. For an observable state that
/// has no event to await — "the relay drained the outbox", "PostgreSQL shows the task waiting on
/// a lock", "auth reloaded its keys". Where an event exists (a stream entry, a task finishing),
/// await it instead.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// [`eventually`] for a state that is a value: waits until `probe` finds it, and returns it
/// ("the alert, once its count is 2").
pub async fn eventually_some<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        // A re-check interval, not a guess at how long the work takes.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
