//! A private PostgreSQL and Redis for a development run, so that `bourse serve all` works on a
//! machine where nothing runs yet.
//!
//! In development (`BOURSE_ENV` unset or `development`), for each of the two stores whose URL
//! is not given (`DATABASE_URL`, `REDIS_URL`): if nothing answers on its local port, `bourse
//! serve` starts one from the machine's own binaries (`initdb`/`pg_ctl`, `redis-server`) on
//! that port, with its data under `BOURSE_LOCAL_DATA_DIR`, and stops it when it stops. Since
//! the private servers listen where the defaults point, every other `bourse` command run
//! beside it (`demo seed`, `admin …`) finds them without being told. A store that answers, or
//! one given by URL, is used as it is; production never gets here (its URLs are required).
//!
//! This is a convenience for one developer's machine, not a deployment: compose and the
//! Kubernetes manifests run the real topology with their own datastores.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use service_kit::Env;
use service_kit::config::Environment;

/// Whether `bourse serve` may start private datastores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// When a store is neither given by URL nor answering on its local port.
    Auto,
    /// Never: a missing store fails start-up as it would in production.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => Err(format!("must be auto or off, not {other:?}")),
        }
    }
}

/// The settings, read like every other (`.env.example`, docs/configuration.md).
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub environment: Environment,
    pub data_dir: PathBuf,
    pub postgres_port: u16,
    pub redis_port: u16,
}

impl Settings {
    pub fn read(env: &mut Env) -> Self {
        Self {
            mode: env.or("BOURSE_LOCAL_DATASTORES", Mode::Auto),
            environment: env.or("BOURSE_ENV", Environment::Development),
            data_dir: PathBuf::from(env.or("BOURSE_LOCAL_DATA_DIR", ".bourse".to_owned())),
            postgres_port: env.or("BOURSE_LOCAL_POSTGRES_PORT", 5432),
            redis_port: env.or("BOURSE_LOCAL_REDIS_PORT", 6379),
        }
    }
}

/// Why a private datastore could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "nothing answers on 127.0.0.1:{port} and `{program}` was not found to start a private \
         {store}; install it, start your own and set {url_variable}, or see docs/development.md"
    )]
    NoProgram {
        store: &'static str,
        program: &'static str,
        port: u16,
        url_variable: &'static str,
    },
    #[error("could not {what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("the private {store} did not answer on 127.0.0.1:{port} within {seconds} s (its log: {log})", log = log.display())]
    NotAnswering {
        store: &'static str,
        port: u16,
        seconds: u64,
        log: PathBuf,
    },
}

/// The private datastores of this run; [`LocalDatastores::stop`] stops them. Dropping it
/// without stopping kills Redis and leaves PostgreSQL running (its next start reuses it).
#[derive(Debug, Default)]
pub struct LocalDatastores {
    postgres: Option<LocalPostgres>,
    redis: Option<LocalRedis>,
    /// One line per store started, for the operator's terminal.
    pub announcements: Vec<String>,
}

impl LocalDatastores {
    /// Starts what is missing and points `vars` at it (`DATABASE_URL`, `REDIS_URL`); blocks
    /// while the servers start.
    pub fn start_if_needed(
        settings: &Settings,
        vars: &mut Vec<(String, String)>,
    ) -> Result<Self, Error> {
        let mut started = Self::default();
        let local = point_at_local(settings, vars);
        if local.postgres && !answers(settings.postgres_port) {
            let port = settings.postgres_port;
            let postgres = LocalPostgres::start(&settings.data_dir, port)?;
            started.announcements.push(format!(
                "no PostgreSQL answered on 127.0.0.1:{port} and DATABASE_URL is not set: \
                 started a private one there (data in {}, log {}); it stops when bourse stops",
                postgres.data.display(),
                postgres.log.display()
            ));
            started.postgres = Some(postgres);
        }
        if local.redis && !answers(settings.redis_port) {
            let port = settings.redis_port;
            let redis = match LocalRedis::start(&settings.data_dir, port) {
                Ok(redis) => redis,
                Err(err) => {
                    started.stop();
                    return Err(err);
                }
            };
            started.announcements.push(format!(
                "no Redis answered on 127.0.0.1:{port} and REDIS_URL is not set: started a \
                 private one there (it keeps nothing on disk; log {}); it stops when bourse \
                 stops",
                redis.log.display()
            ));
            started.redis = Some(redis);
        }
        Ok(started)
    }

