//! `bourse serve all` in-process with an operator account, and a short load's settings: what
//! every suite that runs the load generator against a real platform starts from.

use bourse::Target;
use service_kit::{Env, Shutdown};
use sqlx::PgPool;

pub struct Platform {
    running: bourse::Running,
    shutdown: Shutdown,
    pub gateway: String,
}

/// The operator's email; its password is the load generator's.
pub const OPERATOR: &str = "operator@example.com";

impl Platform {
    /// A platform on the test's own database, with an admin made as
    /// `bourse admin create-user --role admin` would.
    pub async fn with_operator(pool: &PgPool) -> Self {
        let vars = bourse::testing::test_env(pool);
        let plan = bourse::plan(&[Target::All], Env::from_pairs(vars)).unwrap();
        let shutdown = Shutdown::new();
        let running = bourse::start(plan, &shutdown).await.unwrap();
        let gateway = format!("http://{}", running.address(Target::Gateway).unwrap());
        let client = loadgen::client::Gateway::new(&gateway).unwrap();
        client.sign_up(OPERATOR).await.unwrap();
        sqlx::query("UPDATE auth.users SET roles = '{admin}' WHERE email = $1")
            .bind(OPERATOR)
            .execute(pool)
            .await
            .unwrap();
        Self {
            running,
            shutdown,
            gateway,
        }
    }

    /// A short load on BTC-USD: `rate` actions a second for `seconds`, from `accounts` traders.
    pub fn load(&self, rate: u32, seconds: u64, accounts: usize, seed: u64) -> loadgen::Config {
        loadgen::Config {
            gateway: self.gateway.clone(),
            rate,
            duration_secs: seconds,
            accounts,
            subscribers: 2,
            symbol: "BTC-USD".to_owned(),
            admin_email: OPERATOR.to_owned(),
            admin_password: loadgen::client::PASSWORD.to_owned(),
            seed,
            max_in_flight: 1_000,
            settle_timeout_secs: 30,
        }
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.running.wait().await.unwrap();
    }
}
