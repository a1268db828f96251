//! The bucket must exist (docs/protocol.md, "Storage model"): the service
//! never creates it. Without it an upload answers 503 `unavailable` and
//! `/status/backends` 503 naming S3; a read or a remove answers 404, as
//! S3's `HEAD` answers a missing bucket as a missing object. Never a 500.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn without_its_bucket_uploads_answer_503_reads_404_and_status_names_s3() {
    if crate::BACKEND != Backend::Real {
        return; // the embedded store is a directory it makes itself
    }
    let bucket = format!("amo-missing-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let app = spawn_with(settings(&[("AMO_S3_BUCKET", bucket.as_str())])).await;
    let owner = Account::new();
    let data = random_body(100);
    let id = format!("{}{}", app.settings.storage_id, sha256_upper(&data));

    let (token, proof) = app.upload_token(&owner, &data).await;
    let upload = app.upload_v2(Some(&proof), data.clone(), None).await;
    expect_code(upload, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(app.token_record(&token).await.is_some(), "the token stays usable");
    let inspect = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
    expect_code(inspect, StatusCode::NOT_FOUND, "not_found").await;
    let token = app
        .token(&owner.address, serde_json::json!({"name": "download", "id": id}))
        .await;
    let download = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    expect_code(download, StatusCode::NOT_FOUND, "not_found").await;
    let token = app
        .token(&owner.address, serde_json::json!({"name": "remove", "id": id}))
        .await;
    let remove = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    expect_code(remove, StatusCode::NOT_FOUND, "not_found").await;

    let status = app.get("/status/backends").await;
    let body = expect_json(status, StatusCode::SERVICE_UNAVAILABLE).await;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("S3") || error.contains("parcel store"), "{error}");
}
