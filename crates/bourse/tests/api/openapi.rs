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
