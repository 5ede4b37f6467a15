//! What must hold after a run, whatever the load did.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::Error;
use crate::client::Gateway;
use crate::driver::{FUNDING, Trader, trader_followed_by};
use crate::report::Report;
use crate::stream_checks::Subscriber;

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
    let mut orders_of = Vec::with_capacity(ledger.traders.len());
    for (index, trader) in ledger.traders.iter().enumerate() {
        let orders = ledger.gateway.all_orders(&trader.token).await?;
        violations.extend(stored_once(index, &orders, ledger.placed));
        let expected = expected_balances(&orders, &scales)?;
        let listed = OrdersOf::listed(index, &orders, ledger.placed)?;
        traded.extend(listed.fills.iter().map(|(_, trade)| *trade));
        orders_of.push(listed);
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

    violations.extend(subscribers_served(ledger, &traded, &orders_of, deadline).await);
    Ok(violations)
}

/// The least time the subscribers get for their last messages once the books are checked.
const STREAM_GRACE: Duration = Duration::from_secs(10);

/// One trader's orders as the REST API lists them: what its `orders` channel must bring.
#[derive(Debug, Default)]
struct OrdersOf {
    /// Every order the trader has.
    orders: HashSet<Uuid>,
    /// The orders answered 201 during the run.
    placed: HashSet<Uuid>,
    /// Every fill of its orders: (order, trade).
    fills: HashSet<(Uuid, Uuid)>,
    /// Its orders filled completely, and those cancelled.
    filled: HashSet<Uuid>,
    cancelled: HashSet<Uuid>,
}

impl OrdersOf {
    fn listed(trader: usize, orders: &[Value], placed: &[(usize, Uuid)]) -> Result<Self, Error> {
        let id = |value: &Value| value.as_str().and_then(|id| Uuid::parse_str(id).ok());
        let mut listed = Self {
            placed: placed
                .iter()
                .filter(|(t, _)| *t == trader)
                .map(|(_, order)| *order)
                .collect(),
            ..Self::default()
        };
        for order in orders {
            let order_id = id(&order["id"]).ok_or(Error::Malformed("an order"))?;
            listed.orders.insert(order_id);
            match order["status"].as_str() {
                Some("filled") => listed.filled.insert(order_id),
                Some("cancelled") => listed.cancelled.insert(order_id),
                _ => false,
            };
            for fill in order["fills"].as_array().into_iter().flatten() {
                let trade = id(&fill["trade_id"]).ok_or(Error::Malformed("a fill"))?;
                listed.fills.insert((order_id, trade));
            }
        }
        Ok(listed)
    }
}

/// Whether `seen` holds every trade of the run and every order, fill and end of an order of
/// its trader's.
fn everything_arrived(seen: &Subscriber, traded: &HashSet<Uuid>, own: &OrdersOf) -> bool {
    let orders = &seen.own_orders;
    seen.trades.has_all(traded)
        && orders.accepted.len() >= own.placed.len()
        && orders.fills.len() >= own.fills.len()
        && orders.completed.len() >= own.filled.len()
        && orders.cancelled.len() >= own.cancelled.len()
        && own.placed.is_subset(&orders.accepted)
        && own.fills.is_subset(&orders.fills)
        && own.filled.is_subset(&orders.completed)
        && own.cancelled.is_subset(&orders.cancelled)
}

/// What every WebSocket subscriber must have had by `deadline`: something, if the run traded;
/// a book that only moved forward; the trades and orders channels numbered without a skip,
/// each trade and fill once, and no order of another account's. And — if it was subscribed
/// before the first order and its stream did not close for good, which the protocol allows —
/// every trade the run's orders took part in (`traded`) and every order, fill and end of an
/// order of the trader it follows, received or caught up on after connecting again.
async fn subscribers_served(
    ledger: &Ledger<'_>,
    traded: &HashSet<Uuid>,
    orders_of: &[OrdersOf],
    deadline: Instant,
) -> Vec<String> {
    let mut violations = Vec::new();
    let nothing = OrdersOf::default();
    // The gateway forwards from the stream settlement reads too, so by now little can be in
    // flight; but a settlement that took the whole deadline must not leave none for this.
    let deadline = deadline.max(Instant::now() + STREAM_GRACE);
    for (index, watcher) in ledger.subscribers.iter().enumerate() {
        let from_the_start = ledger.following_from_the_start.get(index) == Some(&true);
        let own = orders_of
            .get(trader_followed_by(index, orders_of.len()))
            .unwrap_or(&nothing);
        // The last messages may still be on their way: wait for them as they arrive.
        let mut watcher = watcher.clone();
        if from_the_start {
            let _ = tokio::time::timeout_at(
                deadline,
                watcher.wait_for(|s| s.closed.is_some() || everything_arrived(s, traded, own)),
            )
            .await;
        }
        let seen = watcher.borrow().clone();
        let mut found = |what: String| violations.push(format!("subscriber {index}: {what}"));
        if !traded.is_empty() && seen.messages == 0 {
            found("received nothing while trades happened".to_owned());
        }
        for broken in seen.book.broken.iter() {
            found(format!(
                "the book's sequence did not move forward: {broken}"
            ));
        }
        for broken in seen.trades.broken.iter() {
            found(format!("the trades channel: {broken}"));
        }
        for broken in seen.own_orders.broken.iter() {
            found(format!("the orders channel: {broken}"));
        }
        let foreign = seen.own_orders.named.difference(&own.orders).count();
        if foreign > 0 {
            found(format!(
                "{foreign} orders on its orders channel are not its trader's"
            ));
        }
        if from_the_start && seen.closed.is_none() {
            let missing = [
                (
                    "trades of the run",
                    seen.trades.missing(traded),
                    traded.len(),
                ),
                (
                    "acceptances of its trader's orders",
                    own.placed.difference(&seen.own_orders.accepted).count(),
                    own.placed.len(),
                ),
                (
                    "fills of its trader's orders",
                    own.fills.difference(&seen.own_orders.fills).count(),
                    own.fills.len(),
                ),
                (
                    "completions of its trader's filled orders",
                    own.filled.difference(&seen.own_orders.completed).count(),
                    own.filled.len(),
                ),
                (
                    "cancellations of its trader's cancelled orders",
                    own.cancelled.difference(&seen.own_orders.cancelled).count(),
                    own.cancelled.len(),
                ),
            ];
            for (what, missing, all) in missing {
                if missing > 0 {
                    found(format!(
                        "{missing} of the {all} {what} never arrived on its open stream{}",
                        if seen.reconnects.is_empty() {
                            ""
                        } else {
                            " nor when it caught up"
                        }
                    ));
                }
            }
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
