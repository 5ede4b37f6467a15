//! An orders replica's engines against a test's own database, without its HTTP side: for the
//! tests that drive matching tasks as orders' handlers do.
// Not every test binary that shares this module uses all of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use contracts::checks::RiskStart;
use matching::{Side, TimeInForce};
use orders::engine::{CheckDeadline, Engines};
use orders::forwarding::Forwarder;
use orders::instruments::Instrument;
use orders::order_entry::{OrderType, ValidOrder};
use orders::ownership::Ownership;
use secrecy::SecretString;
use service_kit::idempotency::{Answer, Claim};
use service_kit::redis::KeyPrefix;
use service_kit::{Shutdown, Supervisor};
use sqlx::PgPool;
use uuid::Uuid;

/// 30,000.00 in quote minor units, and one BTC in base minor units.
pub const PRICE: i64 = 3_000_000;
pub const ONE_BTC: i64 = 100_000_000;

/// An orders replica's engines, without its HTTP side: its matching tasks are counted apart
/// (`matching`) from the book feed's.
pub struct Replica {
    pub engines: Engines,
    pub matching: Supervisor,
    pub shutdown: Shutdown,
    /// Its id in `replicas` and `symbol_owners`.
    pub id: Uuid,
}

impl Replica {
    /// Forwarding through auth at `auth_url` for its service tokens, with a timeout longer than
    /// any test, so that only the owner's answer ends a forwarded command.
    pub async fn start(pool: &PgPool, auth_url: &str) -> Self {
        let shutdown = Shutdown::new();
        let http = reqwest::Client::new();
        let auth = resilience::Upstream::new(
            "orders",
            "auth",
            auth_url,
            http.clone(),
            resilience::Policy::default(),
        )
        .unwrap();
        let tokens = resilience::TokenSource::new(auth, "orders", SecretString::from("secret"));
        let patient = resilience::Policy {
            timeout: Duration::from_secs(60),
            ..resilience::Policy::default()
        };
        let redis =
            service_kit::redis::connect_url(&SecretString::from("redis://127.0.0.1:6379"), None)
                .await
                .unwrap();
        let keys = KeyPrefix::new(&format!("test:{}", Uuid::now_v7()));
        let feed =
            orders::book_feed::BookFeed::spawn(redis, keys, &Supervisor::new("orders", &shutdown));
        let ownership = Ownership::new(pool.clone());
        let id = ownership.replica();
        // Nothing calls it: the other replica is the test.
        ownership.advertise("http://127.0.0.1:9".to_owned());
        let matching = Supervisor::new("orders", &shutdown);
        let engines = Engines::new(
            pool.clone(),
            orders::engine::Queueing {
                capacity: 64,
                linger: std::time::Duration::from_millis(1),
            },
            contracts::fees::Fees::default(),
            feed,
            ownership,
            Forwarder::new(http, patient, Arc::new(tokens)),
            matching.clone(),
        );
        Self {
            engines,
            matching,
            shutdown,
            id,
        }
    }

    /// Places one BTC at 30,000.00 on `side`, as orders' handler does once risk has checked it.
    pub fn place(
        &self,
        instrument: &Instrument,
        side: Side,
    ) -> impl Future<Output = orders::error::Result<Answer>> + Send + 'static {
        self.place_checked_by(instrument, side, RiskStart(1))
    }

    /// [`Self::place`] for an order checked by risk's start `risk_start`.
    pub fn place_checked_by(
        &self,
        instrument: &Instrument,
        side: Side,
        risk_start: RiskStart,
    ) -> impl Future<Output = orders::error::Result<Answer>> + Send + 'static {
        let (engines, instrument) = (self.engines.clone(), instrument.clone());
        let account = Uuid::now_v7();
        let order = ValidOrder {
            id: Uuid::now_v7(),
            account,
            client_order_id: None,
            symbol: instrument.symbol.clone(),
            side,
            order_type: OrderType::Limit,
            price: Some(PRICE),
            quantity: ONE_BTC,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            protection: None,
        };
        let claim = Claim {
            principal: account,
            key: Uuid::now_v7().to_string(),
            token: Uuid::now_v7(),
            request_hash: Vec::new(),
            unwritten: true,
        };
        async move {
            engines
                .place(
                    &instrument,
                    order,
                    claim,
                    CheckDeadline::after(Duration::from_secs(60)),
                    risk_start,
                )
                .await
        }
    }
}