    /// Stops what [`start_if_needed`](Self::start_if_needed) started; blocks until it has.
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut redis) = self.redis.take()
            && let Err(err) = redis.stop()
        {
            problems.push(format!("stopping the private Redis: {err}"));
        }
        if let Some(postgres) = self.postgres.take()
            && let Err(err) = postgres.stop()
        {
            problems.push(format!("stopping the private PostgreSQL: {err:#}"));
        }
        problems
    }
}

/// Which stores a development run takes from the local ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local {
    pub postgres: bool,
    pub redis: bool,
}

/// In development, points an unset `DATABASE_URL`/`REDIS_URL` at the local ports — where a
/// private server of `bourse serve` listens — so every `bourse` command finds the same
/// stores. Returns which it pointed.
pub fn point_at_local(settings: &Settings, vars: &mut Vec<(String, String)>) -> Local {
    if settings.mode == Mode::Off || settings.environment != Environment::Development {
        return Local::default();
    }
    let given = |name: &str| {
        vars.iter()
            .any(|(key, value)| key == name && !value.is_empty())
    };
    let local = Local {
        postgres: !given("DATABASE_URL"),
        redis: !given("REDIS_URL"),
    };
    if local.postgres {
        vars.push((
            "DATABASE_URL".to_owned(),
            format!(
                "postgres://postgres@127.0.0.1:{}/bourse",
                settings.postgres_port
            ),
        ));
    }
    if local.redis {
        vars.push((
            "REDIS_URL".to_owned(),
            format!("redis://127.0.0.1:{}", settings.redis_port),
        ));
    }
    local
}

/// Whether a server accepts connections on the loopback port.
fn answers(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// Waits for a server this process started to accept connections. `redis-server` gives no
/// readiness signal short of parsing its log through a pipe that would then have to be drained
/// for its whole life, so this start-up path polls the port — bounded, and cut short when the
/// process has already exited.
fn wait_until_answering(
    store: &'static str,
    port: u16,
    log: &Path,
    alive: &mut dyn FnMut() -> bool,
) -> Result<(), Error> {
    const LIMIT: Duration = Duration::from_secs(30);
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if answers(port) {
            return Ok(());
        }
        if !alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::NotAnswering {
        store,
        port,
        seconds: LIMIT.as_secs(),
        log: log.to_owned(),
    })
}

/// A PostgreSQL cluster in the data folder, run with `pg_ctl`.
#[derive(Debug)]
struct LocalPostgres {
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user.
    run_as: Option<&'static str>,
}

impl LocalPostgres {
    fn start(data_dir: &Path, port: u16) -> Result<Self, Error> {
        let missing = |program| Error::NoProgram {
            store: "PostgreSQL",
            program,
            port,
            url_variable: "DATABASE_URL",
        };
        let initdb = find_program("initdb").ok_or_else(|| missing("initdb"))?;
        let pg_ctl = find_program("pg_ctl").ok_or_else(|| missing("pg_ctl"))?;
        let data = absolute(&data_dir.join("postgres"))?;
        let postgres = Self {
            pg_ctl,
            log: data.join("server.log"),
            data,
            run_as: running_as_root().then_some("postgres"),
        };
        if !postgres.data.join("PG_VERSION").exists() {
            postgres.create_cluster(&initdb)?;
        }
        let data = postgres.data.display().to_string();
        let log = postgres.log.display().to_string();
        // TCP on loopback only, no Unix socket (its path would depend on the data folder's and
        // could exceed the platform's limit).
        let options =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        // `-w`: pg_ctl returns once the server accepts connections (or fails, naming its log).
        postgres.run(
            &postgres.pg_ctl,
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )?;
        Ok(postgres)
    }

