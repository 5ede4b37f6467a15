//! Kill switches from risk (TRD-11): risk refuses new orders in scope at once; orders cancels
//! what is already open in it. Consumed from the `risk` stream; cancelling is idempotent (an
//! order cancelled twice is cancelled once), so a redelivered switch does no harm.

use contracts::events::{Event, KillSwitchActivated};
use events::{Envelope, Handler, HandlerError};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::Engines;
use crate::store;

pub struct MassCancel {
    engines: Engines,
}

impl MassCancel {
    pub fn new(engines: Engines) -> Self {
        Self { engines }
    }

    async fn apply(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        let KillSwitchActivated(switch) = event.decode()?;
        let (account, symbol) = match (switch.scope.as_str(), switch.target.as_deref()) {
            ("global", _) => (None, None),
            ("account", Some(target)) => (
                Some(target.parse::<Uuid>().map_err(HandlerError::permanent)?),
                None,
            ),
            ("symbol", Some(target)) => (None, Some(target)),
            _ => {
                return Err(HandlerError::permanent(format!(
                    "kill switch scope {:?} without target",
                    switch.scope
                )));
            }
        };
        let owners = store::open_order_owners(&mut *tx, account, symbol).await?;
        let mut cancelled = 0;
        for (symbol, account) in owners {
            let instrument = store::instrument(&mut *tx, &symbol)
                .await?
                .ok_or_else(|| HandlerError::permanent(format!("no instrument {symbol}")))?;
            cancelled += self.engines.cancel_account(&instrument, account).await?;
        }
        tracing::warn!(kill_switch = %switch.kill_switch_id, cancelled, "kill switch: open orders cancelled");
        Ok(())
    }
}

impl Handler for MassCancel {
    type Deferred = ();

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
        _: &'a mut (),
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.apply(tx, event))
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == KillSwitchActivated::TYPE
    }
}
