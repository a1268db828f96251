//! One token, many requests, two replicas: at most one proceeds.

use std::time::Duration;

use amo_storage::state::Taken;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// The status and error code (empty on a success) of each answer.
async fn answers_of(responses: Vec<reqwest::Response>) -> Vec<(StatusCode, String)> {
    let mut answers = Vec::new();
    for response in responses {
        let status = response.status();
        let code = match status.is_success() {
            true => String::new(),
            false => expect_error(response, status).await,
        };
        answers.push((status, code));
    }
    answers
}

/// Exactly one answer is `won`; every other one is the documented refusal
/// of a token used by another request: 409 `token_in_use` while the winner
/// holds it, 401 `token_used` once it consumed it.
fn assert_one_winner_and_documented_losers(answers: &[(StatusCode, String)], won: StatusCode) {
    let winners = answers.iter().filter(|(status, _)| *status == won).count();
    assert_eq!(winners, 1, "{answers:?}");
    for (status, code) in answers.iter().filter(|(status, _)| *status != won) {
        assert!(
            matches!(
                (*status, code.as_str()),
                (StatusCode::CONFLICT, "token_in_use") | (StatusCode::UNAUTHORIZED, "token_used")
            ),
            "a loser answered {status} {code}: {answers:?}"
        );
    }
}

#[tokio::test]
async fn one_token_used_by_twenty_concurrent_uploads_on_two_replicas_stores_exactly_one() {
    let (a, b) = spawn_pair().await;
    let owner = Account::new();
    let token = a.token(&owner.address, json!("upload")).await;
    let proof = owner.prove(&token);
    let bodies: Vec<_> = (0..20)
        .map(|_| v1_body(&owner.address, json!({}), &random_body(256)))
        .collect();
    let requests = bodies.iter().enumerate().map(|(i, body)| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.upload_v1(Some(&proof), body)
    });
    let answers = answers_of(join_all(requests).await).await;
    assert_one_winner_and_documented_losers(&answers, StatusCode::CREATED);
    assert_eq!(a.stored_keys().await.len(), 1);
}

#[tokio::test]
async fn one_token_used_by_twenty_concurrent_downloads_on_two_replicas_serves_exactly_one() {
    // v1 downloads have no cap of their own: the race is the token's.
    let (a, b) = spawn_pair().await;
    let owner = Account::new();
    let id = store_parcel(&a, &owner, &random_body(1024)).await;
    let token = b
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let proof = owner.prove(&token);
    let requests = (0..20).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.download_v1(Some(&proof), &id)
    });
    let answers = answers_of(join_all(requests).await).await;
    assert_one_winner_and_documented_losers(&answers, StatusCode::OK);
}

#[tokio::test]
async fn a_token_issued_by_one_replica_works_once_on_the_other() {
    let (a, b) = spawn_pair().await;
    let owner = Account::new();
    let id = store_parcel(&a, &owner, &random_body(64)).await;
    let token = a.token(&owner.address, json!("remove")).await;
    let proof = owner.prove(&token);
    assert_eq!(
        b.remove_v1(Some(&proof), &id).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_code(
        a.remove_v1(Some(&proof), &id).await,
        StatusCode::UNAUTHORIZED,
        "token_used",
    )
    .await;
    expect_code(
        b.remove_v1(Some(&proof), &id).await,
        StatusCode::UNAUTHORIZED,
        "token_used",
    )
    .await;
}

#[tokio::test]
async fn a_token_claimed_by_another_request_answers_409_and_survives() {
    let app = spawn_app().await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(64)).await;
    let token = app.token(&owner.address, json!("download")).await;
    let proof = owner.prove(&token);

    // Another replica holds the claim right now.
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let key = documented_keys::token(&jti);
    let state = &app.backends.state;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let lease = Duration::from_secs(30);
    let taken = state.take_issued(&key, "elsewhere", lease).await.unwrap();
    assert_eq!(taken, Taken::Now);
    let code = expect_error(
        app.download_v1(Some(&proof), &id).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(code, "token_in_use");

    // The other request failed and released it: it works again, once.
    let remaining = Duration::from_secs(60);
    assert!(state.restore(&key, "elsewhere", remaining).await.unwrap());
    assert_eq!(
        app.download_v1(Some(&proof), &id).await.status(),
        StatusCode::OK
    );
    let after = app.token_record(&token).await;
    assert_eq!(after, None, "a used token leaves no record");
}
