//! Leases: token claims, parcel write locks and the live marks of
//! multipart uploads are keys that expire unless their holder renews them.
//! With a one-second lease, requests that last several leases keep what
//! they hold, and no sweep touches their uploads; a commit that finds the
//! parcel's write lock held answers 409 `upload_in_progress` and leaves the
//! token usable.

use std::time::{Duration, Instant};

use amo_storage::domain::ParcelId;
use reqwest::StatusCode;
use serde_json::json;

use crate::{helpers::*, limits::held_upload};

const MIB: usize = 1 << 20;

/// How long each request below lasts: more than three leases of 1 s.
const SPAN: Duration = Duration::from_millis(3_500);

/// One-second leases (so the sweep runs every half second), 5 MiB parts.
async fn short_lease_app() -> TestApp {
    spawn_with(settings(&[
        ("AMO_LEASE_SECS", "1"),
        ("AMO_S3_PART_SIZE_BYTES", "5242880"),
    ]))
    .await
}

/// Asserts, every 100 ms for [`SPAN`], that `token` stays claimed, while
/// `step` (called with the number of checks so far) feeds the request.
async fn stays_claimed<F: AsyncFnMut(usize)>(app: &TestApp, token: &str, mut step: F) {
    let started = Instant::now();
    let mut checks = 0;
    while started.elapsed() < SPAN {
        let record = app.token_record(token).await;
        assert!(
            record.as_deref().is_some_and(|value| value.starts_with("claimed:")),
            "after {:?} the claim is {record:?}",
            started.elapsed()
        );
        step(checks).await;
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_multipart_upload_outlives_three_leases_and_every_sweep() {
    let app = short_lease_app().await;
    let owner = Account::new();
    let data = random_body(12 * MIB);
    let (token, proof) = app.upload_token(&owner, &data).await;
    // The first 6 MiB start the multipart upload; the rest trickles.
    let head = 6 * MIB;
    let (sender, answer) = held_upload(&app, &proof, &data, head);
    eventually(10, "the multipart upload started", || {
        let app = app.clone();
        async move { !app.multipart_uploads().await.is_empty() }
    })
    .await;
    let rest = &data[head..];
    let mut pieces = rest.chunks(rest.len().div_ceil(30));
    stays_claimed(&app, &token, async |_| {
        if let Some(bytes) = pieces.next() {
            sender.send(Ok(bytes.to_vec())).await.unwrap();
        }
        assert_eq!(app.multipart_uploads().await.len(), 1, "swept in flight");
    })
    .await;
    for bytes in pieces {
        sender.send(Ok(bytes.to_vec())).await.unwrap();
    }
    drop(sender);
    let id = expect_json(answer.await.unwrap().unwrap(), StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.token_record(&token).await, None);
    assert!(app.multipart_uploads().await.is_empty());
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

#[tokio::test]
async fn a_v1_upload_whose_body_trickles_keeps_its_claim_for_three_leases() {
    let app = short_lease_app().await;
    let owner = Account::new();
    let data = random_body(64 * 1024);
    let token = app
        .token(
            &owner.address,
            json!({"name": "upload", "hash": sha256_upper(&data)}),
        )
        .await;
    let body = serde_json::to_vec(&v1_body(&owner.address, json!({}), &data)).unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let request = owner.prove(&token).apply(
        app.http
            .post(format!("{}/api/v1/parcels", app.base))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream)),
    );
    let answer = tokio::spawn(request.send());
    sender.send(Ok(body[..10].to_vec())).await.unwrap();
    app.until_claimed(&token, "the v1 upload claimed its token").await;
    let piece = (body.len() - 10).div_ceil(30);
    let mut pieces = body[10..].chunks(piece);
    stays_claimed(&app, &token, async |_| {
        if let Some(bytes) = pieces.next() {
            sender.send(Ok(bytes.to_vec())).await.unwrap();
        }
    })
    .await;
    for bytes in pieces {
        sender.send(Ok(bytes.to_vec())).await.unwrap();
    }
    drop(sender);
    expect_json(answer.await.unwrap().unwrap(), StatusCode::CREATED).await;
    assert_eq!(app.token_record(&token).await, None);
}

#[tokio::test]
async fn a_download_read_slowly_over_three_leases_arrives_whole() {
    let app = short_lease_app().await;
    let owner = Account::new();
    let data = random_body(8 * MIB);
    let id = app.store_v2(&owner, &data).await;
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let mut response = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    // Read a first piece, then nothing for three leases, then the rest.
    let mut received = response.chunk().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(SPAN).await;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert!(started.elapsed() >= SPAN);
    assert_eq!(received, data);
    assert_eq!(app.token_record(&token).await, None, "used once opened");
}

#[tokio::test]
async fn a_commit_that_finds_the_write_lock_held_answers_upload_in_progress() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(2048);
    let id = ParcelId::parse(&format!("00000001{}", sha256_upper(&data))).unwrap();
    // Another replica is committing this parcel (its lock is held).
    let state = &app.backends.state;
    assert!(
        state
            .set_new(&documented_keys::parcel_lock(id.as_str()), "claimed:another", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let (token, proof) = app.upload_token(&owner, &data).await;
    let started = Instant::now();
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    let took = started.elapsed();
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 409 upload_in_progress carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expect_error(response, StatusCode::CONFLICT).await,
        "upload_in_progress"
    );
    println!("answered after {took:?}, Retry-After: {retry_after}");
    // The lock's remaining time: 60 s less the commit's wait, rounded up.
    assert!(
        retry_after <= 56 && retry_after + took.as_secs() + 1 >= 60,
        "Retry-After {retry_after} is not what the held lock has left after {took:?}"
    );
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    assert_eq!(
        app.get(&format!("/api/v2/parcels/{id}/metadata"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Once the other commit ends, the same token uploads.
    assert!(state.end(&documented_keys::parcel_lock(id.as_str()), "another").await.unwrap());
    let response = app.upload_v2(Some(&proof), data, None).await;
    expect_json(response, StatusCode::CREATED).await;
}
