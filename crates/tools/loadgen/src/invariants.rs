//! What must hold after a run, whatever the load did.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::Error;
use crate::client::Gateway;
use crate::driver::{FUNDING, Trader};
use crate::report::{Report, Subscriber};

/// What the checks read.
pub struct Ledger<'a> {
    pub gateway: &'a Gateway,
    pub admin: &'a str,
    pub traders: &'a [Trader],
    /// Every order answered 201: (trader index, order id).
    pub placed: &'a [(usize, Uuid)],
    pub settle_timeout: Duration,
    /// The WebSocket subscribers, still following the symbol.
    pub subscribers: &'a [watch::Receiver<Subscriber>],
    /// Per subscriber: it was subscribed before the first order, so every trade must reach it.
    pub following_from_the_start: &'a [bool],
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
    let mut traded = HashSet::new();
    for (index, trader) in ledger.traders.iter().enumerate() {
        let orders = ledger.gateway.all_orders(&trader.token).await?;
        violations.extend(stored_once(index, &orders, ledger.placed));
        let expected = expected_balances(&orders, &scales)?;
        for fill in orders
            .iter()
            .flat_map(|o| o["fills"].as_array().into_iter().flatten())
        {
            let id = fill["trade_id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok());
            traded.insert(id.ok_or(Error::Malformed("a fill"))?);
        }
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

    violations.extend(subscribers_served(ledger, &traded, deadline).await);
    Ok(violations)
}

/// What every WebSocket subscriber must have had by `deadline`: something, if the run traded;
/// a book that only moved forward; the trades channel numbered without a skip, each trade once
/// and — if it was subscribed before the first order and the server did not close the stream,
/// which the protocol allows — every trade the run's orders took part in (`traded`).
async fn subscribers_served(
    ledger: &Ledger<'_>,
    traded: &HashSet<Uuid>,
    deadline: Instant,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (index, watcher) in ledger.subscribers.iter().enumerate() {
        let from_the_start = ledger.following_from_the_start.get(index) == Some(&true);
        // The last trades may still be on their way: wait for them as they arrive.
        let mut watcher = watcher.clone();
        if from_the_start {
            let _ = tokio::time::timeout_at(
                deadline,
                watcher.wait_for(|s| s.closed.is_some() || s.trades.has_all(traded)),
            )
            .await;
        }
        let seen = watcher.borrow().clone();
        if !traded.is_empty() && seen.messages == 0 {
            violations.push(format!(
                "subscriber {index} received nothing while trades happened"
            ));
        }
        for broken in &seen.book.broken {
            violations.push(format!(
                "subscriber {index}: the book's sequence did not move forward: {broken}"
            ));
        }
        for broken in &seen.trades.broken {
            violations.push(format!("subscriber {index}: the trades channel: {broken}"));
        }
        let missing = seen.trades.missing(traded);
        if from_the_start && seen.closed.is_none() && missing > 0 {
            violations.push(format!(
                "subscriber {index}: {missing} of the run's {} trades never arrived on its open stream",
                traded.len()
            ));
        }
    }
    violations
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
