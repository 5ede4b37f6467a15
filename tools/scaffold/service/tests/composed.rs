//! {{Name}} as part of the platform: `serve all` starts it on its own listener, the gateway
//! routes its public path (and refuses it without a token), the merged API document lists it,
//! and readiness probes reach it — everything `bourse::SERVICES` and the gateway's route table
//! are meant to derive from one entry each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::Target;
use serde_json::{Value, json};
use service_kit::{Env, Shutdown};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn serve_all_starts_routes_documents_and_probes_it(pool: PgPool) {
    let plan = bourse::plan(
        &[Target::All],
        Env::from_pairs(bourse::testing::test_env(&pool)),
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let running = bourse::start(plan, &shutdown).await.unwrap();
    let own = running
        .address(Target::{{Name}})
        .expect("started on its own listener");
    let gateway = format!("http://{}", running.address(Target::Gateway).unwrap());
    let client = reqwest::Client::new();

    // Probed: its own readiness, and the gateway's report of its upstreams.
    let ready = client
        .get(format!("http://{own}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let report: Value = client
        .get(format!("{gateway}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["checks"]["{{name}}"], "ok", "{report}");

    // Routed: the gateway refuses it without a token and forwards it with one.
    let anonymous = client
        .get(format!("{gateway}/v1/{{name}}/records"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let credentials =
        json!({ "email": "first@example.com", "password": "correct horse battery staple" });
    let registered = client
        .post(format!("{gateway}/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let tokens: Value = client
        .post(format!("{gateway}/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let records = client
        .get(format!("{gateway}/v1/{{name}}/records"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(records.status(), 200);
    assert_eq!(records.json::<Value>().await.unwrap(), json!([]));

    // Documented: the public API document has its path.
    let document: Value = client
        .get(format!("{gateway}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        document["paths"]["/v1/{{name}}/records"]["get"].is_object(),
        "{}",
        document["paths"]
    );

    shutdown.trigger();
    running.wait().await.unwrap();
}
