//! What must hold after a run, whatever the load did.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::Error;
use crate::client::Gateway;
use crate::driver::{FUNDING, Trader};
use crate::report::Report;

/// What the checks read.
pub struct Ledger<'a> {
    pub gateway: &'a Gateway,
    pub admin: &'a str,
    pub traders: &'a [Trader],
    /// Every order answered 201: (trader index, order id).
    pub placed: &'a [(usize, Uuid)],
    pub settle_timeout: Duration,
}

/// Every violation found, described; empty when all hold.
pub async fn check(ledger: &Ledger<'_>, report: &Report) -> Result<Vec<String>, Error> {
    let mut violations = Vec::new();
    let internal = report.internal_errors();
    if internal > 0 {
        violations.push(format!("{internal} requests were answered 500"));
    }
    let deadline = Instant::now() + ledger.settle_timeout;

    // The books: ledger balanced, nothing held in it, every executed trade settled once; every
    // account's balances what its deposits and fills make them, as traders are shown them and
    // in risk's own view alike (both follow the ledger's events), with nothing reserved or
    // committed once all orders ended.
    let reconciliation = settled(ledger, deadline).await?;
    if reconciliation["ok"] != true {
        violations.push(format!("reconciliation failed: {reconciliation}"));
    }

    let after = ledger.gateway.risk_reconciliation(ledger.admin).await;
    violations.extend(risk_reconciled("after the run", after));

    let scales = asset_scales(ledger.gateway).await?;
    let mut traded = false;
    for (index, trader) in ledger.traders.iter().enumerate() {
        let orders = ledger.gateway.all_orders(&trader.token).await?;
        violations.extend(stored_once(index, &orders, ledger.placed));
        let expected = expected_balances(&orders, &scales)?;
        traded |= orders
            .iter()
            .any(|o| o["fills"].as_array().is_some_and(|f| !f.is_empty()));
        if let Some(mismatch) = balances_match(ledger, trader, &expected, &scales, deadline).await?
        {
            let open = orders
                .iter()
                .filter(|o| o["status"] == "open" || o["status"] == "partially_filled")
                .count();
            violations.push(format!(
                "account {}: {mismatch} ({open} of its orders still open)",
                trader.account
            ));
        }
        if let Some(mismatch) = risk_agrees(ledger, trader, &expected, &scales, deadline).await? {
            violations.push(format!("account {}: {mismatch}", trader.account));
        }
    }

    if traded && report.subscribers.iter().any(|s| s.messages == 0) {
        let received: Vec<u64> = report.subscribers.iter().map(|s| s.messages).collect();
        violations.push(format!(
            "a stream subscriber received nothing while trades happened: {received:?}"
        ));
    }
    for (index, subscriber) in report.subscribers.iter().enumerate() {
        for broken in &subscriber.book.broken {
            violations.push(format!(
                "subscriber {index}: the book's sequence did not move forward: {broken}"
            ));
        }
    }
    Ok(violations)
}

/// `None` when risk's own comparison of its balances with the ledger's
/// (`POST /v1/admin/risk-reconciliation`) answered, compared something and found them equal.
pub fn risk_reconciled(when: &str, compared: Result<Value, Error>) -> Option<String> {
    match compared {
        Ok(report) if report["ok"] == true && report["balances_compared"].as_u64() > Some(0) => {
            None
        }
        Ok(report) => Some(format!(
            "risk's balances did not reconcile with the ledger {when}: {report}"
        )),
        Err(error) => Some(format!(
            "risk's balances could not be compared with the ledger {when}: {error}"
        )),
    }
}

