//! The gateway's API as typed calls: what a trader and an operator do, and nothing else.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Error;

/// The password every account of a run gets (the operator in the tests too).
pub const PASSWORD: &str = "load generator password";

#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
}

/// What one request got: its status, body and whether it said when to retry.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Gateway {
    pub fn new(base: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn answer(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    fn expect(what: &'static str, answer: Answer, ok: &[StatusCode]) -> Result<Value, Error> {
        if ok.contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(Error::Refused {
                what,
                status: answer.status.as_u16(),
                body: answer.body.to_string(),
            })
        }
    }

    /// Registers `email` (an account that exists already is fine) and logs in: its token.
    pub async fn sign_up(&self, email: &str) -> Result<String, Error> {
        let registered = Self::answer(
            self.http
                .post(format!("{}/v1/auth/register", self.base))
                .json(&json!({ "email": email, "password": PASSWORD })),
        )
        .await?;
        Self::expect(
            "registration",
            registered,
            &[StatusCode::CREATED, StatusCode::ACCEPTED, StatusCode::OK],
        )?;
        self.log_in(email, PASSWORD).await
    }

    pub async fn log_in(&self, email: &str, password: &str) -> Result<String, Error> {
        let login = Self::answer(
            self.http
                .post(format!("{}/v1/auth/login", self.base))
                .json(&json!({ "email": email, "password": password })),
        )
        .await?;
        let body = Self::expect("login", login, &[StatusCode::OK])?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or(Error::Malformed("login"))
    }

    /// The account id behind `token`.
    pub async fn account(&self, token: &str) -> Result<Uuid, Error> {
        let me = Self::answer(
            self.http
                .get(format!("{}/v1/auth/me", self.base))
                .bearer_auth(token),
        )
        .await?;
        let body = Self::expect("me", me, &[StatusCode::OK])?;
        body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or(Error::Malformed("me"))
    }

    /// Creates `symbol` as BASE-QUOTE with a 0.01 tick and a 0.0001 lot, unless it exists.
    pub async fn ensure_instrument(&self, admin: &str, symbol: &str) -> Result<(), Error> {
        let (base, quote) = symbol.split_once('-').ok_or(Error::Malformed("symbol"))?;
        let created = Self::answer(
            self.http
                .post(format!("{}/v1/admin/instruments", self.base))
                .bearer_auth(admin)
                .json(
                    &json!({ "symbol": symbol, "base_asset": base, "quote_asset": quote,
                               "tick_size": "0.01", "lot_size": "0.0001" }),
                ),
        )
        .await?;
        Self::expect(
            "instrument creation",
            created,
            &[StatusCode::CREATED, StatusCode::CONFLICT],
        )?;
        Ok(())
    }

    pub async fn deposit(
        &self,
        admin: &str,
        account: Uuid,
        asset: &str,
        amount: &str,
    ) -> Result<(), Error> {
        let deposited = Self::answer(
            self.http
                .post(format!("{}/v1/admin/deposits", self.base))
                .bearer_auth(admin)
                .header("idempotency-key", Uuid::now_v7().to_string())
                .json(&json!({ "account_id": account, "asset": asset, "amount": amount })),
        )
        .await?;
        Self::expect("deposit", deposited, &[StatusCode::CREATED])?;
        Ok(())
    }

    pub async fn place(&self, token: &str, order: &Value) -> Result<Answer, reqwest::Error> {
        Self::answer(
            self.http
                .post(format!("{}/v1/orders", self.base))
                .bearer_auth(token)
                .header("idempotency-key", Uuid::now_v7().to_string())
                .json(order),
        )
        .await
    }

    pub async fn cancel(&self, token: &str, order: Uuid) -> Result<Answer, reqwest::Error> {
        Self::answer(
            self.http
                .delete(format!("{}/v1/orders/{order}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn cancel_all(&self, token: &str) -> Result<Answer, reqwest::Error> {
        Self::answer(
            self.http
                .delete(format!("{}/v1/orders", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// A read: public when `token` is `None`.
    pub async fn read(&self, token: Option<&str>, path: &str) -> Result<Answer, reqwest::Error> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::answer(request).await
    }

    /// Every trade of `symbol` after trade `after`, oldest first, all pages: how a client whose
    /// stream closed catches up (docs/stream.md, "Reconnecting").
    pub async fn trades_after(&self, symbol: &str, after: Uuid) -> Result<Vec<Uuid>, Error> {
        const PAGE: usize = 500;
        let mut trades = Vec::new();
        let mut last = after;
        loop {
            let path = format!("/v1/markets/{symbol}/trades?after={last}&limit={PAGE}");
            let page = Self::expect(
                "listing trades after one",
                self.read(None, &path).await?,
                &[StatusCode::OK],
            )?;
            let ids: Vec<Uuid> = page
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|trade| trade["id"].as_str()?.parse().ok())
                .collect();
            let full = ids.len() == PAGE;
            if let Some(newest) = ids.last() {
                last = *newest;
            }
            trades.extend(ids);
            if !full {
                return Ok(trades);
            }
        }
    }

    /// Every order of the account behind `token`, all pages.
    pub async fn all_orders(&self, token: &str) -> Result<Vec<Value>, Error> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/v1/orders?limit=100&cursor={cursor}"),
                None => "/v1/orders?limit=100".to_owned(),
            };
            let page = Self::expect(
                "listing orders",
                self.read(Some(token), &path).await?,
                &[StatusCode::OK],
            )?;
            if let Some(items) = page["items"].as_array() {
                orders.extend(items.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(orders),
            }
        }
    }

    /// `/v1/assets`: every asset's code and scale.
    pub async fn assets(&self) -> Result<Vec<Value>, Error> {
        let body = Self::expect(
            "assets",
            self.read(None, "/v1/assets").await?,
            &[StatusCode::OK],
        )?;
        body.as_array().cloned().ok_or(Error::Malformed("assets"))
    }

    pub async fn balances(&self, token: &str) -> Result<Vec<Value>, Error> {
        let body = Self::expect(
            "balances",
            self.read(Some(token), "/v1/balances").await?,
            &[StatusCode::OK],
        )?;
        body.as_array().cloned().ok_or(Error::Malformed("balances"))
    }

    /// What risk's pre-trade stage believes `account` owns and has committed, by asset
    /// (`/v1/admin/risk-funds/{account}`); `None` while risk is still loading balances.
    pub async fn risk_funds(
        &self,
        admin: &str,
        account: Uuid,
    ) -> Result<Option<Vec<Value>>, Error> {
        let answer = self
            .read(Some(admin), &format!("/v1/admin/risk-funds/{account}"))
            .await?;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(None);
        }
        let body = Self::expect("risk's funds", answer, &[StatusCode::OK])?;
        // Balances in, but not yet the orders committed before risk's start (ADR 0023): it
        // decides nothing yet, so nothing counts as credited.
        if body["deciding"] == Value::Bool(false) {
            return Ok(Some(Vec::new()));
        }
        body["balances"]
            .as_array()
            .cloned()
            .map(Some)
            .ok_or(Error::Malformed("risk's funds"))
    }

    /// Settlement's reconciliation of the books now (`POST /v1/admin/reconciliation`).
    pub async fn reconciliation(&self, admin: &str) -> Result<Value, Error> {
        self.reconcile(admin, "/v1/admin/reconciliation", "reconciliation")
            .await
    }

    /// Risk's balances compared with the ledger's now (`POST /v1/admin/risk-reconciliation`).
    pub async fn risk_reconciliation(&self, admin: &str) -> Result<Value, Error> {
        self.reconcile(
            admin,
            "/v1/admin/risk-reconciliation",
            "risk reconciliation",
        )
        .await
    }

    /// A reconciliation run on demand: its report, answered 200.
    async fn reconcile(&self, admin: &str, path: &str, what: &'static str) -> Result<Value, Error> {
        let report = Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(admin),
        )
        .await?;
        Self::expect(what, report, &[StatusCode::OK])
    }
}
