//! Which orders replica keeps each symbol's book (TRD-08, ADR 0014).
//!
//! Any number of orders replicas share one database; each symbol's book lives in exactly one
//! of them, its owner, and the others forward that symbol's commands to it. Ownership is kept
//! in PostgreSQL, the engine every replica already depends on: a lease per replica (renewed
//! every second, [`LEASE`] long) and an epoch per symbol, bumped by every change of owner and
//! checked inside every matching batch's own statement (`store::write_matched`). A replica
//! whose lease ran out — killed, partitioned, or paused — loses its symbols to the next replica
//! that asks; if it wakes up, its first batch finds a newer epoch and commits nothing.
//!
//! [`plan`] spreads the symbols: every replica takes orphaned symbols up to its fair share and
//! hands symbols beyond it to the replica with the fewest.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{self, OwnerRow};

/// How long a replica's claim to be alive holds without renewal: the longest a dead owner's
/// symbols wait for a new one.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often leases are renewed and the symbols rebalanced.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Where a symbol's book is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// In this replica, under `epoch`.
    Here { epoch: i64 },
    /// In replica `replica`, reached at `address`.
    There { replica: Uuid, address: String },
}

/// This replica's identity and its view of the ownership table.
#[derive(Clone)]
pub struct Ownership {
    pool: PgPool,
    replica: Uuid,
    /// Known once the server has bound its port.
    address: Arc<OnceLock<String>>,
}

impl Ownership {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            replica: Uuid::now_v7(),
            address: Arc::default(),
        }
    }

    pub fn replica(&self) -> Uuid {
        self.replica
    }

    /// Where the other replicas reach this one (`BOURSE_ORDERS_ADVERTISE_URL`, or the bound
    /// address); set once.
    pub fn advertise(&self, address: String) {
        let _ = self.address.set(address);
    }

    /// Renews this replica's lease. Before the address is known there is nothing to renew.
    pub async fn renew(&self) -> Result<()> {
        match self.address.get() {
            Some(address) => store::renew_replica(&self.pool, self.replica, address, LEASE).await,
            None => Ok(()),
        }
    }

    /// The owner of `symbol`, taking it over when it has no live one; `None` when there is no
    /// such instrument.
    pub async fn resolve(&self, symbol: &str) -> Result<Option<Owner>> {
        // Each round either finds a live owner or takes the symbol; losing a takeover race
        // means someone else just took it, which the next round finds.
        for _ in 0..3 {
            let Some(row) = store::owner(&self.pool, symbol).await? else {
                return Ok(None);
            };
            match (row.live, row.replica, row.address) {
                (true, Some(replica), _) if replica == self.replica => {
                    return Ok(Some(Owner::Here { epoch: row.epoch }));
                }
                (true, Some(replica), Some(address)) => {
                    return Ok(Some(Owner::There { replica, address }));
                }
                _ => {
                    if let Some(epoch) = self.take(symbol, row.epoch, self.replica).await? {
                        return Ok(Some(Owner::Here { epoch }));
                    }
                }
            }
        }
        Err(Error::OwnerMoving)
    }

    /// Moves `symbol` from epoch `seen` to `to` (this replica or another); the new epoch.
    pub async fn take(&self, symbol: &str, seen: i64, to: Uuid) -> Result<Option<i64>> {
        let taken = store::take_symbol(&self.pool, symbol, seen, to).await?;
        if let Some(epoch) = taken {
            let how = if to == self.replica {
                "taken"
            } else {
                "handed_over"
            };
            tracing::info!(%symbol, epoch, replica = %to, how, "symbol changed owner");
            metrics::counter!("orders_symbol_owner_changes_total", "how" => how).increment(1);
        }
        Ok(taken)
    }

    /// Everything the balancer needs, read in two statements.
    pub async fn survey(&self) -> Result<(Vec<OwnerRow>, Vec<Uuid>)> {
        Ok((
            store::owners(&self.pool).await?,
            store::live_replicas(&self.pool).await?,
        ))
    }

    /// Forgets replicas whose lease ran out an hour ago.
    pub async fn purge_dead(&self) -> Result<()> {
        store::purge_replicas(&self.pool, Duration::from_secs(3600)).await?;
        Ok(())
    }

    /// Gives up every symbol and the lease, so the others take over at once (clean shutdown).
    pub async fn leave(&self) -> Result<()> {
        store::leave(&self.pool, self.replica).await
    }
}

