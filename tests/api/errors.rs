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

    // The body is read only once the proof passed: without one, 401.
    let stranger = app
        .http
        .post(format!("{}/api/v1/parcels", app.base))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(stranger, StatusCode::UNAUTHORIZED).await,
        "missing_credentials"
    );
    let owner = Account::new();
    for raw in [
        "{",
        "[]",
        r#"{"owner": 5, "data": ""}"#,
        r#"{"owner": "AA", "data": "zz"}"#,
    ] {
        let token = app.token(&owner.address, serde_json::json!("upload")).await;
        let request = app
            .http
            .post(format!("{}/api/v1/parcels", app.base))
            .header("content-type", "application/json")
            .body(raw);
        let response = owner.prove(&token).apply(request).send().await.unwrap();
        assert_eq!(
            expect_error(response, StatusCode::BAD_REQUEST).await,
            "bad_request"
        );
        // The token stays usable after a malformed body.
        assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    }
    let odd_hex = serde_json::json!({"owner": owner.address, "data": "abc"});
    let token = app.token(&owner.address, serde_json::json!("upload")).await;
    expect_error(
        app.upload_v1(Some(&owner.prove(&token)), &odd_hex).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