/// Reconciliation once settlement has caught up: clean, or the last report at the deadline.
async fn settled(ledger: &Ledger<'_>, deadline: Instant) -> Result<Value, Error> {
    loop {
        let report = ledger.gateway.reconciliation(ledger.admin).await?;
        if report["ok"] == true || Instant::now() >= deadline {
            return Ok(report);
        }
        // Trades still in flight to settlement: look again shortly.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every order this trader was answered 201 for appears exactly once in its own listing.
fn stored_once(trader: usize, orders: &[Value], placed: &[(usize, Uuid)]) -> Vec<String> {
    let mut listed: HashMap<Uuid, usize> = HashMap::new();
    for order in orders {
        if let Some(id) = order["id"].as_str().and_then(|id| id.parse().ok()) {
            *listed.entry(id).or_default() += 1;
        }
    }
    placed
        .iter()
        .filter(|(owner, _)| *owner == trader)
        .filter_map(|(_, id)| match listed.get(id).copied().unwrap_or(0) {
            1 => None,
            n => Some(format!("order {id} answered 201 is stored {n} times")),
        })
        .collect()
}

async fn asset_scales(gateway: &Gateway) -> Result<HashMap<String, u32>, Error> {
    gateway
        .assets()
        .await?
        .iter()
        .map(|a| {
            let code = a["code"].as_str().ok_or(Error::Malformed("assets"))?;
            let scale = a["scale"].as_u64().ok_or(Error::Malformed("assets"))?;
            Ok((code.to_owned(), u32::try_from(scale).unwrap_or(0)))
        })
        .collect()
}

fn units(text: &Value, scale: u32) -> Result<i64, Error> {
    text.as_str()
        .and_then(|t| contracts::parse_units(t, scale).ok())
        .ok_or(Error::Malformed("an amount"))
}

/// What each asset's balance must be: the deposits, plus what its fills bought, minus what
/// they sold and paid in fees — in each asset's own units.
fn expected_balances(
    orders: &[Value],
    scales: &HashMap<String, u32>,
) -> Result<BTreeMap<String, i64>, Error> {
    let mut expected = BTreeMap::new();
    for (asset, amount) in FUNDING {
        let scale = *scales.get(asset).ok_or(Error::Malformed("assets"))?;
        expected.insert(asset.to_owned(), units(&Value::from(amount), scale)?);
    }
    for order in orders {
        let symbol = order["symbol"]
            .as_str()
            .ok_or(Error::Malformed("an order"))?;
        let (base, quote) = symbol.split_once('-').ok_or(Error::Malformed("a symbol"))?;
        let (base_scale, quote_scale) = (
            *scales.get(base).ok_or(Error::Malformed("assets"))?,
            *scales.get(quote).ok_or(Error::Malformed("assets"))?,
        );
        let buys = order["side"] == "buy";
        for fill in order["fills"].as_array().into_iter().flatten() {
            let quantity = units(&fill["quantity"], base_scale)?;
            let price = units(&fill["price"], quote_scale)?;
            let notional = contracts::fees::notional(price, quantity, base_scale)
                .ok_or(Error::Malformed("a fill"))?;
            let (base_change, quote_change) = if buys {
                (quantity, -notional)
            } else {
                (-quantity, notional)
            };
            *expected.entry(base.to_owned()).or_default() += base_change;
            *expected.entry(quote.to_owned()).or_default() += quote_change;
            let fee_asset = fill["fee_asset"].as_str().unwrap_or(quote);
            let fee_scale = *scales.get(fee_asset).ok_or(Error::Malformed("assets"))?;
            *expected.entry(fee_asset.to_owned()).or_default() -= units(&fill["fee"], fee_scale)?;
        }
    }
    Ok(expected)
}

/// The named amounts of `asset` in a listing of balances by asset; zeros when it is absent.
fn figures<const N: usize>(
    listing: &[Value],
    asset: &str,
    scale: u32,
    fields: [&str; N],
) -> Result<[i64; N], Error> {
    let mut amounts = [0; N];
    if let Some(entry) = listing.iter().find(|b| b["asset"] == asset) {
        for (amount, field) in amounts.iter_mut().zip(fields) {
            *amount = units(&entry[field], scale)?;
        }
    }
    Ok(amounts)
}

/// `None` once `differences` finds nothing; otherwise what it last found at the deadline
/// (reservations of orders that just ended may still be on their way to release, and the
/// pre-trade stage follows the ledger through a stream).
async fn agrees_by<F, Fut>(deadline: Instant, mut differences: F) -> Result<Option<String>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, Error>>,
{
    loop {
        let found = differences().await?;
        if found.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(found.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `None` when the account's balances equal `expected` with nothing held.
async fn balances_match(
    ledger: &Ledger<'_>,
    trader: &Trader,
    expected: &BTreeMap<String, i64>,
    scales: &HashMap<String, u32>,
    deadline: Instant,
) -> Result<Option<String>, Error> {
    agrees_by(deadline, || async {
        let balances = ledger.gateway.balances(&trader.token).await?;
        let mut mismatch = Vec::new();
        for (asset, want) in expected {
            let scale = *scales.get(asset).ok_or(Error::Malformed("assets"))?;
            let [available, held] = figures(&balances, asset, scale, ["available", "held"])?;
            if available + held != *want || held != 0 {
                mismatch.push(format!(
                    "{asset} available {} held {} — expected {} and nothing held",
                    contracts::format_units(available, scale),
                    contracts::format_units(held, scale),
                    contracts::format_units(*want, scale),
                ));
            }
        }
        Ok(mismatch)
    })
    .await
}

/// `None` when risk's pre-trade stage (ADR 0023) believes what the ledger says: each asset's
/// balance is `expected`, and nothing is committed once every order has ended.
async fn risk_agrees(
    ledger: &Ledger<'_>,
    trader: &Trader,
    expected: &BTreeMap<String, i64>,
    scales: &HashMap<String, u32>,
    deadline: Instant,
) -> Result<Option<String>, Error> {
    agrees_by(deadline, || async {
        let Some(funds) = ledger
            .gateway
            .risk_funds(ledger.admin, trader.account)
            .await?
        else {
            return Ok(vec!["risk is still loading balances".to_owned()]);
        };
        let mut mismatch = Vec::new();
        for (asset, want) in expected {
            let scale = *scales.get(asset).ok_or(Error::Malformed("assets"))?;
            let [balance, committed] = figures(&funds, asset, scale, ["balance", "committed"])?;
            if balance != *want || committed != 0 {
                mismatch.push(format!(
                    "risk sees {asset} {} with {} committed — expected {} and nothing committed",
                    contracts::format_units(balance, scale),
                    contracts::format_units(committed, scale),
                    contracts::format_units(*want, scale),
                ));
            }
        }
        Ok(mismatch)
    })
    .await
}
