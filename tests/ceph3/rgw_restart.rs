//! The RGW killed and started again in the middle of a 256 MiB v2
//! download: the client sees a body shorter than `Content-Length` (an
//! error, never a short body that looks complete), and a ranged retry with
//! a new token gets the rest.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Replica, ceph3, ceph3_settings, helpers::*};

const MIB: usize = 1024 * 1024;
const BIG: usize = 256 * MIB;
/// How much the client reads before the RGW is killed.
const BEFORE_KILL: usize = 32 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rgw_restart_mid_download_cuts_the_body_short_and_a_ranged_retry_gets_the_rest() {
    let app = Replica::start(ceph3_settings(&[]).await).await;
    let owner = Account::new();
    let data = random_body(BIG);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let id = expect_json(
        app.upload_v2(Some(&proof), data.clone(), None).await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let mut response = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(BIG as u64));
    let mut hasher = Sha256::new();
    let mut received = 0;
    while received < BEFORE_KILL {
        let chunk = response.chunk().await.unwrap().expect("more body");
        assert_eq!(chunk[..], data[received..received + chunk.len()]);
        hasher.update(&chunk);
        received += chunk.len();
    }
    let read_before = received;
    tokio::task::spawn_blocking(|| ceph3(&["kill", "client.rgw"]))
        .await
        .unwrap();
    let killed = Instant::now();
    // The client reads on: what the service still had, then an error.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(60), response.chunk())
            .await
            .expect("the body neither went on nor ended within 60 s of the kill")
        {
            Ok(Some(chunk)) => {
                assert_eq!(chunk[..], data[received..received + chunk.len()]);
                hasher.update(&chunk);
                received += chunk.len();
            }
            Ok(None) => panic!("the body ended as if complete after {received} of {BIG} bytes"),
            Err(err) => break err,
        }
    };
    let cut_after = killed.elapsed();
    assert!(received < BIG, "the whole body arrived after all");

    let revive_took = tokio::task::spawn_blocking(|| ceph3(&["revive", "client.rgw"]))
        .await
        .unwrap();
    // A ranged retry, with a new token, gets the rest.
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let range = format!("bytes={received}-");
    let retried = Instant::now();
    let response = app
        .download_v2(Some(&owner.prove(&token)), &id, Some(&range))
        .await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes {received}-{}/{BIG}", BIG - 1).as_str())
    );
    let rest = response.bytes().await.unwrap();
    assert_eq!(rest.len(), BIG - received);
    hasher.update(&rest);
    assert_eq!(hex::encode_upper(hasher.finalize()), id[8..]);
    eprintln!(
        "RGW SIGKILLed after the client read {} MiB of {} MiB: the client got {:.1} MiB in \
         all, then an error ({ended}) {cut_after:.1?} after the kill; RGW back in \
         {revive_took:.1?}; the ranged retry ({range}) got the other {:.1} MiB in {:.1?}, \
         SHA-256 whole",
        read_before / MIB,
        BIG / MIB,
        received as f64 / MIB as f64,
        rest.len() as f64 / MIB as f64,
        retried.elapsed()
    );
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let response = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}
