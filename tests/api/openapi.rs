//! The committed spec is the one the code generates, and it is served.

use reqwest::StatusCode;

use crate::helpers::*;

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[test]
fn the_committed_spec_matches_the_code() {
    let generated = amo_storage::app::openapi_spec();
    assert!(
        generated.trim() == COMMITTED.trim(),
        "openapi/openapi.json is stale: regenerate it with \
         `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_spec_and_the_docs_are_served() {
    let app = spawn_app().await;
    let served: serde_json::Value =
        expect_json(app.get("/api/openapi.json").await, StatusCode::OK).await;
    let committed: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    assert_eq!(served, committed);
    for path in [
        "/api/v1/auth",
        "/api/v1/parcels",
        "/api/v1/parcels/{id}",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            served["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
}