    fn create_cluster(&self, initdb: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(&self.data).map_err(|source| Error::Io {
            what: format!("create {}", self.data.display()),
            source,
        })?;
        if let Some(user) = self.run_as {
            let owner = format!("{user}:");
            let data = self.data.display().to_string();
            run(Command::new("chown").args([owner.as_str(), data.as_str()]))?;
        }
        let data = self.data.display().to_string();
        // Trust on loopback, like the development defaults: the URL carries no password.
        self.run(
            initdb,
            &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        )
        .map(drop)
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<Output, Error> {
        match self.run_as {
            Some(user) => run(Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(program)
                .args(args)),
            None => run(Command::new(program).args(args)),
        }
    }

    fn stop(self) -> Result<(), Error> {
        let data = self.data.display().to_string();
        self.run(&self.pg_ctl, &["-D", &data, "-m", "fast", "-w", "stop"])
            .map(drop)
    }
}

/// A `redis-server` child process.
#[derive(Debug)]
struct LocalRedis {
    child: Child,
    log: PathBuf,
}

impl LocalRedis {
    fn start(data_dir: &Path, port: u16) -> Result<Self, Error> {
        let program = find_program("redis-server").ok_or(Error::NoProgram {
            store: "Redis",
            program: "redis-server",
            port,
            url_variable: "REDIS_URL",
        })?;
        let dir = absolute(&data_dir.join("redis"))?;
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let log = dir.join("redis.log");
        // Nothing on disk, as Bourse expects of Redis anyway: the outbox publishes again what
        // a broker forgot (ADR 0013).
        let child = Command::new(&program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io {
                what: format!("start {}", program.display()),
                source,
            })?;
        let mut redis = Self { child, log };
        let log = redis.log.clone();
        let child = &mut redis.child;
        if let Err(err) = wait_until_answering("Redis", port, &log, &mut || {
            matches!(child.try_wait(), Ok(None))
        }) {
            let _ = redis.stop();
            return Err(err);
        }
        Ok(redis)
    }

    fn stop(&mut self) -> io::Result<()> {
        // It keeps nothing on disk, so there is nothing to flush first.
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

/// On `PATH`, else where Debian and Homebrew put PostgreSQL's server programs (not on `PATH`
/// by default there).
fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    // The newest version first (15 before 14; 9.6 sorts last, as it should).
    versioned.sort_by_key(|dir| {
        std::cmp::Reverse(
            dir.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.split('.').next())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .into_iter()
        .chain(versioned)
        .chain([
            PathBuf::from("/opt/homebrew/bin"),
            PathBuf::from("/usr/local/bin"),
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("resolve {}", path.display()),
        source,
    })
}

fn run(command: &mut Command) -> Result<Output, Error> {
    let line = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            what: format!("run {line}"),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Failed {
            command: line,
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .trim()
            .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode, environment: Environment) -> Settings {
        Settings {
            mode,
            environment,
            data_dir: PathBuf::from("/nonexistent"),
            postgres_port: 1,
            redis_port: 1,
        }
    }

    #[test]
    fn given_urls_and_production_are_left_alone() {
        let mut vars = vec![
            ("DATABASE_URL".to_owned(), "postgres://db/x".to_owned()),
            ("REDIS_URL".to_owned(), "redis://cache".to_owned()),
        ];
        let started = LocalDatastores::start_if_needed(
            &settings(Mode::Auto, Environment::Development),
            &mut vars,
        )
        .unwrap();
        assert!(started.announcements.is_empty());
        assert_eq!(vars.len(), 2, "the given URLs are kept as they are");

        let mut vars = Vec::new();
        for (mode, environment) in [
            (Mode::Off, Environment::Development),
            (Mode::Auto, Environment::Production),
        ] {
            let started =
                LocalDatastores::start_if_needed(&settings(mode, environment), &mut vars).unwrap();
            assert!(started.announcements.is_empty());
            assert!(vars.is_empty(), "{mode:?} {environment:?} adds nothing");
        }
    }
}
