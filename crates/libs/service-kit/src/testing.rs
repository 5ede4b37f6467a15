//! Test support, compiled only with the `testing` feature (enabled by test crates'
//! dev-dependencies, never in a service build).

use std::time::Duration;

/// A loopback port nothing listens on right now: for a server the test starts as a process
/// of its own (which must be told its port). Another process could take it before it is used;
/// tests on loopback accept that window. For an address that must refuse connections, see
/// [`closed_port`].
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    probe.local_addr().expect("a bound address").port()
}

/// A loopback port that refuses connections for as long as this test process lives: the address
/// of a dependency that is down. [`free_port`] is not enough for that — it comes from the
/// ephemeral range, which the operating system hands out again to any test's listener on port 0
/// (one answered such a test with its own 404) — so it is drawn like [`free_ports`]: below that
/// range, and reserved so no other test draws it.
pub fn closed_port() -> u16 {
    free_ports(1)[0]
}

/// `count` distinct loopback ports nothing listens on, for servers that stop and start again
/// on the same port (a service killed and restarted, a database stopped and started). They
/// are drawn below Linux's ephemeral range (32768+), so the clients' own outgoing connections
/// cannot take one while its server is down, and each is reserved for as long as this process
/// lives ([`reserve`]), so no other test — in this process or another — draws it meanwhile.
#[allow(clippy::expect_used)]
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut held = Vec::with_capacity(count);
    let mut rng = fastrand::Rng::new();
    for _ in 0..count * 1000 {
        if held.len() == count {
            break;
        }
        let port = rng.u16(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port))
            && reserve(port)
        {
            held.push(listener);
        }
    }
    assert_eq!(
        held.len(),
        count,
        "free loopback ports below the ephemeral range"
    );
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Reserves `port` until this process exits: an exclusive lock on a file named after it, in a
/// directory every test process shares. Tests run in parallel, and a port is free whenever its
/// server is down — two tests drawing ports at such a moment would otherwise get the same one
/// and the second server to start would find it taken. The operating system drops the lock
/// when the process ends, however it ends. `false` when another draw holds it.
pub fn reserve(port: u16) -> bool {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("bourse-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return false;
    };
    // A lock is per open file: a second draw in this process conflicts like another process's.
    if file.try_lock().is_err() {
        return false;
    }
    HELD.lock().map(|mut held| held.push(file)).is_ok()
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

/// Waits until a session of `pool`'s database is blocked on a lock whose statement contains
/// `statement` (e.g. `"UPDATE symbol_owners"`): how a test knows the statement it set off — in
/// a task, or in another process — now waits on a transaction the test holds open.
#[allow(clippy::expect_used)]
pub async fn until_waiting_for_a_lock(pool: &sqlx::PgPool, statement: &str) {
    let pattern = format!("%{statement}%");
    eventually(
        &format!("a statement like {statement:?} waiting on a lock"),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE $1",
            )
            .bind(&pattern)
            .fetch_one(pool)
            .await
            .expect("pg_stat_activity is readable");
            waiting > 0
        },
    )
    .await;
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
            port: free_ports(1)[0],
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

    /// SIGSTOP: the server keeps its port and connections but answers nothing — a stall, as a
    /// frozen VM or a saturated disk gives — until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`]: it answers again, with everything it held.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    #[allow(clippy::expect_used)]
    fn signal(&self, signal: &str) {
        if let Some(process) = &self.process {
            let sent = std::process::Command::new("kill")
                .args([signal, &process.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success(), "kill {signal} reached the private Redis");
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

/// A private PostgreSQL cluster (`initdb` + `pg_ctl` from the machine's packages) on a free
/// loopback port, trusting local connections: for a test that stops the database, which must
/// never happen to the shared server (other tests run beside it). Stopped and removed when
/// dropped. As root (CI), the server runs as the `postgres` user, as PostgreSQL requires.
pub struct PgCluster {
    port: u16,
    dir: std::path::PathBuf,
    running: bool,
}

impl PgCluster {
    /// Creates the cluster and starts it.
    #[allow(clippy::expect_used)]
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("bourse-pg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let cluster = Self {
            port: free_ports(1)[0],
            dir,
            running: false,
        };
        if is_root() {
            run(std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir));
        }
        run(cluster
            .as_server_user(&pg_binary("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(cluster.data()));
        let mut cluster = cluster;
        cluster.start_again().await;
        cluster
    }

    /// `postgres://` URL of database `name` (created by whoever connects first with
    /// `ensure_database`, or by the test).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// Stops the server as a crash or a failover would: every connection cut at once
    /// (`pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        if self.running {
            run(self
                .as_server_user(&pg_binary("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.data()));
            self.running = false;
        }
    }

    /// Starts the server (again) and waits until it accepts connections.
    #[allow(clippy::expect_used)]
    pub async fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.display()
        );
        run(self
            .as_server_user(&pg_binary("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.join("server.log"))
            .args(["-o", &options]));
        self.running = true;
        let url = self.url("postgres");
        eventually("the private PostgreSQL to accept connections", || async {
            sqlx::PgPool::connect(&url).await.is_ok()
        })
        .await;
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    fn as_server_user(&self, binary: &str) -> std::process::Command {
        if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", binary]);
            command
        } else {
            std::process::Command::new(binary)
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's `binary` (Debian keeps them off the `PATH`).
fn pg_binary(binary: &str) -> String {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(binary).display().to_string())
        .unwrap_or_else(|| binary.to_owned())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

#[allow(clippy::expect_used)]
fn run(command: &mut std::process::Command) {
    let output = command
        .output()
        .expect("a PostgreSQL binary (installed by .ci/run)");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `migrator` without its migrations from `version` on: the schema as a release before them
/// left it, for tests of an upgrade (and of a rollback to that release).
pub fn migrations_before(
    mut migrator: sqlx::migrate::Migrator,
    version: i64,
) -> sqlx::migrate::Migrator {
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator
}
