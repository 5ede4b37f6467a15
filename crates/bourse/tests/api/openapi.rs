//! The API description (OPS-09): every public route is in it, nothing internal is.

use gateway::route_table::ROUTES;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn every_route_the_gateway_serves_is_in_the_openapi_document(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let spec: Value = response.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    for route in ROUTES {
        let method = route.method.as_str().to_lowercase();
        assert!(
            spec["paths"][route.path][&method].is_object(),
            "{} {} is served but not described",
            route.method,
            route.path
        );
    }
    for path in gateway::openapi::GATEWAY_PATHS {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} is not described"
        );
    }
    let paths = spec["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        ROUTES
            .iter()
            .map(|r| r.path)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            + gateway::openapi::GATEWAY_PATHS.len()
    );
    assert!(paths.keys().all(|p| !p.starts_with("/internal")));
    assert!(spec["components"]["schemas"]["Problem"].is_object());
}

#[sqlx::test(migrations = false)]
async fn the_document_says_how_every_route_fails_and_which_assets_exist(pool: PgPool) {
    let app = spawn_app(pool).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();

    for route in ROUTES {
        let method = route.method.as_str().to_lowercase();
        let responses = &spec["paths"][route.path][&method]["responses"];
        let listed = |status: &str| responses[status].is_object();
        // What the edge answers on any route: rate limits, shedding, timeouts.
        for status in ["429", "503", "504"] {
            assert!(
                listed(status),
                "{} {} lacks {status}",
                route.method,
                route.path
            );
        }
        match route.access {
            gateway::route_table::Access::Public => {}
            gateway::route_table::Access::Authenticated => assert!(listed("401")),
            gateway::route_table::Access::Roles(_) => assert!(listed("401") && listed("403")),
        }
        // Every error is problem+json with the one Problem schema.
        for (status, response) in responses.as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object().unwrap();
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{} {} {status}",
                    route.method,
                    route.path
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem"
                );
            }
        }
    }
    // The configured assets are the only ones a request may name (BOURSE_ASSETS).
    let schemas = &spec["components"]["schemas"];
    let assets = serde_json::json!(["USD", "BTC", "ETH"]);
    assert_eq!(
        schemas["FundingRequest"]["properties"]["asset"]["enum"],
        assets
    );
    assert_eq!(
        schemas["CreateInstrument"]["properties"]["base_asset"]["enum"],
        assets
    );
    assert_eq!(
        schemas["CreateInstrument"]["properties"]["quote_asset"]["enum"],
        assets
    );
}