/// What one replica should do to its share of the symbols.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Orphaned symbols to take: (symbol, epoch seen).
    pub take: Vec<(String, i64)>,
    /// Own symbols beyond the fair share, each to the replica with the fewest:
    /// (symbol, own epoch, new owner).
    pub hand_over: Vec<(String, i64, Uuid)>,
}

/// This replica's moves: up to ⌈symbols / live replicas⌉ each. A symbol whose owner is not
/// alive is an orphan; it is taken by a replica below its share. A replica above its share
/// hands its surplus to replicas below it, so a replica that joins gets symbols without
/// anybody dying.
pub fn plan(me: Uuid, owners: &[OwnerRow], live: &[Uuid]) -> Plan {
    let mut replicas: Vec<Uuid> = live.to_vec();
    if !replicas.contains(&me) {
        replicas.push(me);
    }
    let fair = owners.len().div_ceil(replicas.len());
    let mut counts: HashMap<Uuid, usize> = replicas.iter().map(|r| (*r, 0)).collect();
    let mut mine = Vec::new();
    let mut orphans = Vec::new();
    for row in owners {
        match row.replica {
            Some(replica) if row.live || replica == me => {
                *counts.entry(replica).or_default() += 1;
                if replica == me {
                    mine.push(row);
                }
            }
            _ => orphans.push(row),
        }
    }
    let mut plan = Plan::default();
    let room = fair.saturating_sub(mine.len());
    // Start where this replica's id points, so replicas taking orphans together mostly pick
    // different ones (a collision only costs a lost compare-and-set).
    let offset = if orphans.is_empty() {
        0
    } else {
        (me.as_u128() % orphans.len() as u128) as usize
    };
    for row in orphans
        .iter()
        .cycle()
        .skip(offset)
        .take(orphans.len().min(room))
    {
        plan.take.push((row.symbol.clone(), row.epoch));
    }
    for row in mine.iter().skip(fair) {
        let Some((target, count)) = counts
            .iter_mut()
            .filter(|(replica, count)| **replica != me && **count < fair)
            .min_by_key(|(replica, count)| (**count, **replica))
        else {
            break;
        };
        *count += 1;
        plan.hand_over
            .push((row.symbol.clone(), row.epoch, *target));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(symbol: &str, replica: Option<Uuid>, live: bool) -> OwnerRow {
        OwnerRow {
            symbol: symbol.to_owned(),
            epoch: 3,
            replica,
            address: replica.map(|_| "http://127.0.0.1:1".to_owned()),
            live,
        }
    }

    #[test]
    fn a_lone_replica_takes_every_symbol() {
        let me = Uuid::from_u128(1);
        let owners = [row("A", None, false), row("B", None, false)];
        let plan = plan(me, &owners, &[me]);
        assert_eq!(plan.take.len(), 2);
        assert!(plan.hand_over.is_empty());
    }

    #[test]
    fn a_replica_above_its_share_hands_the_surplus_to_the_emptiest() {
        let (me, busy, idle) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let owners = [
            row("A", Some(me), true),
            row("B", Some(me), true),
            row("C", Some(me), true),
            row("D", Some(busy), true),
        ];
        // 4 symbols over 3 replicas: 2 each at most.
        let plan = plan(me, &owners, &[me, busy, idle]);
        assert_eq!(plan.hand_over, vec![("C".to_owned(), 3, idle)]);
        assert!(plan.take.is_empty());
    }

    #[test]
    fn the_symbols_of_a_dead_replica_are_orphans_taken_up_to_the_share() {
        let (me, dead, other) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let owners = [
            row("A", Some(dead), false),
            row("B", Some(dead), false),
            row("C", Some(other), true),
            row("D", Some(me), true),
        ];
        // 4 symbols over 2 live replicas: this one takes one of the two orphans.
        let plan = plan(me, &owners, &[me, other]);
        assert_eq!(plan.take.len(), 1);
        assert!(["A", "B"].contains(&plan.take[0].0.as_str()));
    }

    #[test]
    fn nobody_moves_when_the_shares_are_even() {
        let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let owners = [
            row("A", Some(me), true),
            row("B", Some(other), true),
            row("C", Some(me), true),
        ];
        assert_eq!(plan(me, &owners, &[me, other]), Plan::default());
    }
}
