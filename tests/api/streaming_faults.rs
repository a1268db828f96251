//! v2 uploads that fail: nothing visible, no multipart upload left behind,
//! and the token stays usable.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use amo_storage::state::unix_now;

use crate::{
    helpers::*,
    roundtrip_v2::{PART, spawn_small_parts},
};

#[tokio::test]
async fn a_hash_mismatch_leaves_nothing_and_keeps_the_token() {
    let app = spawn_small_parts().await;
    let owner = Account::new();
    let declared = random_body(2 * PART + 3);
    let (token, proof) = app.upload_token(&owner, &declared).await;
    let mut other = declared.clone();
    *other.last_mut().unwrap() ^= 1;
    let code = expect_error(
        app.upload_v2(Some(&proof), other, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(code, "hash_mismatch");
    assert!(app.stored_keys().await.is_empty());
    eventually(10, "the multipart upload is aborted", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let response = app.upload_v2(Some(&proof), declared.clone(), None).await;
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_leaves_nothing_and_keeps_the_token() {
    let app = spawn_small_parts().await;
    let owner = Account::new();
    let data = random_body(3 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;

    let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = upload_head(&proof, data.len(), false);
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&data[..PART + PART / 2]).await.unwrap();
    eventually(20, "a multipart upload has started", || async {
        !app.multipart_uploads().await.is_empty()
    })
    .await;
    drop(socket);

    eventually(20, "the multipart upload is aborted", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    eventually(20, "the token is released", || async {
        app.token_record(&token).await.as_deref() == Some("issued")
    })
    .await;
    assert!(app.stored_keys().await.is_empty());
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app.fetch_v2(&owner, &id).await == data);
}

#[tokio::test]
async fn an_s3_failure_mid_upload_leaves_nothing_and_keeps_the_token() {
    let app = spawn_small_parts().await;
    let owner = Account::new();
    let data = random_body(4 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;

    // The body arrives through a channel, so the test decides when.
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(receiver));
    let upload = tokio::spawn({
        let app = app.clone();
        let proof = proof.clone();
        async move { app.upload_v2(Some(&proof), body, None).await }
    });
    for chunk in data[..2 * PART].chunks(PART / 2) {
        sender.send(Ok(chunk.to_vec())).await.unwrap();
    }
    eventually(20, "a multipart upload has started", || async {
        !app.multipart_uploads().await.is_empty()
    })
    .await;

    // The store loses the upload under the service's feet.
    app.lose_unfinished_uploads().await;
    for chunk in data[2 * PART..].chunks(PART / 2) {
        if sender.send(Ok(chunk.to_vec())).await.is_err() {
            break; // the service gave up reading: fine
        }
    }
    drop(sender);
    let response = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .unwrap()
        .unwrap();
    let code = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");

    assert!(app.stored_keys().await.is_empty());
    eventually(20, "no multipart upload is left", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    expect_json(response, StatusCode::CREATED).await;
}

/// A stream over an mpsc receiver.
fn tokio_stream_from<T: Send + 'static>(
    receiver: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// An upload refused before its body is read still has the body read after
/// the answer: a sender that keeps streaming it (nginx with
/// `proxy_request_buffering off`) is not cut off with a broken pipe, which
/// nginx would answer as 502 and count against the replica (tests/lb).
#[tokio::test]
async fn a_refused_upload_reads_the_rest_of_its_body_after_the_answer() {
    let app = spawn_app().await;
    const MIB: usize = 1024 * 1024;
    let declared = 48 * MIB;
    let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v2/parcels HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\nX-Auth-Token: not-a-token\r\nX-Public-Key: 00\r\n\
         X-Signature: 00\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; MIB];
    socket.write_all(&chunk).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Far more than the socket buffers hold: it all goes only if the service reads on.
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 1..declared / MIB {
            socket.write_all(&chunk).await?;
        }
        socket.flush().await
    })
    .await
    .expect("the service reads the refused body within 20 s");
    assert!(
        rest.is_ok(),
        "the service stopped reading the refused body: {rest:?}"
    );
}

#[tokio::test]
async fn two_owners_racing_on_one_content_exactly_one_wins() {
    let (a, b) = spawn_pair_small_parts().await;
    for round in 0..3 {
        let alice = Account::new();
        let bob = Account::new();
        let data = random_body(2 * PART + round);
        let hash = json!({"name": "upload", "hash": sha256_upper(&data)});
        let alice_token = a.token(&alice.address, hash.clone()).await;
        let bob_token = b.token(&bob.address, hash).await;
        let (alice_proof, bob_proof) = (alice.prove(&alice_token), bob.prove(&bob_token));
        let responses = join_all([
            a.upload_v2(Some(&alice_proof), data.clone(), None),
            b.upload_v2(Some(&bob_proof), data.clone(), None),
        ])
        .await;
        let mut statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}"
        );
        let winner = if responses[0].status() == StatusCode::CREATED {
            &alice
        } else {
            &bob
        };
        let id = format!("00000001{}", sha256_upper(&data));
        let owner = expect_json(a.inspect_v1(&id, "owner").await, StatusCode::OK).await;
        assert_eq!(owner["owner"], json!(winner.address), "round {round}");
        assert!(a.fetch_v2(winner, &id).await == data);
    }
    assert!(a.multipart_uploads().await.is_empty());
}

