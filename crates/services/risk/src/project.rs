//! The orders-stream consumer: open orders, fills, positions and last prices, projected into
//! risk's tables with each event's inbox row, then into memory once committed (REL-09).
//! A fill that takes a position beyond its limit emits `RiskLimitBreached` (TRD-12).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use contracts::events::{OrderAccepted, OrderEnded, TradeExecuted};
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::book::{Book, Change};
use crate::positions::Side;
use crate::store;

pub const EVENT_TYPES: &[&str] = &[
    "OrderAccepted",
    "TradeExecuted",
    "OrderCompleted",
    "OrderCancelled",
    "OrderRejected",
];

pub struct Projector {
    book: Arc<Mutex<Book>>,
    scales: HashMap<String, u32>,
    /// What each event being applied changed, kept until its transaction commits.
    pending: Mutex<HashMap<Uuid, Vec<Change>>>,
}

impl Projector {
    pub fn new(book: Arc<Mutex<Book>>, assets: &[contracts::Asset]) -> Self {
        Self {
            book,
            scales: assets.iter().map(|a| (a.code.clone(), a.scale)).collect(),
            pending: Mutex::default(),
        }
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
    ) -> Result<Vec<Change>, HandlerError> {
        let unknown_side = || HandlerError::permanent("unknown side");
        let mut changes = Vec::new();
        match event.event_type.as_str() {
            "OrderAccepted" => {
                let accepted: OrderAccepted = event.payload_as()?;
                let side = Side::parse(&accepted.side).ok_or_else(unknown_side)?;
                store::open_order(
                    tx,
                    accepted.order_id,
                    accepted.account_id,
                    &accepted.symbol,
                    side,
                    accepted.quantity,
                )
                .await?;
                changes.push(Change::Opened {
                    order: accepted.order_id,
                    account: accepted.account_id,
                    symbol: accepted.symbol,
                    side,
                    remaining: accepted.quantity,
                });
            }
            "OrderCompleted" | "OrderCancelled" | "OrderRejected" => {
                let ended: OrderEnded = event.payload_as()?;
                if let Some(order) = ended.order_id {
                    store::end_order(tx, order).await?;
                    changes.push(Change::Ended { order });
                }
            }
            "TradeExecuted" => {
                let trade: TradeExecuted = event.payload_as()?;
                let base_scale = *self.scales.get(&trade.base_asset).ok_or_else(|| {
                    HandlerError::permanent(format!("unknown asset {}", trade.base_asset))
                })?;
                let taker_side = Side::parse(&trade.taker_side).ok_or_else(unknown_side)?;
                let maker_side = match taker_side {
                    Side::Buy => Side::Sell,
                    Side::Sell => Side::Buy,
                };
                for (order, account, side) in [
                    (trade.maker_order_id, trade.maker_account_id, maker_side),
                    (trade.taker_order_id, trade.taker_account_id, taker_side),
                ] {
                    if let Some(remaining) =
                        store::fill_open_order(tx, order, trade.quantity).await?
                    {
                        changes.push(Change::Remaining { order, remaining });
                    }
                    let before = store::position_for_update(tx, account, &trade.symbol).await?;
                    let position = before.fill(side, trade.price, trade.quantity, base_scale);
                    store::put_position(
                        tx,
                        account,
                        &trade.symbol,
                        (&trade.base_asset, &trade.quote_asset),
                        position,
                    )
                    .await?;
                    self.announce_breach(tx, event, account, &trade, position, base_scale)
                        .await?;
                    changes.push(Change::Position {
                        account,
                        symbol: trade.symbol.clone(),
                        position,
                    });
                }
                store::put_last_price(tx, &trade.symbol, trade.price).await?;
                changes.push(Change::LastPrice {
                    symbol: trade.symbol,
                    price: trade.price,
                });
            }
            _ => {}
        }
        Ok(changes)
    }

    /// Fills are never refused after the fact, but a position beyond its limit (limits
    /// lowered, or open orders that all filled) is reported.
    async fn announce_breach(
        &self,
        tx: &mut PgConnection,
        cause: &Envelope,
        account: Uuid,
        trade: &TradeExecuted,
        position: crate::positions::Position,
        base_scale: u32,
    ) -> Result<(), HandlerError> {
        let limits = self
            .book
            .lock()
            .map_err(|_| HandlerError::permanent("risk book poisoned"))?
            .limits_of(account);
        let Some(limits) = limits else {
            return Ok(());
        };
        if !limits
            .max_position
            .exceeded_by(i128::from(position.net).abs(), base_scale)
        {
            return Ok(());
        }
        let event = Envelope::new(
            crate::SERVICE,
            "RiskLimitBreached",
            1,
            account.to_string(),
            0,
            serde_json::json!({
                "account_id": account, "symbol": trade.symbol, "limit": "max_position",
                "max_position": limits.max_position.to_string(),
                "net_quantity": contracts::format_units(position.net, base_scale),
                "trade_id": trade.trade_id,
            }),
        )
        .caused_by(cause);
        events::outbox::append(tx, crate::STREAM, &event).await?;
        metrics::counter!("risk_limit_breaches_total", "limit" => "max_position").increment(1);
        Ok(())
    }
}

impl Handler for Projector {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let changes = self.apply(tx, event).await?;
            if let Ok(mut pending) = self.pending.lock() {
                pending.insert(event.id, changes);
            }
            Ok(())
        })
    }

    fn wants(&self, event_type: &str) -> bool {
        EVENT_TYPES.contains(&event_type)
    }

    fn committed(&self, event: &Envelope) {
        let changes = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&event.id));
        if let (Some(changes), Ok(mut book)) = (changes, self.book.lock()) {
            for change in changes {
                book.apply(change);
            }
        }
    }
}
