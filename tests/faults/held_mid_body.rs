//! RGW that stops answering in the middle of a body (the proxy, in
//! [`Mode::Stall`], stops relaying while a `PutObject` or `UploadPart` is
//! going up or an object is coming down): every upload, v1, v2 (one
//! `PutObject`, parts of a declared length, parts of a chunked body) and
//! tus, answers 503 within `AMO_S3_TIMEOUT_SECS` plus [`MARGIN`] of the
//! stall, never sooner than the timeout after the request began, and stores
//! nothing; a download whose S3 body stalls ends, cut, within the same
//! bounds. A ceph3 run once saw an
//! upload wait 60 s (twice the 30 s default) while RGW held its `PutObject`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{helpers::*, proxy::Mode, rig::*};

/// `AMO_S3_TIMEOUT_SECS` in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);
/// What an answer may take past [`TIMEOUT`] (docs/reliability.md): the
/// request's own work after the store failed (ending the token's claim and
/// the write lock in Redis), on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// Bytes sent after the stall: more than the loopback socket buffers and the
/// feed hold, so the service's writes to S3 block.
const AFTER_STALL: usize = 4 * PART;

async fn held_rig(extra: &[(&str, &str)]) -> Rig {
    let part = PART.to_string();
    let mut overrides = vec![
        ("AMO_S3_TIMEOUT_SECS", "2"),
        ("AMO_S3_PART_SIZE_BYTES", part.as_str()),
    ];
    overrides.extend_from_slice(extra);
    rig(Mode::Pass, Mode::Pass, &overrides).await
}

/// Asserts that the answer came within the S3 timeout and the margin of
/// the stall (`since_stall`), and no sooner than the timeout after the
/// request began (`since_request`). The lower bound is not taken from the
/// stall: the S3 call that times out may have started before it (a part's
/// `UploadPart` begins as the part before it ends, which the test sees
/// only later), and its timeout runs from its own start. Every S3 call of
/// the request starts after the request does, so the request's start is a
/// bound that always holds (CI once saw a part answer 1.96 s after a stall
/// measured after its `UploadPart` had begun).
fn assert_bounded(what: &str, since_request: Duration, since_stall: Duration) {
    eprintln!(
        "{what}: answered {since_stall:?} after RGW stalled, {since_request:?} after the \
         request began (timeout {TIMEOUT:?})"
    );
    assert!(
        since_request >= TIMEOUT,
        "{what} answered {since_request:?} after the request began, before the timeout"
    );
    assert!(
        since_stall <= TIMEOUT + MARGIN,
        "{what} answered {since_stall:?} after the stall: more than {TIMEOUT:?} + {MARGIN:?}"
    );
}

