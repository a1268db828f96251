//! Limits against abuse: token-request rates per client address, held
//! across replicas; which address is the client's; the cap on an account's
//! outstanding tokens, which evicts rather than refuses (no stranger can
//! lock an account out); the per-replica cap on concurrent uploads.
//!
//! Rate counters live in the shared state under the client's address, so
//! each test sends from a loopback address of its own (127.x.y.z) or names
//! its own forwarded address: no other test, and no other run on the same
//! Redis, shares its counts.

use std::net::{IpAddr, Ipv4Addr};

use rand::Rng;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::*;

/// A loopback address no other test uses: 127.x.y.z, not 127.0.0.1.
pub fn unique_loopback() -> IpAddr {
    let mut rng = rand::rng();
    IpAddr::V4(Ipv4Addr::new(
        127,
        rng.random_range(1..=254),
        rng.random_range(1..=254),
        rng.random_range(1..=254),
    ))
}

/// An address in the documentation range 2001:db8::/32, unique to a test:
/// a value for `X-Forwarded-For` only, never contacted.
fn unique_forwarded() -> String {
    let mut rng = rand::rng();
    format!(
        "2001:db8:{:x}:{:x}::{:x}",
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u16>()
    )
}

/// A client whose connections come from `ip`.
pub fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap()
}

/// `POST /api/{v1,v2}/auth` for `user` from `client`, with optional
/// `X-Forwarded-For` values (one header each).
async fn ask(
    client: &reqwest::Client,
    app: &TestApp,
    version: &str,
    user: &str,
    forwarded: &[&str],
) -> Response {
    let mut request = client
        .post(format!("{}/api/{version}/auth", app.base))
        .json(&json!({"user": user, "operation": "download"}));
    for value in forwarded {
        request = request.header("X-Forwarded-For", *value);
    }
    request.send().await.unwrap()
}

