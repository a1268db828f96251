//! v2: streamed round trips at the sizes that matter, ranges, metadata.

use futures_util::stream;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// The smallest part S3 allows; tests use it so several parts stay small.
pub const PART: usize = 5 * 1024 * 1024;

/// A replica whose parts are [`PART`] bytes, and whose bodies of known
/// length go up in one `PutObject` only up to [`PART`] bytes.
pub async fn spawn_small_parts() -> TestApp {
    spawn_with(settings(&[
        ("AMO_S3_PART_SIZE_BYTES", &PART.to_string()),
        ("AMO_S3_SINGLE_PUT_MAX_BYTES", &PART.to_string()),
    ]))
    .await
}

#[tokio::test]
async fn round_trips_at_zero_one_part_part_plus_one_and_several_parts() {
    let app = spawn_small_parts().await;
    let owner = Account::new();
    for (size, parts) in [
        (0, None),
        (1, None),
        (PART, None),
        (PART + 1, Some(2)),
        (3 * PART + 12_345, Some(4)),
    ] {
        let data = random_body(size);
        let id = app.store_v2(&owner, &data).await;
        assert_eq!(id, format!("00000001{}", sha256_upper(&data)));

        let token = app
            .token(&owner.address, json!({"name": "download", "id": id}))
            .await;
        let response = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
        assert_eq!(response.status(), StatusCode::OK, "size {size}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-length"), size.to_string());
        assert_eq!(header("content-type"), "application/octet-stream");
        assert_eq!(header("accept-ranges"), "bytes");
        assert_eq!(header("etag"), format!("\"{}\"", sha256_upper(&data)));
        let body = response.bytes().await.unwrap();
        assert!(
            body.as_ref() == data.as_slice(),
            "size {size}: bytes differ"
        );

        let inspected = expect_json(
            app.get(&format!("/api/v2/parcels/{id}/metadata")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(inspected["size"], json!(size));
        assert_eq!(inspected["owner"], json!(owner.address));
        assert_eq!(inspected["metadata"], json!({"owner": owner.address}));

        // On S3, the ETag shows how the parcel went up.
        if let Some(etag) = app.s3_etag(&id).await {
            match parts {
                None => assert!(
                    !etag.contains('-'),
                    "size {size} should be one PutObject: {etag}"
                ),
                Some(n) => assert!(etag.ends_with(&format!("-{n}\"")), "size {size}: {etag}"),
            }
        }
    }
    assert!(app.multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn a_known_length_up_to_the_single_put_limit_goes_up_in_one_put_object() {
    // The default limit is S3's 5 GiB: 3 parts' worth is one PutObject.
    let app = spawn_with(settings(&[("AMO_S3_PART_SIZE_BYTES", &PART.to_string())])).await;
    let owner = Account::new();
    let data = random_body(3 * PART + 1);
    let id = app.store_v2(&owner, &data).await;
    if let Some(etag) = app.s3_etag(&id).await {
        assert!(!etag.contains('-'), "one PutObject: {etag}");
    }
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
    assert!(app.multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn a_chunked_body_without_length_round_trips() {
    let app = spawn_small_parts().await;
    let owner = Account::new();
    let data = random_body(2 * PART + 7);
    let token = app
        .token(
            &owner.address,
            json!({"name": "upload", "hash": sha256_upper(&data)}),
        )
        .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(stream::iter(chunks));
    let response = app
        .upload_v2(
            Some(&owner.prove(&token)),
            body,
            Some(r#"{"name":"chunked"}"#),
        )
        .await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app.fetch_v2(&owner, &id).await == data);
    let inspected = expect_json(
        app.get(&format!("/api/v2/parcels/{id}/metadata")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inspected["metadata"]["name"], json!("chunked"));
}

#[tokio::test]
async fn ranges_first_last_suffix_open_and_past_the_end() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(10_000);
    let n = data.len();
    let id = app.store_v2(&owner, &data).await;

    let cases: [(String, usize, usize); 5] = [
        ("bytes=0-0".into(), 0, 0),
        (format!("bytes={}-{}", n - 1, n - 1), n - 1, n - 1),
        ("bytes=-100".into(), n - 100, n - 1),
        (format!("bytes={}-", n - 10), n - 10, n - 1),
        ("bytes=100-199".into(), 100, 199),
    ];
    for (range, first, last) in cases {
        let token = app.token(&owner.address, json!("download")).await;
        let response = app
            .download_v2(Some(&owner.prove(&token)), &id, Some(&range))
            .await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()["content-range"].to_str().unwrap(),
            format!("bytes {first}-{last}/{n}")
        );
        assert_eq!(
            response.headers()["content-length"].to_str().unwrap(),
            (last - first + 1).to_string()
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &data[first..=last], "{range}");
        // Each range request used its token.
        assert_eq!(app.token_record(&token).await, None);
    }

    let token = app.token(&owner.address, json!("download")).await;
    let proof = owner.prove(&token);
    let response = app
        .download_v2(Some(&proof), &id, Some(&format!("bytes={n}-")))
        .await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{n}")
    );
    expect_code(response, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;
    // A 416 leaves the token usable; several ranges answer the whole body.
    let response = app
        .download_v2(Some(&proof), &id, Some("bytes=0-1,5-6"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().as_ref() == data.as_slice());
}

#[tokio::test]
async fn metadata_header_rules() {
    let app = spawn_app().await;
    let owner = Account::new();
    let stranger = Account::new();
    let data = random_body(100);
    let scoped = json!({"name": "upload", "hash": sha256_upper(&data)});
    let token = app.token(&owner.address, scoped.clone()).await;
    let proof = owner.prove(&token);
    for (metadata, status, code) in [
        ("{not json".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        ("[1,2]".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"owner": stranger.address}).to_string(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            json!({"blob": "x".repeat(9000)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ] {
        let response = app
            .upload_v2(Some(&proof), data.clone(), Some(&metadata))
            .await;
        expect_code(response, status, code).await;
    }
    assert!(app.stored_keys().await.is_empty());
    let metadata = json!({"title": "caf\\u00e9"}).to_string();
    let response = app
        .upload_v2(Some(&proof), data.clone(), Some(&metadata))
        .await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Same owner, same content: 200, and the stored metadata is kept.
    let token = app.token(&owner.address, scoped).await;
    let response = app
        .upload_v2(
            Some(&owner.prove(&token)),
            data.clone(),
            Some(r#"{"title":"new"}"#),
        )
        .await;
    assert_eq!(expect_json(response, StatusCode::OK).await["id"], json!(id));
    let inspected = expect_json(
        app.get(&format!("/api/v2/parcels/{id}/metadata")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inspected["metadata"]["title"], json!("caf\\u00e9"));
}

#[tokio::test]
async fn a_v2_upload_needs_a_token_that_declares_the_hash() {
    let app = spawn_app().await;
    let owner = Account::new();
    let token = app.token(&owner.address, json!("upload")).await;
    let code = expect_error(
        app.upload_v2(Some(&owner.prove(&token)), random_body(10), None)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "bad_request");
    assert!(app.stored_keys().await.is_empty());
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
}

#[tokio::test]
async fn v1_and_v2_share_parcels_tokens_and_refusals() {
    let app = spawn_app().await;
    let owner = Account::new();
    let stranger = Account::new();
    let data = random_body(3000);
    let id = store_parcel(&app, &owner, &data).await;
    assert!(app.fetch_v2(&owner, &id).await == data);

    // A stranger's download is refused before any byte, and the token survives.
    let token = app.token(&stranger.address, json!("download")).await;
    let response = app
        .download_v2(Some(&stranger.prove(&token)), &id, None)
        .await;
    expect_code(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));

    // Another key signing the owner's token is refused on v2 as on v1.
    let token = app
        .token(
            &owner.address,
            json!({"name": "upload", "hash": sha256_upper(b"x")}),
        )
        .await;
    let response = app
        .upload_v2(Some(&stranger.prove(&token)), b"x".to_vec(), None)
        .await;
    assert_eq!(
        expect_error(response, StatusCode::UNAUTHORIZED).await,
        "key_mismatch"
    );

    // v2 remove, then v1 inspect: gone.
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    assert_eq!(
        app.remove_v2(Some(&owner.prove(&token)), &id)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    expect_code(app.inspect_v1(&id, "owner").await, StatusCode::NOT_FOUND, "not_found").await;
    assert!(app.stored_keys().await.is_empty());
}
