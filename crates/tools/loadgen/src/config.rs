//! The command line.

use std::time::Duration;

/// Trade against a running Bourse at a constant arrival rate, then check its invariants.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "loadgen")]
pub struct Config {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://localhost:8080")]
    pub gateway: String,
    /// Actions started per second (orders, cancels and reads together).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// How long actions are started for, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Trading accounts, registered and funded by the run.
    #[arg(long, default_value_t = 8)]
    pub accounts: usize,
    /// WebSocket connections following the symbol's trades and book.
    #[arg(long, default_value_t = 2)]
    pub subscribers: usize,
    /// The instrument traded (created when missing: BTC against USD).
    #[arg(long, default_value = "BTC-USD")]
    pub symbol: String,
    /// An admin's email: it creates the instrument, funds the accounts and runs reconciliation
    /// (`bourse admin create-user --role admin`).
    #[arg(long, env = "LOADGEN_ADMIN_EMAIL")]
    pub admin_email: String,
    #[arg(long, env = "LOADGEN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: String,
    /// Seeds the workload, so a run can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests in flight at most; a start beyond it is counted as `not_started`, never queued.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// How long the platform may take to settle everything after the last action.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout_secs: u64,
}

impl Config {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    pub fn settle_timeout(&self) -> Duration {
        Duration::from_secs(self.settle_timeout_secs)
    }
}
