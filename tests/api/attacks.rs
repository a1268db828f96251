//! The attacks a security review found, each tried against the service:
//! one token used twice through cancelled HTTP/2 streams, metrics that grow
//! with made-up methods, bodies held before authentication (the token
//! request, the v1 upload, a declared length that sized a buffer), and an
//! upload squatted by a stranger who declares someone else's content. (The
//! account lockout through `/auth` is in `limits.rs`.) Each is refused, and
//! nothing is stored, removed or used twice.

use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    helpers::*,
    limits::held_upload,
    process::{ServiceProcess, process_env},
};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// One token, two removes: HTTP/2 streams reset while the remove runs.
// ---------------------------------------------------------------------------

/// Waits until no request holds `token`'s claim.
async fn unclaimed(app: &TestApp, token: &str) {
    eventually(10, "the token's claim is settled or lapsed", || {
        let (app, token) = (app.clone(), token.to_owned());
        async move {
            !app.token_claimed(&token).await
        }
    })
    .await;
}

/// Whether a parcel is stored.
async fn present(app: &TestApp, id: &str) -> bool {
    app.get(&format!("/api/v2/parcels/{id}/metadata"))
        .await
        .status()
        == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_cancelled_at_any_point_uses_its_token_at_most_once() {
    let app = spawn_app().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let owner = Account::new();
    let (mut first, mut second, mut neither) = (0, 0, 0);
    const TRIES: usize = 200;
    for attempt in 0..TRIES {
        // A bare remove token: it may remove any one parcel of its owner.
        let target = app.store_v2(&owner, &random_body(32 + attempt)).await;
        let other = app.store_v2(&owner, &random_body(16 + attempt)).await;
        let token = app.token(&owner.address, json!("remove")).await;
        let cancel_after = Duration::from_micros(rand::rng().random_range(0..=8_000));
        let request = owner
            .prove(&token)
            .apply(h2.delete(format!("{}/api/v2/parcels/{target}", app.base)));
        // Dropping the request future resets its stream (RST_STREAM).
        let _ = tokio::time::timeout(cancel_after, request.send()).await;
        unclaimed(&app, &token).await;
        // The same token on another parcel: it may remove it only if the
        // cancelled request removed nothing.
        let answer = loop {
            let response = app.remove_v2(Some(&owner.prove(&token)), &other).await;
            if response.status() != StatusCode::CONFLICT {
                break response.status();
            }
            // The cancelled request reached the service only now.
            unclaimed(&app, &token).await;
        };
        assert!(
            matches!(answer, StatusCode::NO_CONTENT | StatusCode::UNAUTHORIZED),
            "attempt {attempt}: {answer}"
        );
        unclaimed(&app, &token).await;
        let removed = (!present(&app, &target).await, !present(&app, &other).await);
        match removed {
            (true, true) => panic!(
                "attempt {attempt}, cancelled after {cancel_after:?}: one token removed two parcels"
            ),
            (true, false) => first += 1,
            (false, true) => second += 1,
            (false, false) => neither += 1,
        }
        assert_eq!(app.token_record(&token).await, None, "used or lapsed");
    }
    println!(
        "{TRIES} cancelled removes: the cancelled one removed {first}, the second {second}, \
         neither {neither}"
    );
    // A request dropped while its claim was being taken gives the claim
    // back: the token is never lost either.
    assert_eq!(neither, 0, "tokens lost with their cancelled requests");
    assert_eq!(first + second, TRIES);
}

// ---------------------------------------------------------------------------
// /metrics grows with made-up methods.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn made_up_methods_add_no_metric_labels() {
    let app = spawn_app().await;
    let marker = format!("ZZ{}", uuid::Uuid::new_v4().simple()).to_uppercase();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("{marker}{i}").as_bytes()).unwrap();
        let response = app
            .http
            .request(method, format!("{}/api/v2/parcels", app.base))
            .send()
            .await
            .unwrap();
        expect_code(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !text.contains(&marker),
        "a made-up method became a metric label"
    );
    let known = [
        "GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    for line in text.lines().filter(|line| line.contains("method=\"")) {
        let method = line.split("method=\"").nth(1).unwrap().split('"').next();
        assert!(
            method.is_some_and(|method| known.contains(&method)),
            "{line}"
        );
    }
    assert!(text.contains(r#"method="other""#));
}

// ---------------------------------------------------------------------------
// Bodies bounded before authentication.
// ---------------------------------------------------------------------------

/// Sends a request head (and, if `chunked`, up to `body_bytes` of chunked
/// body while no answer has come) over a raw connection; answers the status
/// and body of the answer, which must come within 10 s.
pub async fn raw_answer(
    base: &str,
    head: &str,
    chunked: bool,
    body_bytes: usize,
) -> (u16, Value) {
    let address = base.trim_start_matches("http://");
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let feeding = tokio::spawn(async move {
        if !chunked {
            return 0;
        }
        let chunk = vec![b'7'; 64 * 1024];
        let mut sent = 0;
        while sent < body_bytes {
            let framed = [
                format!("{:x}\r\n", chunk.len()).as_bytes(),
                &chunk,
                b"\r\n",
            ]
            .concat();
            if writer.write_all(&framed).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = reader.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await;
    feeding.abort();
    assert!(read.is_ok(), "no answer within 10 s: the body is being read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_request_over_its_bound_is_refused_unread() {
    let app = spawn_app().await;
    let declared = format!(
        "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        64 * MIB
    );
    let (status, body) = raw_answer(&app.base, &declared, false, 0).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    let chunked = "POST /api/v2/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Transfer-Encoding: chunked\r\n\r\n";
    let (status, body) = raw_answer(&app.base, chunked, true, 64 * MIB).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    // A token request within the bound still works.
    app.token(&Account::new().address, json!("upload")).await;
}

#[tokio::test]
async fn a_v1_upload_is_refused_on_its_proof_before_its_body_is_read() {
    let app = spawn_app().await;
    let head = format!(
        "POST /api/v1/parcels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        48 * MIB
    );
    let (status, body) = raw_answer(&app.base, &head, false, 0).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    let owner = Account::new();
    let token = app.token(&owner.address, json!("upload")).await;
    let proof = owner.prove(&token);
    let forged = format!(
        "POST /api/v1/parcels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nX-Auth-Token: {token}\r\nX-Public-Key: {}\r\n\
         X-Signature: {}00\r\n\r\n",
        proof.public_key.as_deref().unwrap(),
        proof.signature.as_deref().unwrap(),
    );
    let (status, _) = raw_answer(&app.base, &forged, true, 48 * MIB).await;
    assert_eq!(status, 401);
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    assert!(app.stored_keys().await.is_empty());
}

/// What feeds a chunked v1 upload body, and the upload's answer to come.
type ChunkedUpload = (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
);

/// A v1 upload with `proof` whose chunked body is whatever the returned
/// sender sends, until it is dropped.
fn chunked_v1_upload(app: &TestApp, proof: &Proof) -> ChunkedUpload {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ));
    let request = app
        .http
        .post(format!("{}/api/v1/parcels", app.base))
        .header("content-type", "application/json")
        .body(body)
        .proven(proof);
    (sender, tokio::spawn(request.send()))
}

#[tokio::test]
async fn a_v1_upload_takes_an_upload_slot_and_its_body_has_a_deadline() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "1"),
        ("AMO_BODY_DEADLINE_SECS", "2"),
    ]))
    .await;
    let owner = Account::new();
    // A v2 upload holds the only slot: a v1 upload is busy (503), before
    // its proof is even looked at.
    let data = random_body(1000);
    let (held_token, held) = app.upload_token(&owner, &data).await;
    let (sender, answer) = held_upload(&app, &held, &data, 10);
    app.until_claimed(&held_token, "the v2 upload holds its slot and its token").await;
    let token = app.token(&owner.address, json!("upload")).await;
    let response = app
        .upload_v1(
            Some(&owner.prove(&token)),
            &v1_body(&owner.address, json!({}), b"x"),
        )
        .await;
    assert_eq!(
        expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await,
        "busy"
    );
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    sender.send(Ok(data[10..].to_vec())).await.unwrap();
    drop(sender);
    expect_json(answer.await.unwrap().unwrap(), StatusCode::CREATED).await;

    // A v1 body that trickles past the deadline is cut (400), though it
    // never paused as long as the idle timeout; the token stays usable.
    let (trickle, answer) = chunked_v1_upload(&app, &owner.prove(&token));
    let feeding = tokio::spawn(async move {
        while trickle.send(Ok(b" ".to_vec())).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let response = answer.await.unwrap().unwrap();
    feeding.abort();
    let body = expect_json(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["error"].as_str().unwrap().contains("within 2 s"),
        "{body}"
    );
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
}

#[tokio::test]
async fn trickled_v1_bodies_hold_what_they_sent_and_the_budget_still_bounds_them() {
    // A v1 limit of 1 MiB: the largest body, about 2.1 MiB of JSON, holds
    // about 3.2 MiB; the budget is 4 MiB.
    let app = spawn_with(settings(&[
        ("AMO_V1_MAX_DATA_BYTES", "1048576"),
        ("AMO_V1_UPLOAD_MEMORY_BYTES", "4194304"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let attacker = app.client_at("127.0.0.2");
    let key = Account::new();
    // Chunked v1 bodies (no Content-Length) that send one byte each and
    // stall. Each holds what it sent, not the largest body it could grow
    // to.
    let mut holds = Vec::new();
    for _ in 0..7 {
        let token = attacker.token(&key.address, json!("upload")).await;
        let (sender, answer) = chunked_v1_upload(&attacker, &key.prove(&token));
        sender.send(Ok(b"{".to_vec())).await.unwrap();
        app.until_claimed(&token, "the chunked v1 upload passed its proof").await;
        holds.push((sender, answer));
    }
    // Another client's v1 upload is served meanwhile.
    let victim = app.client_at("127.0.0.3");
    let owner = Account::new();
    let data = b"small".to_vec();
    let token = victim.token(&owner.address, json!("upload")).await;
    let small = v1_body(&owner.address, json!({}), &data);
    let response = victim.upload_v1(Some(&owner.prove(&token)), &small).await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(victim.fetch_v2(&owner, &id).await, data);
    // The budget still bounds what bodies hold as they arrive: two bodies
    // of 1.5 MiB (2.25 MiB held each) do not fit 4 MiB together, whichever
    // grows first. One is refused (503 `busy`), its token released.
    let (held_sender, held_answer) = holds.remove(0);
    let token = victim.token(&owner.address, json!("upload")).await;
    let (growing, growing_answer) = chunked_v1_upload(&victim, &owner.prove(&token));
    growing.send(Ok(b"{".to_vec())).await.unwrap();
    app.until_claimed(&token, "the second large body passed its proof").await;
    let large = vec![b' '; 3 << 19];
    held_sender.send(Ok(large.clone())).await.unwrap();
    growing.send(Ok(large)).await.unwrap();
    let (refused, other) =
        match futures_util::future::select(held_answer, growing_answer).await {
            futures_util::future::Either::Left(answered)
            | futures_util::future::Either::Right(answered) => answered,
        };
    assert_eq!(
        expect_error(refused.unwrap().unwrap(), StatusCode::SERVICE_UNAVAILABLE).await,
        "busy"
    );
    // The other body ends, not JSON (400), as do the stalled ones: their
    // memory is free again.
    drop((held_sender, growing));
    expect_error(other.await.unwrap().unwrap(), StatusCode::BAD_REQUEST).await;
    for (sender, answer) in holds {
        drop(sender);
        expect_error(answer.await.unwrap().unwrap(), StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_v1_download_streams_its_hex_without_holding_the_parcel() {
    let (env, backends) = crate::process::process_env();
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(48 * MIB);
    let id = app.store_v2(&owner, &data).await;
    let small = app.store_v2(&owner, b"warm-up").await;
    let download = |id: String| {
        let (app, owner) = (&app, &owner);
        async move {
            let token = app
                .token(&owner.address, json!({"name": "download", "id": id}))
                .await;
            let response = app.download_v1(Some(&owner.prove(&token)), &id).await;
            assert_eq!(response.status(), StatusCode::OK);
            let length = response.content_length();
            let bytes = response.bytes().await.unwrap();
            assert_eq!(length, Some(bytes.len() as u64), "Content-Length is exact");
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    download(small).await;
    // The upload of the parcel raised the peak; the download's own counts.
    service.reset_peak_rss();
    let before = service.status_kib("VmHWM:");
    let answer = download(id.clone()).await;
    let grown_mib = service.status_kib("VmHWM:").saturating_sub(before) / 1024;
    assert_eq!(answer["id"], json!(id));
    assert_eq!(answer["owner"], json!(owner.address));
    assert_eq!(
        hex::decode(answer["data"].as_str().unwrap()).unwrap(),
        data,
        "the hex is the parcel"
    );
    println!("peak RSS grew by {grown_mib} MiB over a v1 download of a 48 MiB parcel");
    assert!(grown_mib < 24, "peak RSS grew by {grown_mib} MiB");
}

#[tokio::test]
async fn a_declared_length_past_what_the_parts_allow_is_refused_unread() {
    let app = spawn_app().await;
    let owner = Account::new();
    let (token, proof) = app.upload_token(&owner, b"anything").await;
    // One byte past AMO_MAX_PARCEL_BYTES (5 TiB by default).
    let past = app.settings.max_parcel_bytes as usize + 1;
    let head = upload_head(&proof, past, false);
    let (status, body) = raw_answer(&app.base, &head, false, 0).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(&app.settings.max_parcel_bytes.to_string()), "{message}");
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    assert!(app.multipart_uploads().await.is_empty());
}


#[tokio::test]
async fn bodies_sent_before_authentication_do_not_raise_peak_memory() {
    let env = env_for(crate::BACKEND, &[]);
    let service = ServiceProcess::start(&env).await;
    let client = reqwest::Client::new();
    let owner = Account::new();
    // Warm up the paths, then measure from here.
    client
        .post(format!("{}/api/v1/auth", service.base))
        .json(&json!({"user": owner.address, "operation": "upload"}))
        .send()
        .await
        .unwrap();
    let before = service.status_kib("VmHWM:");
    let auth = "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let v1 = "POST /api/v1/parcels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(raw_answer(&service.base, auth, true, 64 * MIB).await.0, 413);
        assert_eq!(raw_answer(&service.base, v1, true, 48 * MIB).await.0, 401);
    }
    let grown_mib = service.status_kib("VmHWM:").saturating_sub(before) / 1024;
    println!("peak RSS grew by {grown_mib} MiB over 8 refused bodies of 48-64 MiB");
    assert!(grown_mib < 8, "peak RSS grew by {grown_mib} MiB");
}

// ---------------------------------------------------------------------------
// Squatting: a stranger declares someone else's content and trickles.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_stranger_trickling_someone_elses_content_does_not_block_its_upload() {
    // 5 MiB parts: the large body starts a multipart upload.
    let app = spawn_with(settings(&[("AMO_S3_PART_SIZE_BYTES", "5242880")])).await;
    for size in [4 * 1024, 11 * MIB] {
        let (victim, squatter) = (Account::new(), Account::new());
        let data = random_body(size);
        let (squat_token, squat_proof) = app.upload_token(&squatter, &data).await;
        let head = if size > 5 * MIB { 6 * MIB } else { 10 };
        let (sender, answer) = held_upload(&app, &squat_proof, &data, head);
        app.until_claimed(&squat_token, "the squatter's upload is under way").await;
        // The rightful owner uploads at once, while the squatter trickles.
        let id = app.store_v2(&victim, &data).await;
        let owner = expect_json(
            app.get(&format!("/api/v2/parcels/{id}/metadata")).await,
            StatusCode::OK,
        )
        .await["owner"]
            .clone();
        assert_eq!(owner, json!(victim.address));
        // The squatter's body, once whole, finds the parcel taken.
        sender.send(Ok(data[head..].to_vec())).await.unwrap();
        drop(sender);
        let response = answer.await.unwrap().unwrap();
        assert_eq!(
            expect_error(response, StatusCode::CONFLICT).await,
            "owned_by_another"
        );
        assert_eq!(
            app.token_record(&squat_token).await.as_deref(),
            Some("issued")
        );
        eventually(15, "no multipart upload is left", || {
            let app = app.clone();
            async move { app.multipart_uploads().await.is_empty() }
        })
        .await;
        assert_eq!(app.fetch_v2(&victim, &id).await, data);
    }
}

#[tokio::test]
async fn a_huge_declared_length_sizes_no_buffer() {
    // 60 GiB declared (within what 10,000 parts of 8 MiB allow): the body
    // streams to S3 part by part; 64 MiB of it raise the service's peak
    // memory by a few MiB, not by a buffer the length would size.
    let env = env_for(crate::BACKEND, &[]);
    let service = ServiceProcess::start(&env).await;
    let owner = Account::new();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth", service.base))
        .json(&json!({
            "user": owner.address,
            "operation": {"name": "upload", "hash": sha256_upper(b"never sent whole")},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap().to_owned();
    let proof = owner.prove(&token);
    let before = service.status_kib("VmHWM:");
    let mut socket = TcpStream::connect(service.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = upload_head(&proof, 60 << 30, false);
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; MIB];
    for _ in 0..64 {
        socket.write_all(&chunk).await.unwrap();
    }
    // Measured once the service has taken in at least 60 MiB of it.
    let metrics = format!("{}/metrics", service.base);
    eventually(30, "the service received 60 MiB", || {
        let metrics = metrics.clone();
        async move {
            let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|line| line.strip_prefix("amo_parcel_bytes_received_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .is_some_and(|received| received >= (60 * MIB) as f64)
        }
    })
    .await;
    let grown_mib = service.status_kib("VmHWM:").saturating_sub(before) / 1024;
    drop(socket);
    println!("peak RSS grew by {grown_mib} MiB over 64 MiB of a body declared 60 GiB");
    assert!(grown_mib < 12, "peak RSS grew by {grown_mib} MiB");
}

#[tokio::test]
async fn a_chunked_body_past_its_own_maximum_is_refused_naming_it() {
    let max = 12 * MIB;
    let app = spawn_with(settings(&[
        ("AMO_S3_PART_SIZE_BYTES", &(5 * MIB).to_string()),
        ("AMO_MAX_PARCEL_BYTES", &max.to_string()),
    ]))
    .await;
    let owner = Account::new();
    let (token, proof) = app.upload_token(&owner, b"longer than chunked may be").await;
    let head = format!(
        "POST /api/v2/parcels HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\n{}\r\n",
        proof_lines(&proof)
    );
    let (status, body) = raw_answer(&app.base, &head, true, 16 * MIB).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")), "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("unknown length (chunked) is at most {max} bytes")),
        "{message}"
    );
    eventually(30, "the multipart upload is aborted", || {
        let app = app.clone();
        async move { app.multipart_uploads().await.is_empty() }
    })
    .await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
}

#[tokio::test]
async fn a_100_gib_declared_length_streams_in_grown_parts_and_a_cut_body_stores_nothing() {
    let (env, backends) = process_env();
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let (token, proof) = app.upload_token(&owner, b"a hundred GiB, never sent").await;
    let id = format!("00000001{}", sha256_upper(b"a hundred GiB, never sent"));
    let mut socket = TcpStream::connect(service.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let declared = 100usize << 30;
    socket
        .write_all(upload_head(&proof, declared, true).as_bytes())
        .await
        .unwrap();
    socket.write_all(&vec![b'x'; MIB]).await.unwrap();
    // The multipart upload started, in parts of 100 GiB ÷ 10,000 rounded
    // up to a MiB: 11 MiB, 9,310 of them (8 MiB parts would need 12,800).
    let started = |service: &ServiceProcess| {
        service.log_lines().into_iter().find(|line| {
            line["message"] == "a multipart upload of declared length started"
                && line["length"] == declared as u64
        })
    };
    eventually(30, "the multipart upload started", || {
        let found = started(&service).is_some();
        async move { found }
    })
    .await;
    let line = started(&service).unwrap();
    assert_eq!(line["part_size"], 11u64 << 20, "{line}");
    assert_eq!(line["parts"], 9_310, "{line}");
    assert!(app.settings.s3_part_size_bytes < 11 << 20);
    // The body ends 100 GiB short: 400, nothing stored, the upload aborted.
    socket.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_string(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"bad_request","error":"the body ended early"#), "{answer}");
    // On the embedded pair the state and the store are inside the process:
    // only HTTP tells.
    if crate::BACKEND != Backend::Embedded {
        eventually(30, "the multipart upload is aborted", || {
            let app = app.clone();
            async move { app.multipart_uploads().await.is_empty() }
        })
        .await;
        assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    }
    assert!(!present(&app, &id).await);
}
