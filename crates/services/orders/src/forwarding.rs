//! Commands for a book another replica keeps, sent to it (TRD-08, ADR 0014).
//!
//! A request is served by whichever replica it reaches: the risk check (and its reservation) happens
//! there, and only the book's part — a [`Command`] — travels to the symbol's owner, over the
//! same real HTTP as every other call between services (`POST /internal/v1/matching/{symbol}`,
//! a service token with the `orders:matching` scope, mTLS where configured), carrying the
//! request's id and trace. The owner runs it in its matching task and answers the
//! [`Outcome`]; `409 not_owner` means the book moved, and the caller looks its owner up again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use resilience::{Call, Policy, TokenSource, Upstream};
use serde::{Deserialize, Serialize};
use service_kit::http::Problem;
use uuid::Uuid;

use crate::engine::{Command, Outcome};
use crate::error::{Error, Result};

/// One resilient client per owner address (each with its own breaker and bulkhead).
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    policy: Policy,
    tokens: Arc<TokenSource>,
    owners: Arc<Mutex<HashMap<String, Upstream>>>,
}

impl Forwarder {
    pub fn new(http: reqwest::Client, policy: Policy, tokens: Arc<TokenSource>) -> Self {
        Self {
            http,
            policy,
            tokens,
            owners: Arc::default(),
        }
    }

    fn owner(&self, address: &str) -> Result<Upstream> {
        let mut owners = self
            .owners
            .lock()
            .map_err(|_| Error::Internal("forwarder registry poisoned".to_owned()))?;
        if let Some(upstream) = owners.get(address) {
            return Ok(upstream.clone());
        }
        let upstream = Upstream::authenticated(
            crate::SERVICE,
            address.to_owned(),
            self.http.clone(),
            self.policy.clone(),
            self.tokens.clone(),
        )
        .map_err(Error::Internal)?;
        owners.insert(address.to_owned(), upstream.clone());
        Ok(upstream)
    }

    /// Runs `command` on the book of `symbol` kept by replica `owner` at `address`.
    #[tracing::instrument(skip_all, fields(%symbol, %owner, %address))]
    pub async fn send(
        &self,
        address: &str,
        owner: Uuid,
        symbol: &str,
        command: &Command,
    ) -> Result<Outcome> {
        let body = serde_json::to_vec(&Forwarded {
            owner,
            command: command.clone(),
        })
        .map_err(|e| Error::Internal(format!("encoding a command: {e}")))?;
        // Only a read may be sent twice: a placement or cancel repeated after a lost answer
        // would run twice (the order's claim fences the second placement, but not for free).
        let call = Call::post_json(format!("/internal/v1/matching/{symbol}"), body)
            .idempotent(matches!(command, Command::Depth { .. }));
        let response = self
            .owner(address)?
            .send(call)
            .await
            .map_err(|e| Error::Problem(e.problem()))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Error::Problem(Problem::unavailable(
                "matching_unavailable",
                format!("the answer of the instrument's book was cut off: {e}"),
                1,
            ))
        })?;
        metrics::counter!("orders_forwarded_commands_total", "status" => status.as_str().to_owned())
            .increment(1);
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("an owner's answer did not decode: {e}")));
        }
        let problem: ForwardedProblem = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Internal(format!("an owner answered {status} without a problem: {e}"))
        })?;
        match problem.code.as_str() {
            "not_owner" => return Err(Error::NotOwner),
            "idempotency_key_taken" => return Err(Error::IdempotencyKeyTaken),
            _ => {}
        }
        // The owner's refusal is the answer (503 overloaded, 409 client_order_id_taken…).
        Err(Error::Problem(if status.as_u16() == 503 {
            Problem::unavailable(&problem.code, problem.detail, 1)
        } else {
            Problem::new(status, &problem.code, problem.detail)
        }))
    }
}

/// A command as it travels: the replica it is meant for, so that a process that took over a
/// dead owner's address does not run it as if it were that owner.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    pub owner: Uuid,
    pub command: Command,
}

/// The part of an owner's problem+json that is passed on.
#[derive(serde::Deserialize)]
struct ForwardedProblem {
    code: String,
    detail: String,
}
