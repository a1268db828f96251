//! The marks of used tokens (docs/reliability.md, "Exactly once across a
//! failover"): a token whose use Redis forgot (a failover promoted a
//! replica that never saw it, or Redis lost its data) comes back `issued`;
//! the mark in the parcel store still refuses a second effect, as a used
//! token (401 `token_used`), and nothing more is stored or removed. With
//! `AMO_TOKEN_MARKERS=false` the second effect happens: the gap the marks
//! close. The mark is where the documents put it, and names its holder;
//! a request that lost its token's claim before the mark (fencing) does
//! nothing.

use std::time::Duration;

use amo_storage::{
    config::StoreBackend,
    state::ISSUED,
    storage::S3Store,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::*,
    process::{BodySender, PendingAnswer, streamed_upload},
};

/// The `jti` claim of a token.
pub fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

/// What a Redis failover that lost a token's use leaves: its record back
/// at `issued`.
async fn forget_use(app: &TestApp, token: &str) {
    assert_eq!(app.token_record(token).await, None, "the token was used");
    let set = app
        .backends
        .state
        .set_new(
            &documented_keys::token(&jti_of(token)),
            ISSUED,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(set);
}

/// What the mark of the used token `jti` holds, read where the documents
/// put it, independently of the service: the object
/// `<AMO_S3_PREFIX>.tokens/<jti>` (docs/protocol.md, "Marks of used
/// tokens"), or the file `.token-<jti>` beside the parcels of the
/// directory store, of the `jti`'s letters and digits (docs/reliability.md,
/// "Exactly once across a failover"). `None`: there is none.
pub async fn token_mark(app: &TestApp, jti: &str) -> Option<String> {
    match &app.settings.store {
        StoreBackend::S3(config) => {
            let s3 = S3Store::new(config);
            let key = format!("{}.tokens/{jti}", config.prefix);
            let read = s3.client().get_object().bucket(s3.bucket()).key(&key);
            match read.send().await {
                Ok(object) => {
                    let bytes = object.body.collect().await.unwrap().into_bytes();
                    Some(String::from_utf8(bytes.to_vec()).expect("a mark in UTF-8"))
                }
                Err(err) if err.raw_response().is_some_and(|raw| raw.status().as_u16() == 404) => {
                    None
                }
                Err(err) => panic!("reading {key}: {err:?}"),
            }
        }
        StoreBackend::Directory(dir) => {
            let name: String = jti.chars().filter(char::is_ascii_alphanumeric).collect();
            let path = dir.join("parcels").join(format!(".token-{name}"));
            match std::fs::read_to_string(&path) {
                Ok(holder) => Some(holder),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => panic!("reading {}: {err}", path.display()),
            }
        }
    }
}

/// Starts a v2 upload of `data` with `proof` whose body stops after its
/// first half, and waits until the request holds `token`'s claim: answers
/// the claim's id (the record is `claimed:<claim id>`), the sender of the
/// rest and the pending answer.
async fn upload_half_sent(
    app: &TestApp,
    token: &str,
    proof: &Proof,
    data: &[u8],
) -> (String, BodySender, PendingAnswer) {
    let (sender, answer) = streamed_upload(app, proof);
    sender.send(Ok(data[..data.len() / 2].to_vec())).await.unwrap();
    app.until_claimed(token, "the upload holds its token").await;
    let record = app.token_record(token).await.expect("a claimed record");
    let claim = record.strip_prefix("claimed:").expect("claimed").to_owned();
    (claim, sender, answer)
}

/// Asserts that `mark` names a request as the holder of a token
/// (docs/reliability.md: "the request, or the resumable upload"), and
/// answers it.
pub fn request_holder(mark: Option<String>, what: &str) -> String {
    let holder = mark.unwrap_or_else(|| panic!("no mark of {what}"));
    assert!(
        holder.starts_with("request:") && holder.len() > "request:".len(),
        "the mark of {what} names no request: {holder:?}"
    );
    holder
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

/// docs/protocol.md, "Marks of used tokens": the mark of a token used to
/// upload, and of one used to remove, is `<AMO_S3_PREFIX>.tokens/<jti>`
/// (the directory store: `.token-<jti>`), written by the commit, not
/// before, and names the request that spent the token, each its own. The
/// directory store's marks are removed when it starts again.
#[tokio::test]
async fn a_used_tokens_mark_is_stored_under_its_jti_and_names_its_holder() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(2000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let upload_jti = jti_of(&token);
    let (_, sender, answer) = upload_half_sent(&app, &token, &proof, &data).await;
    assert_eq!(token_mark(&app, &upload_jti).await, None, "no mark before the commit");
    sender.send(Ok(data[data.len() / 2..].to_vec())).await.unwrap();
    drop(sender);
    let stored = expect_json(answer.await.unwrap().unwrap(), StatusCode::CREATED).await;
    let id = stored["id"].as_str().unwrap().to_owned();
    let uploader = request_holder(token_mark(&app, &upload_jti).await, "the upload");

    let remove = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let remove_jti = jti_of(&remove);
    assert_eq!(token_mark(&app, &remove_jti).await, None);
    let answer = app.remove_v2(Some(&owner.prove(&remove)), &id).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let remover = request_holder(token_mark(&app, &remove_jti).await, "the remove");
    assert_ne!(remover, uploader, "each request has its own name");

    if let StoreBackend::Directory(_) = &app.settings.store {
        // Started again on its directory, the store removes the marks.
        spawn_with(app.settings.clone()).await;
        assert_eq!(token_mark(&app, &upload_jti).await, None);
        assert_eq!(token_mark(&app, &remove_jti).await, None);
    }
}

/// docs/reliability.md, "Exactly once across a failover", fencing: an
/// upload whose token's claim was lost while its body streamed (a failover
/// lost it, and another request took the token) is stopped at its commit
/// with 503 `unavailable`, and nothing is done: no parcel, no mark, and the
/// other holder's claim left as it is.
#[tokio::test]
async fn an_upload_that_lost_its_tokens_claim_mid_body_is_refused_503_with_nothing_done() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(2000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let jti = jti_of(&token);
    let (claim, sender, answer) = upload_half_sent(&app, &token, &proof, &data).await;
    let another = "claimed:another-request";
    let taken = app
        .backends
        .state
        .swap(
            &documented_keys::token(&jti),
            &format!("claimed:{claim}"),
            Some(another),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(taken, "the claim changed hands");
    sender.send(Ok(data[data.len() / 2..].to_vec())).await.unwrap();
    drop(sender);
    expect_code(
        answer.await.unwrap().unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    let id = format!("00000001{}", sha256_upper(&data));
    let inspect = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
    expect_code(inspect, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
    assert_eq!(token_mark(&app, &jti).await, None, "no mark written");
    assert_eq!(app.token_record(&token).await.as_deref(), Some(another));
}
