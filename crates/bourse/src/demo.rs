//! `bourse demo seed`: a market to play with, created idempotently.

use access::Role;
use secrecy::SecretString;

/// The demo traders' password: this is demo data, never a real account.
pub const DEMO_PASSWORD: &str = "demo password 1234";
pub const DEMO_TRADERS: [&str; 2] = ["alice@demo.bourse", "bob@demo.bourse"];

/// What each demo trader starts with.
const FUNDS: [(&str, &str); 3] = [("USD", "100000"), ("BTC", "10"), ("ETH", "100")];

/// (symbol, base, quote, tick size, lot size) per docs/design.md §5.
const INSTRUMENTS: [(&str, &str, &str, &str, &str); 2] = [
    ("BTC-USD", "BTC", "USD", "0.01", "0.0001"),
    ("ETH-USD", "ETH", "USD", "0.01", "0.001"),
];

/// Creates what is missing and reports what it did. Safe to run any number of times.
pub async fn seed(
    auth_config: &auth::Config,
    orders_config: &orders::Config,
    settlement_config: &settlement::Config,
) -> anyhow::Result<String> {
    service_kit::db::ensure_database(&auth_config.common).await?;
    let auth_pool = auth::connect(auth_config).await?;
    auth::migrate(&auth_pool).await?;
    let orders_pool = service_kit::db::connect(&orders_config.common, orders::SCHEMA).await?;
    orders::migrate(&orders_pool).await?;

    let mut report = Vec::new();
    for (symbol, base, quote, tick, lot) in INSTRUMENTS {
        let instrument = orders::instruments::NewInstrument {
            symbol,
            base_asset: base,
            quote_asset: quote,
            tick_size: tick,
            lot_size: lot,
            min_quantity: None,
            max_quantity: None,
        }
        .validate(&orders_config.assets)
        .map_err(|e| anyhow::anyhow!("demo instrument {symbol}: {e}"))?;
        match orders::instruments::create(&orders_pool, &instrument).await {
            Ok(()) => report.push(format!("instrument {symbol}: created")),
            Err(orders::Error::InstrumentExists) => {
                report.push(format!("instrument {symbol}: exists"))
            }
            Err(err) => return Err(anyhow::anyhow!("demo instrument {symbol}: {err}")),
        }
    }

    let passwords = auth::password::Passwords::new(&auth_config.argon2)?;
    for email in DEMO_TRADERS {
        let created = auth::identity::register(
            &auth_pool,
            &passwords,
            email,
            &SecretString::from(DEMO_PASSWORD),
            &[Role::Trader],
            auth::identity::OnDuplicate::Report,
            None,
        )
        .await;
        match created {
            Ok(_) => report.push(format!(
                "trader {email}: created (password {DEMO_PASSWORD:?})"
            )),
            Err(auth::Error::Problem(problem)) if problem.code() == "email_taken" => {
                report.push(format!("trader {email}: exists"));
            }
            Err(err) => return Err(anyhow::anyhow!("demo trader {email}: {err}")),
        }
    }
    let ledger = service_kit::db::connect(&settlement_config.common, settlement::SCHEMA).await?;
    settlement::migrate(&ledger).await?;
    settlement::store::sync_assets(&ledger, &settlement_config.assets).await?;
    for email in DEMO_TRADERS {
        let user = auth::store::user_by_email(&auth_pool, email)
            .await?
            .ok_or_else(|| anyhow::anyhow!("demo trader {email} vanished"))?;
        for (asset, amount) in FUNDS {
            let request = settlement::funding::FundingRequest {
                account_id: user.id,
                asset: asset.to_owned(),
                amount: amount.to_owned(),
            };
            let key = format!("demo-seed:{email}:{asset}");
            let made = settlement::funding::deposit_once(
                &ledger,
                &settlement_config.assets,
                &request,
                &key,
            )
            .await
            .map_err(|e| anyhow::anyhow!("funding {email} with {asset}: {e}"))?;
            let done = if made {
                "deposited"
            } else {
                "deposited before"
            };
            report.push(format!("balance {email} {amount} {asset}: {done}"));
        }
    }
    Ok(report.join("\n"))
}