/// Asserts a 429 with `Retry-After` within the window, JSON code
/// `rate_limited`, and a message containing `what`; returns the wait.
async fn expect_limited(response: Response, what: &str) -> u64 {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = expect_json(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["code"], json!("rate_limited"), "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(what), "{message:?} does not say {what:?}");
    retry_after
}

async fn expect_token(response: Response) -> String {
    let body: Value = expect_json(response, StatusCode::OK).await;
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn strangers_asking_for_tokens_in_an_accounts_name_never_lock_its_owner_out() {
    let (a, b) = spawn_pair_with(settings(&[("AMO_MAX_OUTSTANDING_TOKENS", "50")])).await;
    let owner = Account::new();
    // 700 requests naming the owner, from a stranger's address, on both
    // replicas: more than the old per-account limit (600 a minute) and
    // than the outstanding cap (50). Every one is issued.
    let stranger = client_from(unique_loopback());
    for i in 0..700 {
        let (app, version) = if i % 2 == 0 { (&a, "v1") } else { (&b, "v2") };
        let response = ask(&stranger, app, version, &owner.address, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
    }
    // The owner, from its own address, still gets tokens that work.
    let client = client_from(unique_loopback());
    let data = random_body(64);
    let response = client
        .post(format!("{}/api/v1/auth", a.base))
        .json(&json!({"user": owner.address, "operation": {"name": "upload", "hash": sha256_upper(&data)}}))
        .send()
        .await
        .unwrap();
    let token = expect_token(response).await;
    let response = b
        .upload_v2(Some(&owner.prove(&token)), data, None)
        .await;
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn the_per_address_limit_answers_429_with_retry_after_on_both_replicas() {
    let (a, b) = spawn_pair_with(settings(&[
        ("AMO_AUTH_RATE_PER_IP", "5"),
    ]))
    .await;
    let client = client_from(unique_loopback());
    // Five requests for five accounts from one address, on both replicas.
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        expect_token(ask(&client, app, "v1", &Account::new().address, &[]).await).await;
    }
    for app in [&a, &b] {
        let wait = expect_limited(
            ask(&client, app, "v2", &Account::new().address, &[]).await,
            "from this address",
        )
        .await;
        assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    }
    // Another address is not limited.
    let elsewhere = client_from(unique_loopback());
    expect_token(ask(&elsewhere, &a, "v1", &Account::new().address, &[]).await).await;
}

#[tokio::test]
async fn with_trusted_forwarded_for_the_last_entry_is_the_client() {
    let (a, b) = spawn_pair_with(settings(&[
        ("AMO_AUTH_RATE_PER_IP", "3"),
        ("AMO_TRUST_FORWARDED_FOR", "true"),
    ]))
    .await;
    let peer = client_from(unique_loopback());
    let client = unique_forwarded();
    let user = Account::new().address;
    // The entries before the last are the client's own claims, different
    // every time; the last, appended by the proxy, is what counts.
    for i in 0..3 {
        let spoof = format!("{}, 192.0.2.{i}", unique_forwarded());
        let app = if i % 2 == 0 { &a } else { &b };
        expect_token(ask(&peer, app, "v1", &user, &[&format!("{spoof}, {client}")]).await).await;
    }
    let spoof = unique_forwarded();
    expect_limited(
        ask(&peer, &b, "v1", &user, &[&format!("{spoof}, {client}")]).await,
        "from this address",
    )
    .await;
    // Two headers: the last entry of the last one counts.
    expect_limited(
        ask(&peer, &a, "v2", &user, &[&unique_forwarded(), &client]).await,
        "from this address",
    )
    .await;
    // Another last entry from the same peer is another client.
    let another = unique_forwarded();
    expect_token(ask(&peer, &a, "v1", &user, &[&format!("{client}, {another}")]).await).await;
    // The same client with spaces, or behind junk entries, is still the
    // same client.
    expect_limited(
        ask(&peer, &a, "v1", &user, &[&format!("junk, not-an-ip ,  {client} ")]).await,
        "from this address",
    )
    .await;
    // Without the header, the peer is the client; its own count is fresh.
    expect_token(ask(&peer, &a, "v1", &user, &[]).await).await;
}

#[tokio::test]
async fn without_trust_the_forwarded_for_header_is_ignored() {
    let (a, b) = spawn_pair_with(settings(&[
        ("AMO_AUTH_RATE_PER_IP", "3"),
    ]))
    .await;
    let peer = client_from(unique_loopback());
    let user = Account::new().address;
    // A new forwarded address every time does not escape the limit: the
    // peer is the client.
    for i in 0..3 {
        let app = if i % 2 == 0 { &a } else { &b };
        expect_token(ask(&peer, app, "v1", &user, &[&unique_forwarded()]).await).await;
    }
    for app in [&a, &b] {
        expect_limited(
            ask(&peer, app, "v1", &user, &[&unique_forwarded()]).await,
            "from this address",
        )
        .await;
    }
    expect_limited(ask(&peer, &a, "v1", &user, &[]).await, "from this address").await;
}

#[tokio::test]
async fn past_the_outstanding_cap_the_oldest_unused_token_is_revoked() {
    let (a, b) = spawn_pair_with(settings(&[
        ("AMO_MAX_OUTSTANDING_TOKENS", "3"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let owner = Account::new();
    let first = random_body(50);
    let hash = |data: &[u8]| json!({"name": "upload", "hash": sha256_upper(data)});
    let held = [
        a.token(&owner.address, hash(&first)).await,
        b.token(&owner.address, json!("download")).await,
        a.token(&owner.address, json!("remove")).await,
    ];
    // A claimed token is not revoked: hold the first in an upload whose
    // body has not arrived yet.
    let (sender, answer) = held_upload(&b, &owner.prove(&held[0]), &first, 10);
    b.until_claimed(&held[0], "the first token is claimed").await;
    // The fourth, fifth and sixth are issued on either replica. The
    // oldest token leaves the count each time; it is revoked unless a
    // request holds it (the first, claimed, is not).
    let fourth = b.token(&owner.address, json!("upload")).await;
    for token in &held {
        assert!(a.token_record(token).await.is_some(), "none revoked yet");
    }
    let fifth = a.token(&owner.address, json!("upload")).await;
    assert_eq!(a.token_record(&held[1]).await, None, "the oldest unused one");
    assert_eq!(a.token_record(&held[2]).await.as_deref(), Some("issued"));
    let sixth = b.token(&owner.address, json!("upload")).await;
    assert_eq!(a.token_record(&held[2]).await, None);
    for token in [&fourth, &fifth, &sixth] {
        assert_eq!(a.token_record(token).await.as_deref(), Some("issued"));
    }
    // A revoked token answers like a used one.
    let response = a
        .download_v2(Some(&owner.prove(&held[1])), &"0".repeat(72), None)
        .await;
    assert_eq!(expect_error(response, StatusCode::UNAUTHORIZED).await, "token_used");
    // Another account is not affected.
    let other = Account::new();
    a.token(&other.address, json!("upload")).await;
    // The claimed token still completes its upload.
    sender.send(Ok(first[10..].to_vec())).await.unwrap();
    drop(sender);
    let response = answer.await.unwrap().unwrap();
    expect_json(response, StatusCode::CREATED).await;
    assert_eq!(a.token_record(&held[0]).await, None, "used up");
}

/// Feeds the body of a held upload.
pub type BodySender = mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// Starts a v2 upload of `data` on `app` whose body the test feeds: the
/// first `sent` bytes now, the rest when the returned sender is used.
pub fn held_upload(
    app: &TestApp,
    proof: &Proof,
    data: &[u8],
    sent: usize,
) -> (BodySender, tokio::task::JoinHandle<reqwest::Result<Response>>) {
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let body = reqwest::Body::wrap_stream(stream);
    let request = app
        .http
        .post(format!("{}/api/v2/parcels", app.base))
        .header("content-type", "application/octet-stream")
        .proven(proof)
        .body(body);
    let upload = tokio::spawn(request.send());
    sender.try_send(Ok(data[..sent].to_vec())).unwrap();
    (sender, upload)
}

/// A v2 upload with no credentials: 503 while the replica is full, 401
/// otherwise (the slot is taken before the token is checked).
async fn probe(app: &TestApp) -> Response {
    app.upload_v2(None, b"probe".to_vec(), None).await
}

#[tokio::test]
async fn the_concurrent_upload_cap_answers_503_with_retry_after_and_frees_when_uploads_end() {
    // One client here: no share, so that it can fill the cap.
    let (a, b) = spawn_pair_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "2"),
        ("AMO_CLIENT_SHARE_PERCENT", "100"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let owner = Account::new();
    let bodies = [random_body(4096), random_body(4096)];
    let mut held = Vec::new();
    for data in &bodies {
        let (_, proof) = a.upload_token(&owner, data).await;
        held.push(held_upload(&a, &proof, data, 1000));
    }
    // Both uploads are streaming: a third is refused, before its token is
    // looked at.
    eventually(20, "replica a is full", || async {
        probe(&a).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let third = random_body(100);
    let (token, proof) = a.upload_token(&owner, &third).await;
    let response = a.upload_v2(Some(&proof), third.clone(), None).await;
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After: {retry}");
    assert_eq!(expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await, "busy");
    assert_eq!(a.token_record(&token).await.as_deref(), Some("issued"));
    // v1 shares the cap.
    let response = a
        .upload_v1(Some(&proof), &v1_body(&owner.address, json!({}), &third))
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await, "busy");
    assert_eq!(a.token_record(&token).await.as_deref(), Some("issued"));
    // The cap is per replica: b takes uploads.
    assert_eq!(probe(&b).await.status(), StatusCode::UNAUTHORIZED);

    // The held uploads finish and succeed.
    for ((sender, upload), data) in held.into_iter().zip(&bodies) {
        sender.send(Ok(data[1000..].to_vec())).await.unwrap();
        drop(sender);
        expect_json(upload.await.unwrap().unwrap(), StatusCode::CREATED).await;
    }
    // Their slots are free again.
    assert_eq!(probe(&a).await.status(), StatusCode::UNAUTHORIZED);
    expect_json(
        a.upload_v2(Some(&proof), third, None).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(a.stored_keys().await.len(), 3);
}

#[tokio::test]
async fn an_upload_slot_is_freed_when_its_client_goes_away() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "1"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let owner = Account::new();
    let data = random_body(4096);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let (sender, upload) = held_upload(&app, &proof, &data, 1000);
    eventually(20, "the replica is full", || async {
        probe(&app).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The client breaks its body off.
    sender
        .send(Err(std::io::Error::other("client gave up")))
        .await
        .unwrap();
    drop(sender);
    // The client's own body failed: its request ends with that error, and
    // no answer (the service was still reading the body).
    let failed = upload.await.unwrap().expect_err("a request whose body failed got an answer");
    assert!(failed.is_request() || failed.is_body(), "{failed:?}");
    eventually(20, "the slot is free", || async {
        probe(&app).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually(20, "the token is released", || async {
        app.token_record(&token).await.as_deref() == Some("issued")
    })
    .await;
    assert!(app.stored_keys().await.is_empty());
    expect_json(
        app.upload_v2(Some(&proof), data, None).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn the_download_cap_answers_503_before_the_token_is_spent_and_frees_when_the_body_ends() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_DOWNLOADS", "1"),
        ("AMO_CLIENT_SHARE_PERCENT", "100"),
    ]))
    .await;
    let owner = Account::new();
    // Larger than the socket buffers: the first answer's body stays open
    // while it is not read.
    let data = random_body(16 << 20);
    let id = app.store_v2(&owner, &data).await;
    let first_token = app.token(&owner.address, json!({"name": "download", "id": id})).await;
    let held = app.download_v2(Some(&owner.prove(&first_token)), &id, None).await;
    assert_eq!(held.status(), StatusCode::OK);
    let second_token = app.token(&owner.address, json!({"name": "download", "id": id})).await;
    let refused = app.download_v2(Some(&owner.prove(&second_token)), &id, None).await;
    expect_code(refused, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert_eq!(app.token_record(&second_token).await.as_deref(), Some("issued"));
    // The first body read to its end frees the slot: the same token now
    // downloads.
    assert_eq!(held.bytes().await.unwrap().len(), data.len());
    eventually(10, "the download slot is free", || {
        let (app, proof, id) = (app.clone(), owner.prove(&second_token), id.clone());
        async move { app.download_v2(Some(&proof), &id, None).await.status() == StatusCode::OK }
    })
    .await;
}
