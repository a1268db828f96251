//! Bodies of known length stream straight through to S3 in one
//! `PutObject`, their last chunk held back until the body matched. Every way
//! such an upload can fail leaves no object and no multipart upload: a hash
//! mismatch, a client that goes away halfway, a client that sends fewer
//! bytes than it declared, and a replica killed mid-`PutObject`.

use amo_storage::{app::Backends, config::Settings};
use reqwest::StatusCode;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{helpers::*, process::ServiceProcess};

const MIB: usize = 1 << 20;

/// A connection to `base` on which the head of a v2 upload of `length`
/// bytes with `proof` is sent; the body is the caller's to send.
async fn upload_connection(base: &str, length: usize, proof: &Proof) -> TcpStream {
    let mut socket = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    socket
        .write_all(upload_head(proof, length, false).as_bytes())
        .await
        .unwrap();
    socket
}

/// Asserts that `app`'s store holds nothing: no object, no multipart upload.
async fn nothing_stored(app: &TestApp) {
    assert!(app.stored_keys().await.is_empty(), "an object was stored");
    assert!(
        app.multipart_uploads().await.is_empty(),
        "a multipart upload was left"
    );
}

#[tokio::test]
async fn a_streamed_put_whose_body_does_not_match_stores_nothing() {
    let app = spawn_app().await;
    let owner = Account::new();
    let declared = random_body(3 * MIB);
    let mut sent = declared.clone();
    sent[3 * MIB - 1] ^= 1;
    let (token, proof) = app.upload_token(&owner, &declared).await;
    let response = app.upload_v2(Some(&proof), sent, None).await;
    assert_eq!(
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "hash_mismatch"
    );
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    nothing_stored(&app).await;
}

#[tokio::test]
async fn a_client_that_goes_away_halfway_through_a_streamed_put_stores_nothing() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(4 * MIB);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let mut socket = upload_connection(&app.base, data.len(), &proof).await;
    socket.write_all(&data[..2 * MIB]).await.unwrap();
    eventually(20, "the upload is under way", || app.token_claimed(&token)).await;
    drop(socket);
    eventually(20, "the token is released", || async {
        app.token_record(&token).await.as_deref() == Some("issued")
    })
    .await;
    nothing_stored(&app).await;
    // The same token then uploads the whole body.
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_client_that_sends_fewer_bytes_than_it_declared_stores_nothing() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(2 * MIB);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let mut socket = upload_connection(&app.base, data.len() + 10, &proof).await;
    socket.write_all(&data).await.unwrap();
    // The body ends 10 bytes short: the client shuts its side down, and
    // the service answers 400.
    socket.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut answer),
    )
    .await
    .expect("an answer within 20 s")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    nothing_stored(&app).await;
}

#[tokio::test]
async fn a_replica_killed_mid_put_leaves_nothing() {
    let env = env_for(crate::BACKEND, &[]);
    let mut service = ServiceProcess::start(&env).await;
    let settings = Settings::load_from(None, env.clone()).unwrap().0;
    let owner = Account::new();
    let data = random_body(8 * MIB);
    let token = {
        let client = reqwest::Client::new();
        let answer: serde_json::Value = client
            .post(format!("{}/api/v1/auth", service.base))
            .json(&serde_json::json!({
                "user": owner.address,
                "operation": {"name": "upload", "hash": sha256_upper(&data)},
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["token"].as_str().unwrap().to_owned()
    };
    let proof = owner.prove(&token);
    let mut socket = upload_connection(&service.base, data.len(), &proof).await;
    socket.write_all(&data[..6 * MIB]).await.unwrap();
    // The PutObject is under way once the service claimed the token (on the
    // real pair the test sees the shared Redis; on the embedded pair the
    // bytes sent past the socket buffers show it).
    if crate::BACKEND != Backend::Embedded {
        let backends = Backends::from_settings(&settings).unwrap();
        let key = documented_keys::token(
            claims_of(&token)["jti"].as_str().unwrap(),
        );
        eventually(20, "the upload is under way", || {
            let (state, key) = (backends.state.clone(), key.clone());
            async move {
                state
                    .value(&key)
                    .await
                    .unwrap()
                    .is_some_and(|value| value.starts_with("claimed:"))
            }
        })
        .await;
    }
    service.kill();
    drop(socket);
    // Nothing is visible, and (on S3) no multipart upload was ever begun:
    // the body went up in one PutObject that never got its last bytes.
    let backends = Backends::from_settings(&settings).unwrap();
    let app = TestApp {
        base: service.base.clone(),
        settings,
        backends,
        http: reqwest::Client::new(),
    };
    nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_that_takes_longer_than_the_s3_timeout_still_streams_through() {
    // Each S3 call may take 2 s; the client's body takes about 4 s to
    // arrive, in one PutObject (3 MiB) and in parts (11 MiB, 5 MiB parts).
    let app = spawn_with(settings(&[
        ("AMO_S3_TIMEOUT_SECS", "2"),
        ("AMO_S3_PART_SIZE_BYTES", "5242880"),
        ("AMO_S3_SINGLE_PUT_MAX_BYTES", "5242880"),
    ]))
    .await;
    let owner = Account::new();
    for size in [3 * MIB, 11 * MIB] {
        let data = random_body(size);
        let (_, proof) = app.upload_token(&owner, &data).await;
        let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = upload_head(&proof, data.len(), true);
        socket.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        for piece in data.chunks(size.div_ceil(20)) {
            socket.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut answer),
        )
        .await
        .ok();
        assert!(started.elapsed() > std::time::Duration::from_secs(3));
        assert!(answer.starts_with("HTTP/1.1 201"), "size {size}: {answer}");
    }
    assert!(app.multipart_uploads().await.is_empty());
}
