//! Promises of docs/protocol.md that no other test held to its word: one
//! request at a time writes to a resumable upload (423 `upload_locked`),
//! `exp` is checked when a request starts (an upload may finish after it),
//! creation binds its token and takes it out of the outstanding count,
//! `Tus-Max-Size` is the largest `Upload-Length`, and a completing `PATCH`
//! that finds another account's content answers 409 and deletes the upload.
//! Redis keys are written here from the protocol's table, not with the
//! crate's functions.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    helpers::*,
    resumable::{PART, create, created, delete, head, header, offset, patch_in_sequence},
};

/// A request body the test sends piece by piece, and ends by dropping the
/// sender.
fn streamed_body() -> (mpsc::Sender<std::io::Result<Vec<u8>>>, reqwest::Body) {
    let (sender, receiver) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (sender, reqwest::Body::wrap_stream(stream))
}

/// A tus `PATCH` at `at`, in `sequence`, whose body streams from the
/// answer's sender; `length` is its `Content-Length`.
fn streamed_patch(
    app: &TestApp,
    path: &str,
    proof: &Proof,
    at: u64,
    sequence: u64,
    length: usize,
) -> (
    mpsc::Sender<std::io::Result<Vec<u8>>>,
    tokio::task::JoinHandle<reqwest::Response>,
) {
    let (sender, body) = streamed_body();
    let headers = proof.for_upload(path, TusRequest::Patch { offset: at, sequence });
    let request = app
        .http
        .patch(format!("{}{path}", app.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", length.to_string())
        .header("Upload-Offset", at.to_string())
        .header("X-Upload-Sequence", sequence.to_string())
        .body(body);
    let request = headers.apply(request);
    (sender, tokio::spawn(async move { request.send().await.unwrap() }))
}

/// The upload id of a path `/api/v2/uploads/<id>`.
fn upload_id(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// A PATCH of all of `data` to a new upload of `proof`'s, in mid-body: its
/// first half sent and the upload's lock held. Answers the body's sender,
/// the answer to come, the upload's path and its lock's key.
async fn patch_holding_its_lock(
    app: &TestApp,
    proof: &Proof,
    data: &[u8],
) -> (
    mpsc::Sender<std::io::Result<Vec<u8>>>,
    tokio::task::JoinHandle<reqwest::Response>,
    String,
    String,
) {
    let path = created(app, proof, data.len()).await;
    let (sender, answer) = streamed_patch(app, &path, proof, 0, 0, data.len());
    sender.send(Ok(data[..data.len() / 2].to_vec())).await.unwrap();
    let lock = documented_keys::upload_lock(upload_id(&path));
    eventually(10, "the PATCH holds the upload's lock", || async {
        app.backends.state.value(&lock).await.unwrap().is_some()
    })
    .await;
    (sender, answer, path, lock)
}

/// docs/protocol.md: "One request at a time writes to an upload (423
/// `upload_locked` for another)". A second PATCH, in the right sequence and
/// at the right offset, sent while the first streams its body, is refused
/// 423 and changes nothing; the first then completes the parcel.
#[tokio::test]
async fn a_second_patch_while_one_writes_is_refused_423_upload_locked() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(1000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    // The first PATCH holds the lock (and spent sequence 0).
    let (first, answer, path, lock) = patch_holding_its_lock(&app, &proof, &data).await;
    let second = patch_in_sequence(&app, &path, &proof, 0, 1, &data).await;
    expect_code(second, StatusCode::LOCKED, "upload_locked").await;

    first.send(Ok(data[500..].to_vec())).await.unwrap();
    drop(first);
    let done = answer.await.unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let id = header(&done, "x-parcel-id");
    assert_eq!(id, format!("00000001{}", sha256_upper(&data)));
    assert!(app.fetch_v2(&owner, &id).await == data);
    assert_eq!(app.backends.state.value(&lock).await.unwrap(), None);
}

/// docs/reliability.md, "Exactly once across a failover", fencing on a
/// resumable upload: a completing PATCH whose upload lock was lost while
/// its body streamed (another request holds it now, as after a failover
/// that lost it) is stopped at the commit with 503 `unavailable`, and
/// nothing is done: no parcel, no mark of its token, the other holder's
/// lock left as it is.
#[tokio::test]
async fn a_completing_patch_that_lost_the_upload_lock_mid_body_is_refused_503_with_nothing_done() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(1000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let (sender, answer, _, lock) = patch_holding_its_lock(&app, &proof, &data).await;
    let held = app.backends.state.value(&lock).await.unwrap().unwrap();
    let another = "claimed:another-request";
    let handed = app
        .backends
        .state
        .swap(&lock, &held, Some(another), Duration::from_secs(60));
    assert!(handed.await.unwrap(), "the lock changed hands");
    sender.send(Ok(data[500..].to_vec())).await.unwrap();
    drop(sender);
    let answer = answer.await.unwrap();
    expect_code(answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let id = format!("00000001{}", sha256_upper(&data));
    let inspect = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
    expect_code(inspect, StatusCode::NOT_FOUND, "not_found").await;
    let jti = crate::marks::jti_of(&token);
    assert_eq!(crate::marks::token_mark(&app, &jti).await, None, "no mark");
    let lock_now = app.backends.state.value(&lock).await.unwrap();
    assert_eq!(lock_now.as_deref(), Some(another));
}

/// docs/protocol.md: "`exp` is checked when the request starts: an upload
/// that started in time may finish after its token expired". A v2 upload
/// whose body ends after `exp` is stored.
#[tokio::test]
async fn a_v2_upload_begun_before_exp_finishes_after_it() {
    let app = spawn_with(settings(&[("AMO_TOKEN_TTL_SECS", "2")])).await;
    let owner = Account::new();
    let data = random_body(64 * 1024);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let exp = claims_of(&token)["exp"].as_u64().unwrap();
    let (sender, body) = streamed_body();
    let upload = tokio::spawn({
        let (app, proof) = (app.clone(), proof.clone());
        async move { app.upload_v2(Some(&proof), body, None).await }
    });
    sender.send(Ok(data[..1024].to_vec())).await.unwrap();
    app.until_claimed(&token, "the upload claimed its token").await;
    eventually(10, "the token's exp has passed", || async {
        amo_storage::state::unix_now() > exp
    })
    .await;
    sender.send(Ok(data[1024..].to_vec())).await.unwrap();
    drop(sender);
    let response = upload.await.unwrap();
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app.fetch_v2(&owner, &id).await == data);
    // The token is used up.
    assert_eq!(app.token_record(&token).await, None);
}

/// The same for a resumable upload: a PATCH after the token's `exp` (the
/// binding's expiry replaces it) stores its bytes and completes the parcel.
#[tokio::test]
async fn a_resumable_upload_created_before_exp_completes_after_it() {
    let app = spawn_with(settings(&[("AMO_TOKEN_TTL_SECS", "2")])).await;
    let owner = Account::new();
    let data = random_body(1000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let exp = claims_of(&token)["exp"].as_u64().unwrap();
    let path = created(&app, &proof, data.len()).await;
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data[..400]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    eventually(10, "the token's exp has passed", || async {
        amo_storage::state::unix_now() > exp
    })
    .await;
    assert_eq!(offset(&app, &path, &proof).await, 400);
    let response = patch_in_sequence(&app, &path, &proof, 400, 1, &data[400..]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = header(&response, "x-parcel-id");
    assert!(app.fetch_v2(&owner, &id).await == data);
}

/// docs/protocol.md: creation "binds [the token] to the new upload (its
/// record becomes `bound:<upload id>`) ... and it leaves the account's count
/// of outstanding tokens". With a cap of one outstanding token, a token
/// issued after the creation evicts nothing; one issued after that evicts
/// the one before it (the cap holds), and the bound token still writes.
#[tokio::test]
async fn creation_binds_the_token_and_takes_it_out_of_the_outstanding_count() {
    let app = spawn_with(settings(&[("AMO_MAX_OUTSTANDING_TOKENS", "1")])).await;
    let owner = Account::new();
    let data = random_body(1000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let bound = Some(format!("bound:{}", upload_id(&path)));
    assert_eq!(app.token_record(&token).await, bound);
    let (second, _) = app.upload_token(&owner, &random_body(10)).await;
    assert_eq!(app.token_record(&token).await, bound, "the bound token was evicted");
    assert_eq!(app.token_record(&second).await.as_deref(), Some("issued"));
    let (third, _) = app.upload_token(&owner, &random_body(10)).await;
    assert_eq!(app.token_record(&second).await, None, "the cap of one did not evict");
    assert_eq!(app.token_record(&third).await.as_deref(), Some("issued"));
    assert_eq!(app.token_record(&token).await, bound);
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&response, "x-parcel-id"),
        format!("00000001{}", sha256_upper(&data))
    );
}

/// docs/protocol.md: "`Upload-Length` is required ...; over `Tus-Max-Size`,
/// 413", and "each refusal leaves the token usable". At `Tus-Max-Size`
/// exactly, creation succeeds.
#[tokio::test]
async fn creation_over_tus_max_size_is_refused_413_and_the_token_stays_usable() {
    let app = spawn_app().await;
    let options = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v2/uploads", app.base),
        )
        .send()
        .await
        .unwrap();
    let max: u64 = header(&options, "tus-max-size").parse().unwrap();
    let owner = Account::new();
    let data = random_body(1000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let over = create(&app, &proof, (max + 1) as usize, None).await;
    expect_code(over, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let at_max = create(&app, &proof, max as usize, None).await;
    assert_eq!(at_max.status(), StatusCode::CREATED);
    let path = location_of(&at_max);
    assert_eq!(delete(&app, &path, &proof).await.status(), StatusCode::NO_CONTENT);
}

fn location_of(response: &reqwest::Response) -> String {
    header(response, "location")
}

/// docs/protocol.md: "A completing `PATCH` that finds the content stored by
/// ... another account, 409 `owned_by_another`, and the upload is deleted."
/// Bob stores the content while Alice's upload of it is open; Alice's last
/// PATCH is refused, her upload is gone (404), nothing of it is staged, and
/// Bob's parcel is his, whole.
#[tokio::test]
async fn a_completing_patch_that_finds_another_accounts_content_answers_409_and_deletes_the_upload()
{
    let app = spawn_with(resumable_settings()).await;
    let (alice, bob) = (Account::new(), Account::new());
    let data = random_body(PART + 1000);
    let (_, proof) = app.upload_token(&alice, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data[..PART]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = app.store_v2(&bob, &data).await;

    let last = patch_in_sequence(&app, &path, &proof, PART, 1, &data[PART..]).await;
    expect_code(last, StatusCode::CONFLICT, "owned_by_another").await;
    // HEAD answers carry no body: the status alone.
    assert_eq!(head(&app, &path, &proof).await.status(), StatusCode::NOT_FOUND);
    let inspected = expect_json(
        app.get(&format!("/api/v2/parcels/{id}/metadata")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inspected["owner"], json!(bob.address));
    assert!(app.fetch_v2(&bob, &id).await == data);
    eventually(10, "nothing of Alice's upload is staged", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
}

fn resumable_settings() -> amo_storage::config::Settings {
    crate::resumable::small_parts(&[])
}

/// docs/protocol.md, "Order of checks": "answers the first failure". Pairs
/// of failures, each answered by the earlier check: a signature by another
/// key (5) on a token for another operation (6) is 401
/// `invalid_signature`; another account's key (4) with a bad signature (5)
/// is 401 `key_mismatch`; a used token (8) for another operation (6) is
/// 403 `forbidden`; a used token (8) for another parcel (7) is 403
/// `forbidden`. Each refusal leaves the token as it was.
#[tokio::test]
async fn when_two_checks_fail_the_earlier_one_answers() {
    let app = spawn_app().await;
    let (owner, stranger) = (Account::new(), Account::new());
    let id = app.store_v2(&owner, &random_body(100)).await;
    let other = app.store_v2(&owner, &random_body(101)).await;

    // 5 before 6: a remove token, signed by another key but presented with
    // the owner's, on a download.
    let remove = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let forged = Proof {
        signature: stranger.prove(&remove).signature,
        ..owner.prove(&remove)
    };
    let answer = app.download_v2(Some(&forged), &id, None).await;
    expect_code(answer, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // 4 before 5: the stranger's key, and a signature by neither.
    let mismatched = Proof {
        signature: Account::new().prove(&remove).signature,
        ..stranger.prove(&remove)
    };
    let answer = app.remove_v2(Some(&mismatched), &id).await;
    expect_code(answer, StatusCode::UNAUTHORIZED, "key_mismatch").await;
    assert_eq!(app.token_record(&remove).await.as_deref(), Some("issued"));

    // 6 and 7 before 8: the remove token, used up, then sent on a download
    // and on another parcel.
    let removed = app.remove_v2(Some(&owner.prove(&remove)), &id).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.token_record(&remove).await, None);
    let answer = app.download_v2(Some(&owner.prove(&remove)), &id, None).await;
    expect_code(answer, StatusCode::FORBIDDEN, "forbidden").await;
    let answer = app.remove_v2(Some(&owner.prove(&remove)), &other).await;
    expect_code(answer, StatusCode::FORBIDDEN, "forbidden").await;
}

/// A token request body of `length` bytes: valid JSON for `user`, padded
/// with spaces.
fn padded_auth_body(user: &str, length: usize) -> String {
    let mut body = json!({"user": user, "operation": "download"}).to_string();
    assert!(body.len() <= length);
    body.push_str(&" ".repeat(length - body.len()));
    body
}

/// docs/protocol.md: a token request is at most 4096 bytes (413
/// `too_large`), read within 10 s. Exactly 4096 bytes issue a token; 4097
/// are refused, declared or chunked.
#[tokio::test]
async fn a_token_request_of_4096_bytes_is_served_and_one_of_4097_is_refused_413() {
    let app = spawn_app().await;
    let owner = Account::new();
    let post = |body: reqwest::Body| {
        app.http
            .post(format!("{}/api/v2/auth", app.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let edge = post(padded_auth_body(&owner.address, 4096).into()).await.unwrap();
    let token = expect_json(edge, StatusCode::OK).await;
    assert!(token["token"].is_string(), "{token}");
    let over = post(padded_auth_body(&owner.address, 4097).into()).await.unwrap();
    expect_code(over, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    let chunks: Vec<std::io::Result<Vec<u8>>> = padded_auth_body(&owner.address, 4097)
        .into_bytes()
        .chunks(1000)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let chunked = post(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .await
        .unwrap();
    expect_code(chunked, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
}

/// A token request whose body has not arrived 10 s after the request began
/// answers 400 `bad_request`: no sooner, and within twice that.
#[tokio::test]
async fn a_token_request_body_that_takes_longer_than_10_s_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DEADLINE: Duration = Duration::from_secs(10);
    let app = spawn_with(settings(&[("AMO_MIN_TRANSFER_BYTES_PER_SEC", "0")])).await;
    let owner = Account::new();
    let body = padded_auth_body(&owner.address, 200);
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v2/auth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..100]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE * 3, stream.read_to_end(&mut answer))
        .await
        .expect("no answer to a token request that never ends")
        .unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("a token request body cut at 100 of 200 bytes: answered after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
    assert!(took >= DEADLINE && took <= DEADLINE * 2, "answered after {took:?}");
}
