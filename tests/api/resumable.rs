//! Resumable uploads (tus 1.0.0 at `/api/v2/uploads`): round trips in
//! several PATCHes across replicas, a PATCH cut mid-way, a wrong hash, each
//! abuse case, termination and expiry. After each, the store holds exactly
//! what it should: the parcel, or nothing staged at all.

use std::time::Duration;

use base64::Engine;
use reqwest::{Response, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

/// The smallest part S3 allows: several parts stay small.
pub const PART: usize = 5 * 1024 * 1024;

pub fn small_parts(extra: &[(&str, &str)]) -> amo_storage::config::Settings {
    let part = PART.to_string();
    let mut overrides = vec![("AMO_S3_PART_SIZE_BYTES", part.as_str())];
    overrides.extend_from_slice(extra);
    settings(&overrides)
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `POST /api/v2/uploads`.
pub async fn create(app: &TestApp, proof: &Proof, length: usize, metadata: Option<&str>) -> Response {
    let mut request = app
        .http
        .post(format!("{}/api/v2/uploads", app.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string());
    if let Some(metadata) = metadata {
        request = request.header("Upload-Metadata", metadata);
    }
    proof.apply(request).send().await.unwrap()
}

/// Creates an upload; answers its path (`/api/v2/uploads/<id>`).
pub async fn created(app: &TestApp, proof: &Proof, length: usize) -> String {
    let response = create(app, proof, length, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    location(&response)
}

pub fn location(response: &Response) -> String {
    let location = header(response, "location");
    assert!(location.starts_with("/api/v2/uploads/"), "{location}");
    location
}

pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// `HEAD`, signed over the request.
pub async fn head(app: &TestApp, path: &str, proof: &Proof) -> Response {
    let request = app
        .http
        .head(format!("{}{path}", app.base))
        .header("Tus-Resumable", "1.0.0");
    let proof = proof.for_upload(path, TusRequest::Head);
    proof.apply(request).send().await.unwrap()
}

/// The upload's sequence by `HEAD` (0 when `HEAD` finds no upload: the
/// refusals tested need one).
pub async fn sequence(app: &TestApp, path: &str, proof: &Proof) -> u64 {
    let response = head(app, path, proof).await;
    match response.status() {
        StatusCode::OK => header(&response, "x-upload-sequence").parse().unwrap(),
        _ => 0,
    }
}

/// The upload's offset by `HEAD`.
pub async fn offset(app: &TestApp, path: &str, proof: &Proof) -> u64 {
    let response = head(app, path, proof).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-store");
    header(&response, "upload-offset").parse().unwrap()
}

/// A `PATCH` at `at` with the upload's sequence, asked of `HEAD` first.
async fn patch(app: &TestApp, path: &str, proof: &Proof, at: usize, body: &[u8]) -> Response {
    let sequence = sequence(app, path, proof).await;
    patch_in_sequence(app, path, proof, at, sequence, body).await
}

/// A `PATCH` at `at` that sends and signs `sequence`.
pub async fn patch_in_sequence(
    app: &TestApp,
    path: &str,
    proof: &Proof,
    at: usize,
    sequence: u64,
    body: &[u8],
) -> Response {
    let signed = TusRequest::Patch {
        offset: at as u64,
        sequence,
    };
    let headers = proof.for_upload(path, signed);
    patch_with_headers(app, path, &headers, at as u64, sequence, body).await
}

/// A `PATCH` with these proof headers, as they are (a replay's, say), and
/// `offset` and `sequence` as sent in the clear.
pub async fn patch_with_headers(
    app: &TestApp,
    path: &str,
    headers: &Proof,
    offset: u64,
    sequence: u64,
    body: &[u8],
) -> Response {
    let request = app
        .http
        .patch(format!("{}{path}", app.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .header("X-Upload-Sequence", sequence.to_string())
        .body(body.to_vec());
    headers.apply(request).send().await.unwrap()
}

/// A PATCH that must store its body; answers the response.
async fn patched(app: &TestApp, path: &str, proof: &Proof, at: usize, body: &[u8]) -> Response {
    let response = patch(app, path, proof, at, body).await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        response.text().await
    );
    patch_ok_offset(response, at + body.len())
}

fn patch_ok_offset(response: Response, expected: usize) -> Response {
    assert_eq!(header(&response, "upload-offset"), expected.to_string());
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    response
}

/// `DELETE`, signed over the request.
pub async fn delete(app: &TestApp, path: &str, proof: &Proof) -> Response {
    let request = app
        .http
        .delete(format!("{}{path}", app.base))
        .header("Tus-Resumable", "1.0.0");
    let proof = proof.for_upload(path, TusRequest::Delete);
    proof.apply(request).send().await.unwrap()
}

/// The store holds nothing: no parcel, no multipart upload, no tail.
async fn assert_nothing_stored(app: &TestApp) {
    eventually(10, "nothing is staged", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
}

#[tokio::test]
async fn options_advertise_the_version_extensions_and_largest_size() {
    let app = spawn_app().await;
    let response = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v2/uploads", app.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    let extensions = header(&response, "tus-extension");
    for extension in ["creation", "termination", "expiration"] {
        assert!(extensions.split(',').any(|e| e == extension), "{extensions}");
    }
    // 10,000 parts of AMO_S3_PART_SIZE_BYTES (a resumable upload's parts do
    // not grow), never past AMO_MAX_PARCEL_BYTES.
    let max: u64 = header(&response, "tus-max-size").parse().unwrap();
    let parts_max = 10_000 * app.settings.s3_part_size_bytes as u64;
    assert_eq!(max, app.settings.max_parcel_bytes.min(parts_max));
    // One byte more is refused, and the answer names the maximum.
    let owner = Account::new();
    let (_, proof) = app.upload_token(&owner, b"past the maximum").await;
    let response = create(&app, &proof, max as usize + 1, None).await;
    let body = expect_json(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("at most {max} bytes")), "{body}");
}

/// Five PATCHes, most ending off a part boundary, alternating between two
/// replicas; the parcel then downloads byte for byte under its content id,
/// with the metadata of `Upload-Metadata`, and the token is used up.
#[tokio::test]
async fn a_parcel_goes_up_in_patches_off_part_boundaries_on_any_replica() {
    let first = spawn_with(small_parts(&[])).await;
    let second = spawn_beside(&first, first.settings.clone()).await;
    let owner = Account::new();
    let data = random_body(2 * PART + 12_345);
    let (token, proof) = first.upload_token(&owner, &data).await;
    let metadata = format!(
        "filename {},metadata {}",
        b64("parcel.bin"),
        b64(r#"{"title":"resumed"}"#)
    );
    let response = create(&first, &proof, data.len(), Some(&metadata)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(!header(&response, "upload-expires").is_empty());
    let path = location(&response);
    // Creation binds the token to the upload; it is not used up.
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let upload = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        first.token_record(&token).await,
        Some(format!("bound:{upload}"))
    );
    // The binding lives as long as the upload: AMO_UPLOAD_IDLE_SECS (1 h)
    // from its creation, not the JWT's few minutes.
    let lifetime = first.token_lifetime(&token).await.unwrap();
    let idle = Duration::from_secs(3600);
    assert!(lifetime <= idle && lifetime > idle - Duration::from_secs(60), "{lifetime:?}");
    assert!(!jti.is_empty());

    let cuts = [
        0,
        3 * 1024 * 1024,
        PART + 7,
        PART + 8,
        2 * PART,
        data.len(),
    ];
    for (n, window) in cuts.windows(2).enumerate() {
        let replica = if n % 2 == 0 { &first } else { &second };
        assert_eq!(offset(replica, &path, &proof).await, window[0] as u64);
        let response = patched(
            replica,
            &path,
            &proof,
            window[0],
            &data[window[0]..window[1]],
        )
        .await;
        let done = window[1] == data.len();
        assert_eq!(response.headers().contains_key("x-parcel-id"), done);
        if done {
            let id = header(&response, "x-parcel-id");
            assert_eq!(id, format!("00000001{}", sha256_upper(&data)));
        }
    }
    let id = format!("00000001{}", sha256_upper(&data));
    // HEAD shows the parcel until the upload expires; the token is used up.
    let response = head(&second, &path, &proof).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-parcel-id"), id);
    assert_eq!(header(&response, "upload-offset"), data.len().to_string());
    assert_eq!(first.token_record(&token).await, None);
    // The token does nothing else now.
    let response = first
        .upload_v2(Some(&proof), data.clone(), None)
        .await;
    expect_code(response, StatusCode::UNAUTHORIZED, "token_used").await;

    assert_eq!(second.fetch_v2(&owner, &id).await, data);
    let inspected = expect_json(
        first.get(&format!("/api/v2/parcels/{id}/metadata")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inspected["metadata"]["title"], "resumed");
    assert_eq!(inspected["owner"], owner.address);
    assert_eq!(first.stored_keys().await, vec![id]);
    eventually(10, "nothing is staged", || async {
        first.multipart_uploads().await.is_empty()
    })
    .await;
}

/// Sends a PATCH at `at` that declares `declared` bytes, sends `sent` of
/// them, and hangs up.
/// A raw connection to `app` on which the head of a `PATCH` at `at` went
/// out, signed for `sequence`, with `framing` (a `Content-Length` or
/// `Transfer-Encoding` line) for its body.
async fn raw_patch(
    app: &TestApp,
    path: &str,
    proof: &Proof,
    at: usize,
    sequence: u64,
    framing: &str,
) -> tokio::net::TcpStream {
    let signed = TusRequest::Patch {
        offset: at as u64,
        sequence,
    };
    let address = app.base.trim_start_matches("http://");
    let mut raw = tokio::net::TcpStream::connect(address).await.unwrap();
    let head_lines = format!(
        "PATCH {path} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\n\
         X-Upload-Sequence: {sequence}\r\n{framing}\r\n{}\r\n",
        proof_lines(&proof.for_upload(path, signed))
    );
    raw.write_all(head_lines.as_bytes()).await.unwrap();
    raw
}

async fn cut_patch(app: &TestApp, path: &str, proof: &Proof, at: usize, declared: usize, sent: &[u8]) {
    let sequence = sequence(app, path, proof).await;
    let framing = format!("Content-Length: {declared}");
    let mut raw = raw_patch(app, path, proof, at, sequence, &framing).await;
    raw.write_all(sent).await.unwrap();
    raw.flush().await.unwrap();
    // Closed (FIN after the bytes written): the service reads them all,
    // then the end of the connection.
    drop(raw);
}

/// PATCHes whose connections are cut mid-way: the bytes of a PATCH that
/// ends within a part are kept as they arrived; those of a part that
/// streams to the store are kept up to the last part stored. The client
/// resumes from HEAD's offset, after its JWT's own `exp` passed.
#[tokio::test]
async fn an_upload_begun_before_a_jwt_rotation_completes_after_it() {
    let (a, b) = (jwt_secret("key-a"), jwt_secret("key-b"));
    let before = spawn_with(settings(&[("AMO_JWT_SECRET", a.as_str())])).await;
    let owner = Account::new();
    let data = random_body(3_000);
    let (_, proof) = before.upload_token(&owner, &data).await;
    let path = created(&before, &proof, data.len()).await;
    patched(&before, &path, &proof, 0, &data[..1_000]).await;

    // A retired: the bound token is refused.
    let retired = spawn_beside(&before, with_jwt_keys(&before.settings, &b, &[])).await;
    let response = head(&retired, &path, &proof).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // B signs, A still verifies: the upload goes on where it stopped.
    let after = spawn_beside(&before, with_jwt_keys(&before.settings, &b, &[&a])).await;
    assert_eq!(offset(&after, &path, &proof).await, 1_000);
    let response = patched(&after, &path, &proof, 1_000, &data[1_000..]).await;
    assert_eq!(
        header(&response, "x-parcel-id"),
        format!("00000001{}", sha256_upper(&data))
    );
}

#[tokio::test]
async fn a_patch_cut_mid_way_resumes_from_heads_offset() {
    let app = spawn_with(small_parts(&[("AMO_TOKEN_TTL_SECS", "2")])).await;
    let owner = Account::new();
    let data = random_body(2 * PART + 4321);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;

    // Declares less than a part, sends 3 MiB + 5 bytes of it, hangs up.
    let kept = 3 * 1024 * 1024 + 5;
    cut_patch(&app, &path, &proof, 0, kept + 100, &data[..kept]).await;
    // The JWT's exp passes; the binding's expiry is what counts.
    let exp = claims_of(&token)["exp"].as_u64().unwrap();
    eventually(10, "the token's exp has passed", || async {
        amo_storage::state::unix_now() > exp
    })
    .await;
    eventually(15, "the cut PATCH's bytes are kept", || async {
        offset(&app, &path, &proof).await == kept as u64
    })
    .await;

    // Declares the rest: its first part streams; cut within the second.
    let cut = PART + 1024 * 1024;
    cut_patch(&app, &path, &proof, kept, data.len() - kept, &data[kept..cut]).await;
    eventually(15, "the stored part is kept, the cut one is not", || async {
        offset(&app, &path, &proof).await == PART as u64
    })
    .await;

    let response = patched(&app, &path, &proof, PART, &data[PART..]).await;
    let id = header(&response, "x-parcel-id");
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
    assert_eq!(app.token_record(&token).await, None);
    eventually(10, "nothing is staged", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
}

/// A chunked PATCH (no `Content-Length`) cut mid-way keeps every byte that
/// arrived: the part it filled, and the bytes of the next as the tail
/// (docs/protocol.md: a body cut in the middle keeps, chunked, every byte
/// that arrived).
#[tokio::test]
async fn a_chunked_patch_cut_mid_way_keeps_every_byte_that_arrived() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let data = random_body(2 * PART + 100);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let sent = PART + 1024 * 1024 + 7;
    let framing = "Transfer-Encoding: chunked";
    let mut raw = raw_patch(&app, &path, &proof, 0, 0, framing).await;
    raw.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await
        .unwrap();
    raw.write_all(&data[..sent]).await.unwrap();
    // The connection drops in the middle of the chunk.
    raw.shutdown().await.unwrap();
    drop(raw);
    eventually(15, "every byte that arrived is kept", || async {
        offset(&app, &path, &proof).await == sent as u64
    })
    .await;
    let response = patched(&app, &path, &proof, sent, &data[sent..]).await;
    let id = header(&response, "x-parcel-id");
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

/// `HEAD` says the upload at `path` is complete and names its parcel, which
/// holds `data`; answers the parcel id.
async fn stored_by_head(app: &TestApp, path: &str, proof: &Proof, owner: &Account, data: &[u8]) -> String {
    let response = head(app, path, proof).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "upload-offset"), data.len().to_string());
    let id = header(&response, "x-parcel-id");
    assert_eq!(app.fetch_v2(owner, &id).await, data);
    id
}

/// A chunked final PATCH whose connection drops after its last data chunk,
/// before the chunk that ends the body: every byte is stored, so the
/// upload completes. `HEAD` never answers an offset equal to the length
/// without the parcel stored (tus clients then report success and send
/// nothing more).
#[tokio::test]
async fn a_final_patch_cut_before_its_last_chunk_ends_still_stores_the_parcel() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let data = random_body(64 * 1024 + 7);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let sequence = sequence(&app, &path, &proof).await;
    let mut raw = raw_patch(&app, &path, &proof, 0, sequence, "Transfer-Encoding: chunked").await;
    raw.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await
        .unwrap();
    raw.write_all(&data).await.unwrap();
    raw.write_all(b"\r\n").await.unwrap();
    // The body never ends: the connection drops once the bytes are sent.
    raw.shutdown().await.unwrap();
    drop(raw);
    eventually(15, "the upload is complete, its parcel stored", || async {
        let response = head(&app, &path, &proof).await;
        response.status() == StatusCode::OK && response.headers().contains_key("x-parcel-id")
    })
    .await;
    stored_by_head(&app, &path, &proof, &owner, &data).await;
}

/// A completing PATCH whose commit cannot take the parcel's write lock
/// answers 409 `upload_in_progress`, every byte stored. Until the parcel is
/// stored, `HEAD` does not say the upload is complete; once the lock is
/// free, `HEAD` completes it and names the parcel.
#[tokio::test]
async fn an_upload_whose_completion_failed_is_completed_by_head_never_reported_done() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(1000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    // Another commit of the same content holds its write lock (the key of
    // docs/protocol.md's Redis layout).
    let id = format!("{}{}", app.settings.storage_id, sha256_upper(&data));
    let lock = format!("amo:lock:{{{id}}}");
    let state = &app.backends.state;
    assert!(
        state
            .set_new(&lock, "claimed:another-commit", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let response = patch(&app, &path, &proof, 0, &data).await;
    assert_eq!(
        expect_error(response, StatusCode::CONFLICT).await,
        "upload_in_progress"
    );
    let response = head(&app, &path, &proof).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "not reported done");
    assert!(!response.headers().contains_key("x-parcel-id"));
    assert!(state.end(&lock, "another-commit").await.unwrap());
    assert_eq!(stored_by_head(&app, &path, &proof, &owner, &data).await, id);
}

/// A declared length that would run past 2^64 from the offset answers
/// 413, like any body past the upload's length, and changes nothing.
#[tokio::test]
async fn a_patch_declaring_a_length_that_overflows_is_refused_413() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(10);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    patched(&app, &path, &proof, 0, &data[..5]).await;
    let sequence = sequence(&app, &path, &proof).await;
    // 2^64 - 5: past 2^64 from offset 5.
    let framing = format!("Content-Length: {}", u64::MAX - 4);
    let mut raw = raw_patch(&app, &path, &proof, 5, sequence, &framing).await;
    raw.write_all(&data[5..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        raw.read(&mut answer).await
    })
    .await
    .expect("an answer")
    .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"too_large\""), "{text}");
    assert_eq!(offset(&app, &path, &proof).await, 5);
    let response = patched(&app, &path, &proof, 5, &data[5..]).await;
    let id = header(&response, "x-parcel-id");
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

/// The completing PATCH of a body that is not the declared one answers 422;
/// no parcel, no part, no tail, no record is left, and the token is gone.
#[tokio::test]
async fn a_wrong_hash_answers_422_and_leaves_nothing_staged() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let declared = random_body(PART + 100);
    let (token, proof) = app.upload_token(&owner, &declared).await;
    let path = created(&app, &proof, declared.len()).await;
    let other = random_body(declared.len());
    patched(&app, &path, &proof, 0, &other[..PART + 50]).await;
    assert!(!app.multipart_uploads().await.is_empty(), "a part and a tail");
    let response = patch(&app, &path, &proof, PART + 50, &other[PART + 50..]).await;
    expect_code(response, StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch").await;
    assert_nothing_stored(&app).await;
    assert_eq!(app.token_record(&token).await, None);
    assert_eq!(head(&app, &path, &proof).await.status(), StatusCode::NOT_FOUND);
}

/// Each abuse is refused with its status and code, the upload stays where
/// it was, and nothing is stored.
#[tokio::test]
async fn each_abuse_is_refused_and_stores_nothing() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let data = random_body(1000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    patched(&app, &path, &proof, 0, &data[..100]).await;

    // A wrong offset.
    let response = patch(&app, &path, &proof, 50, &data[50..200]).await;
    expect_code(response, StatusCode::CONFLICT, "offset_mismatch").await;
    // A PATCH past the length.
    let response = patch(&app, &path, &proof, 100, &random_body(901)).await;
    expect_code(response, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert_eq!(offset(&app, &path, &proof).await, 100);

    // Another account's headers: its own valid upload token is not bound to
    // this upload (404); the owner's token with its key fails the proof.
    let stranger = Account::new();
    let (_, strangers) = app.upload_token(&stranger, &data).await;
    assert_eq!(
        head(&app, &path, &strangers).await.status(),
        StatusCode::NOT_FOUND
    );
    let response = patch(&app, &path, &strangers, 100, &data[100..]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = delete(&app, &path, &strangers).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    let mut stolen = stranger.prove(proof.token.as_deref().unwrap());
    stolen.token = proof.token.clone();
    let response = patch(&app, &path, &stolen, 100, &data[100..]).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "key_mismatch").await;

    // A token bound to another upload of the same owner.
    let other_data = random_body(2000);
    let (_, other_proof) = app.upload_token(&owner, &other_data).await;
    let other_path = created(&app, &other_proof, other_data.len()).await;
    let response = patch(&app, &other_path, &proof, 0, &other_data[..10]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = patch(&app, &path, &other_proof, 100, &data[100..]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    // A made-up upload id, and one that is not an id at all.
    let response = patch(&app, "/api/v2/uploads/0123456789abcdef0123456789abcdef", &proof, 0, b"x").await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = patch(&app, "/api/v2/uploads/..%2F..", &proof, 0, b"x").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A missing Upload-Offset.
    let response = proof
        .apply(
            app.http
                .patch(format!("{}{path}", app.base))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .body(data[100..].to_vec()),
        )
        .send()
        .await
        .unwrap();
    expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(offset(&app, &path, &proof).await, 100);

    // Malformed Upload-Metadata: refused, the token stays usable.
    let fresh = random_body(10);
    let (token, fresh_proof) = app.upload_token(&owner, &fresh).await;
    for metadata in [
        "metadata !!".to_owned(),
        format!("metadata {}", b64("[1,2]")),
        format!("metadata {}", b64("{not json")),
        "a b c".to_owned(),
    ] {
        let sent = amo_storage::state::unix_now();
        let response = create(&app, &fresh_proof, fresh.len(), Some(&metadata)).await;
        expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;
        assert_released(&app, &token, sent).await;
    }
    // A missing Upload-Length, and a token without a hash.
    let response = app
        .http
        .post(format!("{}/api/v2/uploads", app.base))
        .header("Tus-Resumable", "1.0.0");
    let response = fresh_proof.apply(response).send().await.unwrap();
    expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let bare = app.token(&owner.address, json!("upload")).await;
    let response = create(&app, &owner.prove(&bare), 10, None).await;
    expect_code(response, StatusCode::BAD_REQUEST, "bad_request").await;

    // Nothing of the refused requests is stored; the two uploads remain.
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
    for (path, proof) in [(&path, &proof), (&other_path, &other_proof)] {
        assert_eq!(delete(&app, path, proof).await.status(), StatusCode::NO_CONTENT);
    }
    assert_nothing_stored(&app).await;
}

/// DELETE ends an upload: its part, tail, record and token are gone.
#[tokio::test]
async fn delete_terminates_an_upload_and_cleans_up() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let data = random_body(2 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    patched(&app, &path, &proof, 0, &data[..PART + 10]).await;
    let response = delete(&app, &path, &proof).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(head(&app, &path, &proof).await.status(), StatusCode::NOT_FOUND);
    let response = patch(&app, &path, &proof, PART + 10, &data[PART + 10..]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.token_record(&token).await, None);
    assert_nothing_stored(&app).await;
}

/// An expired upload answers 404, and the sweep removes its part and tail.
#[tokio::test]
async fn an_expired_upload_is_refused_and_swept() {
    let app = spawn_with(small_parts(&[
        ("AMO_UPLOAD_LIFETIME_SECS", "2"),
        ("AMO_LEASE_SECS", "1"),
        ("AMO_SWEEP_GRACE_SECS", "1"),
    ]))
    .await;
    let owner = Account::new();
    let data = random_body(2 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let before = amo_storage::state::unix_now();
    let path = created(&app, &proof, data.len()).await;
    patched(&app, &path, &proof, 0, &data[..PART + 10]).await;
    // Its lifetime (2 s from the creation, in whole seconds) has passed.
    eventually(10, "the upload's lifetime has passed", || async {
        amo_storage::state::unix_now() > before + 3
    })
    .await;
    assert_eq!(head(&app, &path, &proof).await.status(), StatusCode::NOT_FOUND);
    let response = patch(&app, &path, &proof, PART + 10, &data[PART + 10..]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.token_record(&token).await, None);
    eventually(20, "the expired upload is swept", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
}

/// An empty body is stored at creation; a second upload of content its
/// owner stores already ends with the same id; another owner's gets 409.
#[tokio::test]
async fn an_empty_upload_is_stored_at_creation_and_duplicates_settle_like_v2() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let (_, proof) = app.upload_token(&owner, b"").await;
    let response = create(&app, &proof, 0, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let empty = format!("00000001{}", sha256_upper(b""));
    assert_eq!(header(&response, "x-parcel-id"), empty);
    let path = location(&response);
    assert_eq!(offset(&app, &path, &proof).await, 0);

    let data = random_body(300);
    let id = app.store_v2(&owner, &data).await;
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let response = patched(&app, &path, &proof, 0, &data).await;
    assert_eq!(header(&response, "x-parcel-id"), id);

    let stranger = Account::new();
    let (token, proof) = app.upload_token(&stranger, &data).await;
    let sent = amo_storage::state::unix_now();
    let response = create(&app, &proof, data.len(), None).await;
    expect_code(response, StatusCode::CONFLICT, "owned_by_another").await;
    assert_released(&app, &token, sent).await;
    let mut stored = app.stored_keys().await;
    stored.sort();
    let mut expected = vec![empty, id];
    expected.sort();
    assert_eq!(stored, expected);
    eventually(10, "nothing is staged", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
}
