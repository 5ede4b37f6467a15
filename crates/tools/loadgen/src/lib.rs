//! The load generator (PRF-01): trades against a running Bourse the way its users do, at a
//! constant arrival rate, then proves that nothing was lost or doubled.
//!
//! - [`config`]: the command line (`cargo run -p loadgen -- --help`).
//! - [`client`]: the gateway's API as typed calls.
//! - [`workload`]: what a user does next — limit (GTC, IOC, FOK) and market orders, cancels,
//!   cancel-all, reads of the book, of own orders and of balances — drawn from a seeded mix.
//! - [`driver`]: setup (accounts, funding, the instrument), the open-model schedule and the
//!   WebSocket subscribers. Requests start at their scheduled time whether or not earlier ones
//!   have answered, and latency is measured from that time, so queueing is in the figures
//!   (no coordinated omission).
//! - [`stream_checks`]: what each subscriber checks of the stream's promises as messages
//!   arrive — a book that chains on from its snapshot and never goes back (a missing update is
//!   a gap: they are sent at most once), trades and own orders numbered without a skip, each
//!   trade and fill once, nobody else's orders.
//! - [`report`]: latency percentiles per action (HdrHistogram) and answers by status.
//! - [`invariants`]: what must hold afterwards — every 201 order stored exactly once, the books
//!   reconcile (ledger balanced, every trade settled once), every account's balance equal to
//!   its deposits plus its fills minus its fees, nothing left held, subscribers served
//!   every trade of the run and every order and fill of their own trader's, each once, nothing
//!   of anyone else's, and a book that only moved forward.
//!
//! `main` prints the report and exits non-zero on any violation.

use std::time::Duration;

pub mod client;
pub mod config;
pub mod driver;
pub mod invariants;
pub mod report;
pub mod stream_checks;
pub mod workload;

pub use config::Config;
pub use driver::run;
pub use report::Report;

/// Why a run could not be carried out (as opposed to a violation it found).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("calling the gateway: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{what} answered {status}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("the answer to {0} lacks what it should carry")]
    Malformed(&'static str),
    #[error("risk had not credited account {0}'s deposits after {1:?}")]
    NotCredited(uuid::Uuid, Duration),
}
