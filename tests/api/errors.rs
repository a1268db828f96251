//! Bad input answers JSON errors, never a 500.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn unknown_routes_methods_and_bad_ids_answer_json() {
    let app = spawn_app().await;
    let code = expect_error(app.get("/no/such/route").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "not_found");
    for bad in [
        "xyz",
        "..%2F..%2Fetc%2Fpasswd",
        &"0".repeat(71),
        &"G".repeat(72),
    ] {
        expect_code(
            app.get(&format!("/api/v1/parcels/{bad}?key=owner")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    let id = "0".repeat(72);
    expect_code(
        app.get(&format!("/api/v1/parcels/{id}?key=secrets")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let response = app
        .http
        .put(format!("{}/api/v1/parcels/{id}", app.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn bodies_that_are_not_json_answer_json_errors() {
    let app = spawn_app().await;
    let no_type = app
        .http
        .post(format!("{}/api/v1/parcels", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(no_type.status().is_client_error());
    let body: serde_json::Value = no_type.json().await.unwrap();
    assert!(body["error"].is_string());

    for raw in [
        "{",
        "[]",
        r#"{"owner": 5, "data": ""}"#,
        r#"{"owner": "AA", "data": "zz"}"#,
    ] {
        let response = app
            .http
            .post(format!("{}/api/v1/parcels", app.base))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let owner = Account::new();
    let odd_hex = serde_json::json!({"owner": owner.address, "data": "abc"});
    expect_code(app.upload_v1(None, &odd_hex).await, StatusCode::BAD_REQUEST, "bad_request").await;
}
