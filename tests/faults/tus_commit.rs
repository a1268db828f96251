//! A tus upload whose commit meets S3 down: every byte is stored, the
//! completing `PATCH` answers 503, and no answer says the upload is
//! complete (`Upload-Offset` equal to `Upload-Length`) without
//! `X-Parcel-Id`: `HEAD` answers 503 while S3 is down, then completes it.
//!
//! The order is made by the parcel's write lock (its Redis key, held by the
//! test as another commit would): the `PATCH` stores its bytes and waits at
//! the commit for the lock; S3 goes down; the lock is let go.

use std::time::Duration;

use amo_storage::{
    domain::ParcelId,
    parcels::{lock_key, upload_key},
};
use reqwest::{Response, StatusCode};

use crate::{helpers::*, proxy::Mode, rig::*};

/// A tus request on `path`: `HEAD`, or with `body` a `PATCH` at 0 with
/// sequence 0; signed for it.
async fn tus(app: &TestApp, path: &str, proof: &Proof, body: Option<&[u8]>) -> Response {
    let url = format!("{}{path}", app.base);
    let (request, signed) = match body {
        None => (app.http.head(url), TusRequest::Head),
        Some(body) => (
            app.http
                .patch(url)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .header("X-Upload-Sequence", "0")
                .body(body.to_vec()),
            TusRequest::Patch {
                offset: 0,
                sequence: 0,
            },
        ),
    };
    let request = request.header("Tus-Resumable", "1.0.0");
    proof
        .for_upload(path, signed)
        .apply(request)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

#[tokio::test]
async fn a_commit_that_meets_s3_down_is_never_reported_complete_without_its_parcel() {
    let rig = rig(Mode::Pass, Mode::Pass, &[("AMO_S3_TIMEOUT_SECS", "2")]).await;
    let (app, direct) = (&rig.app, &rig.direct);
    let owner = Account::new();
    let data = random_body(1000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let create = app
        .http
        .post(format!("{}/api/v2/uploads", app.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string());
    let response = proof.apply(create).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let path = header(&response, "location").unwrap().to_owned();
    let upload = path.rsplit('/').next().unwrap().to_owned();

    // Another commit of the same content holds the parcel's write lock.
    let id = ParcelId::parse(&format!(
        "{}{}",
        app.settings.storage_id,
        sha256_upper(&data)
    ))
    .unwrap();
    let state = &direct.backends.state;
    let lock = lock_key(&id);
    assert!(
        state
            .set_new(&lock, "claimed:test", Duration::from_secs(60))
            .await
            .unwrap()
    );

    let patch = tokio::spawn({
        let (app, path, proof, data) = (app.clone(), path.clone(), proof.clone(), data.clone());
        async move { tus(&app, &path, &proof, Some(&data)).await }
    });
    // Every byte is stored (the record says so) and the PATCH waits for
    // the lock at its commit: S3 goes down, then the lock is let go.
    eventually(10, "the record holds every byte", || async {
        let record = state.value(&upload_key(&upload)).await.unwrap();
        record.is_some_and(|text| {
            let record: serde_json::Value = serde_json::from_str(&text).unwrap();
            record["offset"] == record["length"] && record["finished"] == false
        })
    })
    .await;
    rig.s3.set(Mode::Down).await;
    assert!(state.end(&lock, "test").await.unwrap());

    let response = patch.await.unwrap();
    assert_eq!(header(&response, "tus-resumable"), Some("1.0.0"));
    let code = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");
    // S3 down: HEAD does not say complete, it tries to complete, and says
    // 503 while it cannot.
    let response = tus(app, &path, &proof, None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "x-parcel-id"), None);
    assert_eq!(header(&response, "upload-offset"), None);
    assert_eq!(
        inspect_v2(direct, id.as_str()).await.status(),
        StatusCode::NOT_FOUND
    );

    // S3 back: HEAD completes the upload, and names the stored parcel.
    rig.s3.set(Mode::Pass).await;
    until_status(15, "HEAD completes the upload", StatusCode::OK, || {
        tus(app, &path, &proof, None)
    })
    .await;
    let response = tus(app, &path, &proof, None).await;
    assert_eq!(header(&response, "upload-offset"), Some("1000"));
    assert_eq!(header(&response, "x-parcel-id"), Some(id.as_str()));
    assert_eq!(direct.fetch_v2(&owner, id.as_str()).await, data);
}
