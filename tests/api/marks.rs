//! The marks of used tokens (docs/reliability.md, "Exactly once across a
//! failover"): a token whose use Redis forgot (a failover promoted a
//! replica that never saw it, or Redis lost its data) comes back `issued`;
//! the mark in the parcel store still refuses a second effect, as a used
//! token (401 `token_used`), and nothing more is stored or removed. With
//! `AMO_TOKEN_MARKERS=false` the second effect happens: the gap the marks
//! close.

use std::time::Duration;

use amo_storage::{auth::tokens::token_key, state::ISSUED};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// What a Redis failover that lost a token's use leaves: its record back
/// at `issued`.
async fn forget_use(app: &TestApp, token: &str) {
    let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
    assert_eq!(app.token_record(token).await, None, "the token was used");
    let set = app
        .backends
        .state
        .set_new(&token_key(&jti), ISSUED, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(set);
}

/// A bare v1 upload token used once, forgotten, and used with another body:
/// answers the second use, and whether its parcel got stored.
async fn second_upload(app: &TestApp) -> (reqwest::Response, bool) {
    let owner = Account::new();
    let token = app
        .token(&owner.address, json!("upload"))
        .await;
    let (first, second) = (random_body(300), random_body(300));
    let response = app
        .upload_v1(Some(&owner.prove(&token)), &v1_body(&owner.address, json!({}), &first))
        .await;
    let stored_first = expect_json(response, StatusCode::CREATED).await;
    let storage_id = stored_first["id"].as_str().unwrap()[..8].to_owned();
    forget_use(app, &token).await;
    let response = app
        .upload_v1(Some(&owner.prove(&token)), &v1_body(&owner.address, json!({}), &second))
        .await;
    let id = format!("{storage_id}{}", sha256_upper(&second));
    let stored = app.inspect_v1(&id, "metadata").await.status() == StatusCode::OK;
    (response, stored)
}

#[tokio::test]
async fn an_upload_token_whose_use_redis_lost_stores_one_parcel_only() {
    let app = spawn_app().await;
    let (response, stored) = second_upload(&app).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "token_used").await;
    assert!(!stored, "the second body was stored");
}

#[tokio::test]
async fn without_the_marks_a_token_whose_use_redis_lost_works_twice() {
    let app = spawn_with(settings(&[("AMO_TOKEN_MARKERS", "false")])).await;
    let (response, stored) = second_upload(&app).await;
    expect_json(response, StatusCode::CREATED).await;
    assert!(stored, "the second body is stored: the gap the marks close");
}

#[tokio::test]
async fn a_remove_token_whose_use_redis_lost_removes_once() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(400);
    let id = store_parcel(&app, &owner, &data).await;
    let token = app
        .token(&owner.address, json!({ "name": "remove", "id": id }))
        .await;
    let response = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // The owner stores it again; the old remove token comes back.
    assert_eq!(store_parcel(&app, &owner, &data).await, id);
    forget_use(&app, &token).await;
    let response = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "token_used").await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data, "the parcel is still there");
}
