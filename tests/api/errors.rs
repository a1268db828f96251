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
    // The route takes GET and DELETE: 405, in JSON.
    expect_code(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

/// A method a route does not take answers 405 in JSON, with the route's
/// methods (as the OpenAPI spec lists them) in `Allow`.
#[tokio::test]
async fn a_method_a_route_does_not_take_names_the_ones_it_does() {
    let app = spawn_app().await;
    let spec: serde_json::Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let id = "0".repeat(72);
    for (path, template) in [
        (format!("/api/v1/parcels/{id}"), "/api/v1/parcels/{id}"),
        ("/api/v2/uploads".to_owned(), "/api/v2/uploads"),
        ("/api/v1/auth".to_owned(), "/api/v1/auth"),
    ] {
        let response = app
            .http
            .put(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("allow")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(
            expect_error(response, StatusCode::METHOD_NOT_ALLOWED).await,
            "method_not_allowed",
            "{path}"
        );
        let mut allowed: Vec<String> = allow
            .unwrap_or_else(|| panic!("{path}: no Allow"))
            .split(", ")
            .map(str::to_ascii_lowercase)
            .collect();
        allowed.sort();
        let mut listed: Vec<String> = spec["paths"][template]
            .as_object()
            .unwrap_or_else(|| panic!("{template} is not in the spec"))
            .keys()
            .cloned()
            .collect();
        listed.sort();
        assert_eq!(allowed, listed, "{path}");
    }
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
    expect_code(
        no_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

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
