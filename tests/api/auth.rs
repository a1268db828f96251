//! `POST /api/v1/auth` and `/api/v2/auth`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn issues_the_designed_jwt_and_records_its_jti_with_the_ttl() {
    let app = spawn_with(settings(&[("AMO_TOKEN_TTL_SECS", "120")])).await;
    let account = Account::new();
    let operation = json!({"name": "upload", "hash": "ab".repeat(32)});
    let token = app
        .token(&account.address.to_lowercase(), operation.clone())
        .await;

    let header = decode_part(&token, 0);
    assert_eq!(header["alg"], json!("HS256"));
    assert_eq!(header["typ"], json!("JWT"));
    let claims = decode_part(&token, 1);
    assert_eq!(claims["iss"], json!("amo-storage-service"));
    assert_eq!(claims["aud"], json!("00000001"));
    assert_eq!(claims["user"], json!(account.address));
    assert_eq!(claims["operation"], operation, "the operation as received");
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 120);

    let ttl = app.token_lifetime(&token).await.unwrap().as_secs();
    assert!((110..=120).contains(&ttl), "TTL {ttl}");
}

#[tokio::test]
async fn v2_auth_issues_the_same_tokens() {
    let app = spawn_app().await;
    let owner = Account::new();
    let response = app
        .http
        .post(format!("{}/api/v2/auth", app.base))
        .json(&json!({"user": owner.address, "operation": "upload"}))
        .send()
        .await
        .unwrap();
    let token = expect_json(response, StatusCode::OK).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = v1_body(&owner.address, json!({}), &random_body(9));
    expect_json(
        app.upload_v1(Some(&owner.prove(&token)), &body).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn malformed_auth_requests_answer_400_in_json() {
    let app = spawn_app().await;
    let user = Account::new().address;
    let cases = [
        json!({"user": "XYZ", "operation": "upload"}),
        json!({"user": user[..39], "operation": "upload"}),
        json!({"user": user, "operation": "delete"}),
        json!({"user": user, "operation": {"name": "upload", "hash": "abc"}}),
        json!({"user": user, "operation": {"name": "download", "id": "00000001"}}),
        json!({"user": user, "operation": {"name": "download", "hash": "ab".repeat(32)}}),
        json!({"user": user, "operation": 5}),
        json!({"user": user}),
        json!({"operation": "upload"}),
        json!([1, 2]),
    ];
    for body in cases {
        expect_code(app.auth_raw(body.clone()).await, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let not_json = app
        .http
        .post(format!("{}/api/v1/auth", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_code(not_json, StatusCode::BAD_REQUEST, "bad_request").await;
}
