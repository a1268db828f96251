//! Ceph RGW down and back: every parcel operation answers 503 (JSON,
//! `Retry-After`), an upload cut mid-body leaves no parcel and, once RGW is
//! back, no unfinished multipart upload, and the service recovers by itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::{helpers::*, proxy::Mode, rig::*};

/// How soon after RGW is back the cut upload must be gone: the README's
/// "about 1 s" (measured 1.6 s), bounded by the longest pause between two
/// attempts to abort (2 s, `ABORT_MAX_PAUSE` in `src/storage/s3.rs`) and
/// one attempt.
const ABORTED_WITHIN: Duration = Duration::from_secs(3);

/// The longest any request may take while RGW is down.
const ANSWER_BOUND: Duration = Duration::from_secs(8);

#[tokio::test]
async fn ceph_down_mid_upload_leaves_nothing_and_the_service_recovers_by_itself() {
    let rig = rig(
        Mode::Pass,
        Mode::Pass,
        &[
            ("AMO_S3_PART_SIZE_BYTES", &PART.to_string()),
            ("AMO_S3_TIMEOUT_SECS", "5"),
        ],
    )
    .await;
    let app = &rig.app;
    let owner = Account::new();
    let stored = random_body(4096);
    let id = rig.direct.store_v2(&owner, &stored).await;
    let fresh = random_body(4096);
    let tokens = Tokens::issue(app, &owner, &id, &fresh).await;

    // An upload of three parts, cut once its first part is in RGW. (Cut
    // earlier, while RGW creates the multipart upload, the answer with its
    // id is lost and only the sweep of abandoned uploads can remove it.)
    let data = random_body(3 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let (mut feed, body) = BodyFeed::new();
    let upload = tokio::spawn({
        let (app, proof) = (app.clone(), proof.clone());
        async move { app.upload_v2(Some(&proof), body, None).await }
    });
    assert!(feed.send(&data[..PART + PART / 2]).await);
    eventually(20, "the first part is in RGW", || async {
        rig.parts_uploaded().await >= 1
    })
    .await;
    rig.s3.set(Mode::Down).await;
    let cut = Instant::now();
    // The rest of the body, as far as the service reads it.
    feed.send(&data[PART + PART / 2..]).await;
    feed.finish();
    let response = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the cut upload answers")
        .unwrap();
    assert_eq!(expect_unavailable(response).await, "unavailable");
    eprintln!(
        "ceph down mid-upload: the upload answered 503 {:?} after the cut",
        cut.elapsed()
    );
    let parcel = format!("00000001{}", sha256_upper(&data));
    assert!(
        !rig.direct.stored_keys().await.contains(&parcel),
        "a partial parcel is visible"
    );
    eventually(10, "the cut upload's token is released", || async {
        rig.direct.token_record(&token).await.as_deref() == Some("issued")
    })
    .await;

    // Every parcel operation: 503. Tokens still work: they are in Redis.
    let (response, took) = timed(inspect_v2(app, &id)).await;
    assert_eq!(expect_unavailable(response).await, "unavailable");
    assert!(took <= ANSWER_BOUND, "inspect took {took:?}");
    let (response, took) = timed(app.inspect_v1(&id, "metadata")).await;
    assert_eq!(expect_unavailable(response).await, "unavailable");
    assert!(took <= ANSWER_BOUND, "inspect v1 took {took:?}");
    let (response, took) =
        timed(app.upload_v2(Some(&owner.prove(&tokens.upload)), fresh.clone(), None)).await;
    assert_eq!(expect_unavailable(response).await, "unavailable");
    assert!(took <= ANSWER_BOUND, "upload took {took:?}");
    let (response, took) =
        timed(app.download_v2(Some(&owner.prove(&tokens.download)), &id, None)).await;
    assert_eq!(expect_unavailable(response).await, "unavailable");
    assert!(took <= ANSWER_BOUND, "download took {took:?}");
    let (response, took) = timed(app.remove_v2(Some(&owner.prove(&tokens.remove)), &id)).await;
    assert_eq!(expect_unavailable(response).await, "unavailable");
    assert!(took <= ANSWER_BOUND, "remove took {took:?}");
    assert_eq!(auth_once(app).await.status(), StatusCode::OK);
    let code = expect_error(
        app.get("/status/backends").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(code, "unavailable");
    // Readiness is this replica's own: the shared backend's outage leaves
    // it in rotation, answering JSON 503s itself.
    expect_json(app.get("/readyz").await, StatusCode::OK).await;
    let records = tokens.records(&rig.direct).await;
    assert!(
        records
            .iter()
            .all(|record| record.as_deref() == Some("issued")),
        "a failed request used up a token: {records:?}"
    );
    eprintln!(
        "  unfinished multipart uploads while RGW is down: {:?}",
        rig.direct.multipart_uploads().await.len()
    );

    rig.s3.set(Mode::Pass).await;
    let recovery = until_status(10, "inspect with RGW back", StatusCode::OK, || {
        inspect_v2(app, &id)
    })
    .await;
    let back = Instant::now();
    eventually(
        ABORTED_WITHIN.as_secs(),
        "no unfinished multipart upload is left",
        || async { rig.direct.multipart_uploads().await.is_empty() },
    )
    .await;
    let aborted = back.elapsed();
    eprintln!(
        "  RGW back: served again after {recovery:?}; the cut upload was aborted {aborted:?} later"
    );
    assert!(
        aborted <= ABORTED_WITHIN,
        "the cut upload was aborted {aborted:?} after RGW came back"
    );
    until_status(5, "/status/backends with RGW back", StatusCode::OK, || {
        app.get("/status/backends")
    })
    .await;

    // The released token uploads the whole body now, once.
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    assert_eq!(
        expect_json(response, StatusCode::CREATED).await["id"].as_str(),
        Some(parcel.as_str())
    );
    assert!(rig.direct.fetch_v2(&owner, &parcel).await == data);
    expect_token_refused(app.upload_v2(Some(&proof), data.clone(), None).await).await;
    let response = app
        .download_v2(Some(&owner.prove(&tokens.download)), &id, None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == stored);
    let response = app.remove_v2(Some(&owner.prove(&tokens.remove)), &id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(rig.direct.multipart_uploads().await.is_empty());
    remove_parcel(app, &owner, &parcel).await;
}