async fn spawn_pair_small_parts() -> (TestApp, TestApp) {
    spawn_pair_with(settings(&[("AMO_S3_PART_SIZE_BYTES", &PART.to_string())])).await
}

/// A v2 body over `AMO_MAX_PARCEL_BYTES` answers 413 `too_large`: at once
/// when its `Content-Length` says so, before any byte of the body; and, sent
/// chunked, as soon as it crosses the limit, with its multipart upload under
/// way. Either way nothing is stored, the upload is aborted and the token
/// is released for its remaining lifetime: it stores the same body on a
/// replica without the limit.
#[tokio::test]
async fn a_v2_body_over_the_parcel_limit_answers_413_early_or_midway_and_leaves_nothing() {
    let limit = PART + PART / 2;
    let app = spawn_with(settings(&[
        ("AMO_MAX_PARCEL_BYTES", &limit.to_string()),
        ("AMO_S3_PART_SIZE_BYTES", &PART.to_string()),
    ]))
    .await;
    let mut unlimited = app.settings.clone();
    unlimited.max_parcel_bytes = 1 << 40;
    let unlimited = spawn_beside(&app, unlimited).await;
    let owner = Account::new();
    let data = random_body(2 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;
    wait_until_aged(&token).await;

    // The length says too much: answered with no byte of the body sent.
    let sent = unix_now();
    let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = upload_head(&proof, data.len(), false);
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("the service answers before the body is sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer}");
    drop(socket);
    assert!(app.multipart_uploads().await.is_empty(), "an upload began");
    assert_released(&app, &token, sent).await;

    // A chunked body crosses the limit in its second part.
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(receiver));
    let sent = unix_now();
    let upload = tokio::spawn({
        let (app, proof) = (app.clone(), proof.clone());
        async move { app.upload_v2(Some(&proof), body, None).await }
    });
    for chunk in data[..PART + PART / 4].chunks(PART / 4) {
        sender.send(Ok(chunk.to_vec())).await.unwrap();
    }
    eventually(20, "a multipart upload has started", || async {
        !app.multipart_uploads().await.is_empty()
    })
    .await;
    for chunk in data[PART + PART / 4..].chunks(PART / 4) {
        if sender.send(Ok(chunk.to_vec())).await.is_err() {
            break;
        }
    }
    drop(sender);
    let answer = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the service answers")
        .unwrap();
    expect_code(answer, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    eventually(20, "the multipart upload is aborted", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert!(app.stored_keys().await.is_empty());
    assert_released(&app, &token, sent).await;

    let answer = unlimited.upload_v2(Some(&proof), data.clone(), None).await;
    let id = expect_json(answer, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(unlimited.fetch_v2(&owner, &id).await == data);
}
