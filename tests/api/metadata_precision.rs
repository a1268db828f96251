//! Metadata never changes in silence: numbers keep the text they were sent
//! as (v1, v2 and tus), and tus `Upload-Metadata` sent twice or not in
//! ASCII is refused with 400, as v2's `X-Parcel-Metadata` is.

use base64::Engine;
use reqwest::{StatusCode, header::HeaderValue};

use crate::{
    helpers::*,
    resumable::{create, created, header, location, patch_in_sequence},
};

/// Metadata whose numbers a float or a 64-bit integer would change.
const SENT: &str =
    r#"{"big":123456789012345678901234567890,"exact":1.50,"negative_zero":-0,"sci":1E+2}"#;

/// The members of [`SENT`], each as it must come back: its digits as sent
/// (serde_json writes an exponent's `E` as `e`, the same number).
const MEMBERS: [&str; 4] = [
    r#""big":123456789012345678901234567890"#,
    r#""exact":1.50"#,
    r#""negative_zero":-0"#,
    r#""sci":1e+2"#,
];

/// The metadata of parcel `id` as v2's inspect and v1's answer it hold
/// every member of [`SENT`] as sent, byte for byte.
async fn answered_exactly(app: &TestApp, id: &str) {
    for path in [
        format!("/api/v2/parcels/{id}/metadata"),
        format!("/api/v1/parcels/{id}?key=metadata"),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let text = response.text().await.unwrap();
        for member in MEMBERS {
            assert!(text.contains(member), "{path}: {member} not in {text}");
        }
    }
}

#[tokio::test]
async fn v2_metadata_numbers_round_trip_as_sent() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(50);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let response = app.upload_v2(Some(&proof), data, Some(SENT)).await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    answered_exactly(&app, &id).await;
}

#[tokio::test]
async fn v1_metadata_numbers_round_trip_as_sent() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(50);
    let (_, proof) = app.upload_token(&owner, &data).await;
    // The body as text: the client's JSON, its numbers as written.
    let body = format!(
        r#"{{"owner":"{}","metadata":{SENT},"data":"{}"}}"#,
        owner.address,
        hex::encode(&data)
    );
    let request = app
        .http
        .post(format!("{}/api/v1/parcels", app.base))
        .header("Content-Type", "application/json")
        .body(body);
    let response = proof.apply(request).send().await.unwrap();
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    answered_exactly(&app, &id).await;
}

fn b64(text: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn tus_metadata_numbers_round_trip_as_sent() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(50);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let metadata = format!("metadata {}", b64(SENT.as_bytes()));
    let response = create(&app, &proof, data.len(), Some(&metadata)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let path = location(&response);
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    answered_exactly(&app, &header(&response, "x-parcel-id")).await;
}

/// `Upload-Metadata` sent twice, or with a byte that is not ASCII, is
/// refused with 400 in JSON; nothing is staged, and the token still
/// creates the upload once the header is right.
#[tokio::test]
async fn tus_upload_metadata_sent_twice_or_not_in_ascii_is_refused_400() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(50);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let metadata = format!("metadata {}", b64(br#"{"name":"a"}"#));
    let not_ascii = HeaderValue::from_bytes(format!("{metadata},caf\u{e9} eA==").as_bytes()).unwrap();
    let twice: [&[HeaderValue]; 2] = [
        &[
            HeaderValue::from_str(&metadata).unwrap(),
            HeaderValue::from_str(&format!("filename {}", b64(b"a.bin"))).unwrap(),
        ],
        &[not_ascii],
    ];
    for values in twice {
        let mut request = app
            .http
            .post(format!("{}/api/v2/uploads", app.base))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", data.len().to_string());
        for value in values {
            request = request.header("Upload-Metadata", value.clone());
        }
        let response = proof.apply(request).send().await.unwrap();
        expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert!(app.multipart_uploads().await.is_empty(), "nothing staged");
    let path = created(&app, &proof, data.len()).await;
    assert!(path.starts_with("/api/v2/uploads/"));
}