/// After the proxy passes again: nothing under the prefix, no multipart
/// upload left.
async fn assert_nothing_stored(rig: &Rig) {
    rig.s3.set(Mode::Pass).await;
    eventually(20, "no multipart upload is left", || async {
        rig.direct.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(rig.direct.stored_keys().await, Vec::<String>::new());
}

/// Stalls RGW, then sends `rest` of the body through `feed`: the request
/// `answer`, begun at `began`, must answer 503 `unavailable` within the
/// bounds of [`assert_bounded`].
async fn answers_unavailable_once_rgw_stalls(
    rig: &Rig,
    began: Instant,
    mut feed: BodyFeed,
    rest: Vec<u8>,
    answer: tokio::task::JoinHandle<reqwest::Response>,
    what: &str,
) {
    rig.s3.set(Mode::Stall).await;
    let stalled = Instant::now();
    let sender = tokio::spawn(async move {
        feed.send(&rest).await;
        feed.finish();
    });
    let answer = tokio::time::timeout(TIMEOUT * 10, answer)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer {:?} after RGW stalled", TIMEOUT * 10))
        .unwrap();
    let (since_request, since_stall) = (began.elapsed(), stalled.elapsed());
    assert_eq!(expect_unavailable(answer).await, "unavailable", "{what}");
    assert_bounded(what, since_request, since_stall);
    sender.abort();
}

/// A v2 upload whose body streams: `PART * 2` bytes go up, RGW stalls once
/// `started` holds, and the rest keeps coming.
async fn v2_held(declared: bool, extra: &[(&str, &str)], what: &str) {
    let rig = held_rig(extra).await;
    let owner = Account::new();
    let data = random_body(2 * PART + AFTER_STALL);
    let (_, proof) = rig.app.upload_token(&owner, &data).await;
    let (feed, body) = BodyFeed::new();
    let began = Instant::now();
    let upload = tokio::spawn({
        let (app, proof, length) = (rig.app.clone(), proof.clone(), data.len());
        async move {
            let mut request = app
                .http
                .post(format!("{}/api/v2/parcels", app.base))
                .header("content-type", "application/octet-stream")
                .body(body);
            if declared {
                request = request.header("content-length", length.to_string());
            }
            proof.apply(request).send().await.unwrap()
        }
    });
    assert!(feed.send(&data[..2 * PART]).await);
    if extra.is_empty() && declared {
        // One PutObject: its first bytes reach RGW.
        eventually(10, "the upload's token is claimed", || async {
            rig.direct
                .token_record(proof.token.as_deref().unwrap())
                .await
                .is_some_and(|record| record.starts_with("claimed:"))
        })
        .await;
    } else {
        eventually(10, "a first part is stored", || async {
            rig.parts_uploaded().await >= 1
        })
        .await;
    }
    let rest = data[2 * PART..].to_vec();
    answers_unavailable_once_rgw_stalls(&rig, began, feed, rest, upload, what).await;
    assert_nothing_stored(&rig).await;
}

#[tokio::test]
async fn a_v2_put_held_mid_body_answers_503_within_the_s3_timeout() {
    v2_held(true, &[], "v2, one PutObject").await;
}

#[tokio::test]
async fn a_v2_part_of_a_declared_length_held_mid_body_answers_503_within_the_s3_timeout() {
    let single = PART.to_string();
    v2_held(
        true,
        &[("AMO_S3_SINGLE_PUT_MAX_BYTES", single.as_str())],
        "v2, parts of a declared length",
    )
    .await;
}

#[tokio::test]
async fn a_v2_part_of_a_chunked_body_held_mid_body_answers_503_within_the_s3_timeout() {
    v2_held(false, &[], "v2, parts of a chunked body").await;
}

/// v1 reads its whole JSON body before one `PutObject` of it, under the
/// SDK's operation timeout: RGW holds it from its first byte. The bound is
/// taken from the start of the request, past the time the same upload takes
/// with RGW answering (measured first, in the same run).
#[tokio::test]
async fn a_v1_put_held_mid_body_answers_503_within_the_s3_timeout() {
    let rig = held_rig(&[]).await;
    let owner = Account::new();
    let size = 2 * 1024 * 1024;
    let normal = {
        let data = random_body(size);
        let token = rig
            .app
            .token(
                &owner.address,
                json!({"name": "upload", "hash": sha256_upper(&data)}),
            )
            .await;
        let body = v1_body(&owner.address, json!({"name": "held"}), &data);
        let (response, took) = timed(rig.app.upload_v1(Some(&owner.prove(&token)), &body)).await;
        let id = expect_json(response, StatusCode::CREATED).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        remove_parcel(&rig.direct, &owner, &id).await;
        took
    };
    let data = random_body(size);
    let token = rig
        .app
        .token(
            &owner.address,
            json!({"name": "upload", "hash": sha256_upper(&data)}),
        )
        .await;
    let body = v1_body(&owner.address, json!({"name": "held"}), &data);
    rig.s3.set(Mode::Stall).await;
    let (response, took) = timed(async {
        tokio::time::timeout(
            TIMEOUT * 10,
            rig.app.upload_v1(Some(&owner.prove(&token)), &body),
        )
        .await
        .expect("no answer to a v1 upload with RGW stalled")
    })
    .await;
    // With the token marks (the default), the commit writes the token's
    // mark before it lets the PutObject's last bytes go: RGW holds the
    // mark, so the parcel's write never completes, and the answer says the
    // store failed with no effect (`unavailable`), not `outcome_unknown`.
    assert_eq!(expect_unavailable(response).await, "unavailable");
    eprintln!("v1: an upload with RGW answering took {normal:?}, with RGW stalled {took:?}");
    assert!(took >= TIMEOUT, "v1 answered {took:?}, before the timeout");
    assert!(
        took <= normal + TIMEOUT + MARGIN,
        "v1 answered {took:?}: more than {normal:?} + {TIMEOUT:?} + {MARGIN:?}"
    );
    rig.s3.set(Mode::Pass).await;
}

/// A tus PATCH whose second part RGW holds: 503, and once RGW answers
/// again the upload's offset is the first part's end.
#[tokio::test]
async fn a_tus_patch_held_mid_part_answers_503_within_the_s3_timeout() {
    let rig = held_rig(&[]).await;
    let app = &rig.app;
    let owner = Account::new();
    let data = random_body(2 * PART + AFTER_STALL);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let created = proof
        .apply(
            app.http
                .post(format!("{}/api/v2/uploads", app.base))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", data.len().to_string()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let path = created.headers()["location"].to_str().unwrap().to_owned();
    let (feed, body) = BodyFeed::new();
    let began = Instant::now();
    let patch = tokio::spawn({
        let (app, headers, path) = (
            app.clone(),
            proof.for_upload(
                &path,
                TusRequest::Patch {
                    offset: 0,
                    sequence: 0,
                },
            ),
            path.clone(),
        );
        let length = data.len();
        async move {
            let request = app
                .http
                .patch(format!("{}{path}", app.base))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Content-Length", length.to_string())
                .header("Upload-Offset", "0")
                .header("X-Upload-Sequence", "0")
                .body(body);
            headers.apply(request).send().await.unwrap()
        }
    });
    assert!(feed.send(&data[..2 * PART]).await);
    // The two parts sent are stored and saved: no timer of the service
    // runs when RGW stalls.
    eventually(10, "the parts sent are saved", || async {
        offset_of(app, &proof, &path).await == 2 * PART as u64
    })
    .await;
    let rest = data[2 * PART..].to_vec();
    answers_unavailable_once_rgw_stalls(&rig, began, feed, rest, patch, "tus PATCH").await;
    rig.s3.set(Mode::Pass).await;
    // The part in flight at the stall is lost; those stored before stay.
    assert_eq!(offset_of(app, &proof, &path).await, 2 * PART as u64);
    let deleted = proof
        .for_upload(&path, TusRequest::Delete)
        .apply(
            app.http
                .delete(format!("{}{path}", app.base))
                .header("Tus-Resumable", "1.0.0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_nothing_stored(&rig).await;
}

/// The offset of the upload at `path`, by `HEAD`.
async fn offset_of(app: &TestApp, proof: &Proof, path: &str) -> u64 {
    let head = proof
        .for_upload(path, TusRequest::Head)
        .apply(
            app.http
                .head(format!("{}{path}", app.base))
                .header("Tus-Resumable", "1.0.0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    head.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A download whose S3 body stalls after its first MiB: the client's body
/// ends with an error (never a short body that looks whole) within the S3
/// timeout and the margin.
#[tokio::test]
async fn a_download_whose_s3_body_stalls_ends_within_the_s3_timeout() {
    let rig = held_rig(&[]).await;
    let owner = Account::new();
    let data = random_body(6 * PART);
    let id = rig.direct.store_v2(&owner, &data).await;
    let token = rig
        .direct
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let began = Instant::now();
    let mut response = rig
        .app
        .download_v2(Some(&owner.prove(&token)), &id, None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = 0usize;
    while received < 1024 * 1024 {
        received += response
            .chunk()
            .await
            .unwrap()
            .expect("the body ended")
            .len();
    }
    rig.s3.set(Mode::Stall).await;
    let stalled = Instant::now();
    let ended = tokio::time::timeout(TIMEOUT * 10, async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    })
    .await
    .expect("the download did not end with RGW stalled");
    let (since_request, since_stall) = (began.elapsed(), stalled.elapsed());
    assert!(
        ended.is_err(),
        "the download ended as if whole after {received} of {} bytes",
        data.len()
    );
    assert!(received < data.len(), "{received} bytes arrived");
    assert_bounded("download", since_request, since_stall);
    rig.s3.set(Mode::Pass).await;
    remove_parcel(&rig.direct, &owner, &id).await;
}

/// docs/protocol.md, 503 `outcome_unknown`: "S3 received a write (... a
/// remove) and did not confirm it in time: it may have happened, so the
/// token is used up; ... a remove then answers 404". RGW carries out the
/// `DeleteObject` and its answer is held: 503 `outcome_unknown` within the
/// bound, the token gone, and a retry with a new token answers 404.
#[tokio::test]
async fn a_remove_whose_answer_rgw_holds_is_outcome_unknown_and_a_retry_finds_it_removed() {
    let rig = held_rig(&[]).await;
    let owner = Account::new();
    let id = rig.direct.store_v2(&owner, &random_body(4096)).await;
    let token = rig
        .direct
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    rig.s3.set(Mode::HoldDeleteAnswers).await;
    let (response, took) = timed(rig.app.remove_v2(Some(&owner.prove(&token)), &id)).await;
    assert_eq!(expect_unavailable(response).await, "outcome_unknown");
    // RGW holds the answers from before the request: both bounds from it.
    assert_bounded("remove", took, took);
    assert_eq!(
        rig.direct.token_record(&token).await,
        None,
        "the token is not used up"
    );
    rig.s3.set(Mode::Pass).await;
    expect_error(inspect_v2(&rig.direct, &id).await, StatusCode::NOT_FOUND).await;
    let again = rig
        .direct
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let retry = rig.app.remove_v2(Some(&owner.prove(&again)), &id).await;
    assert_eq!(
        expect_error(retry, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}
