//! Instruments (TRD-01): what can be traded, in which increments, and whether it trades now.

use contracts::{AmountError, Asset, format_units, parse_units};
use serde::Serialize;
use service_kit::http::FieldError;
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::store;

pub const STREAM: &str = "orders";
pub const PRODUCER: &str = "orders";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Halted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Halted => "halted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Status::Open),
            "halted" => Some(Status::Halted),
            _ => None,
        }
    }
}

/// An instrument in minor units of its assets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    pub symbol: String,
    pub base: Asset,
    pub quote: Asset,
    /// Quote minor units per tick.
    pub tick_size: i64,
    /// Base minor units per lot.
    pub lot_size: i64,
    pub min_quantity: i64,
    pub max_quantity: i64,
    pub status: Status,
}

/// What an admin asks for, as decimal strings.
pub struct NewInstrument<'a> {
    pub symbol: &'a str,
    pub base_asset: &'a str,
    pub quote_asset: &'a str,
    pub tick_size: &'a str,
    pub lot_size: &'a str,
    pub min_quantity: Option<&'a str>,
    pub max_quantity: Option<&'a str>,
}

/// Default maximum order size: a billion lots.
const DEFAULT_MAX_LOTS: i64 = 1_000_000_000;

impl NewInstrument<'_> {
    /// Checks every field and converts to units; all problems are reported together.
    pub fn validate(&self, assets: &[Asset]) -> Result<Instrument> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            });
        };
        let find = |code: &str| assets.iter().find(|a| a.code == code).cloned();
        let base = find(self.base_asset);
        let quote = find(self.quote_asset);
        if base.is_none() {
            fail("base_asset", format!("unknown asset {:?}", self.base_asset));
        }
        if quote.is_none() {
            fail(
                "quote_asset",
                format!("unknown asset {:?}", self.quote_asset),
            );
        }
        if self.base_asset == self.quote_asset {
            fail("quote_asset", "must differ from the base asset".to_owned());
        }
        if self.symbol != format!("{}-{}", self.base_asset, self.quote_asset) {
            fail("symbol", "must be BASE-QUOTE, e.g. BTC-USD".to_owned());
        }
        let (Some(base), Some(quote)) = (base, quote) else {
            return Err(Error::Validation(errors));
        };
        let positive = |text: &str, scale: u32| -> Result<i64, String> {
            match parse_units(text, scale) {
                Ok(0) => Err("must be greater than zero".to_owned()),
                Ok(units) => Ok(units),
                Err(AmountError::TooPrecise(scale)) => {
                    Err(format!("has more than {scale} decimals"))
                }
                Err(err) => Err(err.to_string()),
            }
        };
        let tick_size = positive(self.tick_size, quote.scale).map_err(|m| fail("tick_size", m));
        let lot_size = positive(self.lot_size, base.scale).map_err(|m| fail("lot_size", m));
        let min_quantity = self
            .min_quantity
            .map(|q| positive(q, base.scale).map_err(|m| fail("min_quantity", m)))
            .transpose();
        let max_quantity = self
            .max_quantity
            .map(|q| positive(q, base.scale).map_err(|m| fail("max_quantity", m)))
            .transpose();
        let (Ok(tick_size), Ok(lot_size), Ok(min_quantity), Ok(max_quantity)) =
            (tick_size, lot_size, min_quantity, max_quantity)
        else {
            return Err(Error::Validation(errors));
        };
        let min_quantity = min_quantity.unwrap_or(lot_size);
        let max_quantity = max_quantity
            .unwrap_or_else(|| lot_size.saturating_mul(DEFAULT_MAX_LOTS) / lot_size * lot_size);
        if min_quantity % lot_size != 0 {
            fail(
                "min_quantity",
                "must be a multiple of the lot size".to_owned(),
            );
        }
        if max_quantity % lot_size != 0 {
            fail(
                "max_quantity",
                "must be a multiple of the lot size".to_owned(),
            );
        }
        if max_quantity < min_quantity {
            fail(
                "max_quantity",
                "must not be below the minimum quantity".to_owned(),
            );
        }
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        Ok(Instrument {
            symbol: self.symbol.to_owned(),
            base,
            quote,
            tick_size,
            lot_size,
            min_quantity,
            max_quantity,
            status: Status::Open,
        })
    }
}

/// An instrument as clients see it: decimal strings in each asset's scale.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct InstrumentView {
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    pub tick_size: String,
    pub lot_size: String,
    pub min_quantity: String,
    pub max_quantity: String,
    pub status: Status,
}

impl From<&Instrument> for InstrumentView {
    fn from(i: &Instrument) -> Self {
        Self {
            symbol: i.symbol.clone(),
            base_asset: i.base.code.clone(),
            quote_asset: i.quote.code.clone(),
            tick_size: format_units(i.tick_size, i.quote.scale),
            lot_size: format_units(i.lot_size, i.base.scale),
            min_quantity: format_units(i.min_quantity, i.base.scale),
            max_quantity: format_units(i.max_quantity, i.base.scale),
            status: i.status,
        }
    }
}

/// Creates an instrument and announces it, in one transaction.
pub async fn create(pool: &PgPool, instrument: &Instrument) -> Result<()> {
    let mut tx = pool.begin().await?;
    store::insert_instrument(&mut tx, instrument).await?;
    let event = events::Envelope::new(
        PRODUCER,
        "InstrumentCreated",
        1,
        instrument.symbol.clone(),
        1,
        serde_json::value::to_raw_value(&InstrumentView::from(instrument))
            .map_err(events::Error::from)?,
    );
    events::outbox::append(&mut tx, STREAM, &event).await?;
    tx.commit().await?;
    tracing::info!(symbol = %instrument.symbol, "instrument created");
    Ok(())
}

/// Opens or halts trading; announces the change.
pub async fn set_status(pool: &PgPool, symbol: &str, status: Status) -> Result<Instrument> {
    let mut tx = pool.begin().await?;
    let instrument = store::set_instrument_status(&mut tx, symbol, status)
        .await?
        .ok_or(Error::NotFound)?;
    let event = events::Envelope::new(
        PRODUCER,
        "InstrumentStatusChanged",
        1,
        symbol.to_owned(),
        0,
        serde_json::value::to_raw_value(&serde_json::json!({ "symbol": symbol, "status": status }))
            .map_err(events::Error::from)?,
    );
    events::outbox::append(&mut tx, STREAM, &event).await?;
    tx.commit().await?;
    tracing::info!(%symbol, status = status.as_str(), "instrument status changed");
    Ok(instrument)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(tick: &'a str, lot: &'a str) -> NewInstrument<'a> {
        NewInstrument {
            symbol: "BTC-USD",
            base_asset: "BTC",
            quote_asset: "USD",
            tick_size: tick,
            lot_size: lot,
            min_quantity: None,
            max_quantity: None,
        }
    }

    #[test]
    fn sizes_are_converted_to_units_of_each_asset() {
        let instrument = request("0.01", "0.0001")
            .validate(&Asset::defaults())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(instrument.tick_size, 1);
        assert_eq!(instrument.lot_size, 10_000);
        assert_eq!(instrument.min_quantity, 10_000);
        assert_eq!(instrument.max_quantity % instrument.lot_size, 0);
        let view = InstrumentView::from(&instrument);
        assert_eq!(
            (view.tick_size.as_str(), view.lot_size.as_str()),
            ("0.01", "0.00010000")
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let Err(Error::Validation(errors)) = request("0.001", "0").validate(&Asset::defaults())
        else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["tick_size", "lot_size"]);
    }
}
