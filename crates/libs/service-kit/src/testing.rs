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

/// A private `redis-server` on a free loopback port, keeping nothing on disk: for a test that
/// stops Redis or makes it forget everything, which must never happen to the shared one (other
/// tests run beside it). Killed when dropped.
pub struct RedisServer {
    port: u16,
    process: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts the server and waits until it answers.
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            process: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server is gone at once, with everything it held.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// (Re)starts the server on the same port, empty, and waits until it answers.
    #[allow(clippy::expect_used)]
    pub async fn restart(&mut self) {
        self.kill();
        let process = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (installed by .ci/run)");
        self.process = Some(process);
        let url = secrecy::SecretString::from(self.url());
        eventually("the private Redis to answer", || async {
            match crate::redis::connect_url(&url, None).await {
                Ok(mut redis) => redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
