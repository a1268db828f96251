//! The attacks of issue 25 on resumable uploads, each tried against the
//! service (docs/threat-model.md):
//!
//! - attack 5: an account, or a client with many free accounts, opens
//!   unfinished uploads without end, each holding a Redis record and an S3
//!   multipart upload; and an abandoned upload holds them for a day;
//! - attack 6: someone who captured one served request of an upload
//!   replays it, to corrupt, stall or delete the upload.
//!
//! Clients are told apart by `X-Forwarded-For` (the service trusts it
//! here), each test with addresses of its own: the suites share one Redis,
//! and the per-client counts are shared state.

use rand::Rng;
use reqwest::{Response, StatusCode};

use crate::{
    helpers::*,
    resumable::{
        PART, created, delete, head, header, location, offset, patch_in_sequence,
        patch_with_headers, sequence, small_parts,
    },
};

/// The first four groups of an IPv6 /64 of this test alone.
fn fresh_64() -> String {
    let mut rng = rand::rng();
    format!("2001:db8:{:x}:{:x}", rng.random::<u16>(), rng.random::<u16>())
}

/// A client address of this test alone (an IPv4 one, or one in an IPv6
/// /64 of its own).
fn fresh_client(v6: bool) -> String {
    let mut rng = rand::rng();
    if v6 {
        format!("{}::{:x}", fresh_64(), rng.random_range(1..u16::MAX))
    } else {
        format!(
            "10.{}.{}.{}",
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1..255u8)
        )
    }
}

/// `POST /api/v2/uploads` from `client`.
async fn create_from(app: &TestApp, proof: &Proof, length: usize, client: &str) -> Response {
    let request = app
        .http
        .post(format!("{}/api/v2/uploads", app.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("X-Forwarded-For", client);
    proof.apply(request).send().await.unwrap()
}

/// An upload created from `client`: its path.
async fn opened(app: &TestApp, proof: &Proof, length: usize, client: &str) -> String {
    let response = create_from(app, proof, length, client).await;
    assert_eq!(response.status(), StatusCode::CREATED, "a creation under the cap");
    assert_eq!(header(&response, "x-upload-sequence"), "0");
    location(&response)
}

/// A creation past a cap: 429 `too_many_uploads` with `Retry-After: 60`
/// (docs/protocol.md, Errors), and the token stays usable.
async fn refused_past_the_cap(app: &TestApp, token: &str, proof: &Proof, length: usize, client: &str) {
    let sent = amo_storage::state::unix_now();
    let response = create_from(app, proof, length, client).await;
    assert_eq!(header(&response, "retry-after"), "60");
    expect_code(response, StatusCode::TOO_MANY_REQUESTS, "too_many_uploads").await;
    assert_released(app, token, sent).await;
}

const ACCOUNT_CAP: usize = 3;
const CLIENT_CAP: usize = 5;

fn capped(extra: &[(&str, &str)]) -> amo_storage::config::Settings {
    let mut overrides = vec![
        ("AMO_MAX_OPEN_UPLOADS_PER_ACCOUNT", "3"),
        ("AMO_MAX_OPEN_UPLOADS_PER_CLIENT", "5"),
        ("AMO_TRUST_FORWARDED_FOR", "true"),
    ];
    overrides.extend_from_slice(extra);
    small_parts(&overrides)
}

/// Attack 5, one account: past its cap of unfinished uploads a creation is
/// refused and its token stays usable; an upload that completes, and one
/// that is ended, each make room for a new one.
#[tokio::test]
async fn an_accounts_unfinished_uploads_past_its_cap_are_refused() {
    let app = spawn_with(capped(&[])).await;
    let owner = Account::new();
    let client = fresh_client(false);
    let mut open = Vec::new();
    for _ in 0..ACCOUNT_CAP {
        let data = random_body(1000);
        let (_, proof) = app.upload_token(&owner, &data).await;
        open.push((opened(&app, &proof, data.len(), &client).await, proof, data));
    }
    // From another client too: the account's cap counts across clients.
    let data = random_body(1000);
    let (token, proof) = app.upload_token(&owner, &data).await;
    refused_past_the_cap(&app, &token, &proof, data.len(), &client).await;
    refused_past_the_cap(&app, &token, &proof, data.len(), &fresh_client(true)).await;

    // One completes: the refused token now opens an upload.
    let (path, done, body) = open.remove(0);
    let response = patch_in_sequence(&app, &path, &done, 0, 0, &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().contains_key("x-parcel-id"));
    let again = opened(&app, &proof, data.len(), &client).await;
    let (next_token, next) = app.upload_token(&owner, &data).await;
    refused_past_the_cap(&app, &next_token, &next, data.len(), &client).await;

    // One is ended: room for one more.
    let (path, ended, _) = open.remove(0);
    assert_eq!(delete(&app, &path, &ended).await.status(), StatusCode::NO_CONTENT);
    let last = opened(&app, &next, data.len(), &client).await;
    for (path, proof) in [(&again, &proof), (&last, &next), (&open[0].0, &open[0].1)] {
        assert_eq!(delete(&app, path, proof).await.status(), StatusCode::NO_CONTENT);
    }
}

/// Attack 5, one client with many accounts (accounts cost nothing): past
/// the client's cap a creation is refused, whatever the account, while
/// another client is served; ending one makes room.
#[tokio::test]
async fn a_clients_unfinished_uploads_past_its_cap_are_refused_whatever_the_account() {
    let app = spawn_with(capped(&[])).await;
    let block = fresh_64();
    let client = format!("{block}::1");
    let mut open = Vec::new();
    for _ in 0..CLIENT_CAP {
        let account = Account::new();
        let data = random_body(100);
        let (_, proof) = app.upload_token(&account, &data).await;
        open.push((opened(&app, &proof, data.len(), &client).await, proof));
    }
    let stranger = Account::new();
    let data = random_body(100);
    let (token, proof) = app.upload_token(&stranger, &data).await;
    refused_past_the_cap(&app, &token, &proof, data.len(), &client).await;
    // Another address in the same /64 is the same client.
    let same_64 = format!("{block}:ffff:1:2:3");
    refused_past_the_cap(&app, &token, &proof, data.len(), &same_64).await;

    // Another client is served, with the same token.
    let elsewhere = opened(&app, &proof, data.len(), &fresh_client(false)).await;
    assert_eq!(delete(&app, &elsewhere, &proof).await.status(), StatusCode::NO_CONTENT);

    let (path, ended) = open.remove(0);
    assert_eq!(delete(&app, &path, &ended).await.status(), StatusCode::NO_CONTENT);
    let (_, proof) = app.upload_token(&stranger, &data).await;
    open.push((opened(&app, &proof, data.len(), &client).await, proof));
    for (path, proof) in &open {
        assert_eq!(delete(&app, path, proof).await.status(), StatusCode::NO_CONTENT);
    }
}

/// Seconds from now until an `Upload-Expires` date.
fn expires_in(response: &Response) -> i64 {
    let date = httpdate::parse_http_date(&header(response, "upload-expires")).unwrap();
    let at = date.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    at - amo_storage::state::unix_now() as i64
}

/// Attack 5, abandonment: an upload that stores nothing for
/// `AMO_UPLOAD_IDLE_SECS` expires early, and `Upload-Expires` says so; a
/// `PATCH` that stores bytes moves it on. Once idle, it answers 404, its
/// token's binding is gone, its staged part is swept, and its place in the
/// account's count is free.
#[tokio::test]
async fn an_idle_upload_expires_early_and_frees_its_place() {
    let app = spawn_with(capped(&[
        ("AMO_UPLOAD_IDLE_SECS", "4"),
        ("AMO_MAX_OPEN_UPLOADS_PER_ACCOUNT", "1"),
        ("AMO_LEASE_SECS", "1"),
        ("AMO_SWEEP_GRACE_SECS", "1"),
    ]))
    .await;
    let owner = Account::new();
    let client = fresh_client(false);
    let data = random_body(2 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let response = create_from(&app, &proof, data.len(), &client).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let left = expires_in(&response);
    assert!((2..=5).contains(&left), "a new upload lives the idle time: {left} s");
    let path = location(&response);

    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data[..PART + 10]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left = expires_in(&response);
    assert!((2..=5).contains(&left), "a PATCH moves the expiry to the idle time: {left} s");
    assert_eq!(header(&response, "x-upload-sequence"), "1");
    let head_left = expires_in(&head(&app, &path, &proof).await);
    assert!((left - 1..=left).contains(&head_left), "HEAD says the same expiry");
    assert!(!app.multipart_uploads().await.is_empty(), "a part and a tail are staged");

    // The account holds its one upload.
    let other = random_body(100);
    let (other_token, other_proof) = app.upload_token(&owner, &other).await;
    refused_past_the_cap(&app, &other_token, &other_proof, other.len(), &client).await;

    eventually(15, "the idle upload expires", || async {
        head(&app, &path, &proof).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    let response = patch_in_sequence(&app, &path, &proof, PART + 10, 1, &data[PART + 10..]).await;
    expect_code(response, StatusCode::NOT_FOUND, "not_found").await;
    // Its token's binding went with it.
    assert_eq!(app.token_record(&token).await, None);
    eventually(20, "the idle upload's part and tail are swept", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
    // Its place is free: the refused token opens an upload.
    let response = create_from(&app, &other_proof, other.len(), &client).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// The three proof headers of a request as sent: what an eavesdropper
/// captures.
fn captured(proof: &Proof, path: &str, request: TusRequest) -> Proof {
    proof.for_upload(path, request)
}

/// A request with captured headers, as they are.
async fn replayed(app: &TestApp, method: reqwest::Method, path: &str, headers: &Proof) -> Response {
    let request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("Tus-Resumable", "1.0.0");
    headers.apply(request).send().await.unwrap()
}

/// Attack 6: the headers of a served `PATCH` and `HEAD` are captured and
/// replayed. The `PATCH` replays are refused (its sequence is spent; with
/// the offset or sequence changed, the signature fails), the `HEAD` replay
/// only reads, and no captured signature deletes the upload. The upload's
/// offset and bytes are untouched, and it completes with the declared
/// content.
#[tokio::test]
async fn a_captured_tus_request_replayed_changes_nothing() {
    let app = spawn_with(small_parts(&[])).await;
    let owner = Account::new();
    let data = random_body(3000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;

    // The victim's first PATCH and a HEAD are served, and captured.
    let first = TusRequest::Patch {
        offset: 0,
        sequence: 0,
    };
    let patch_headers = captured(&proof, &path, first);
    let response = patch_with_headers(&app, &path, &patch_headers, 0, 0, &data[..1000]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "x-upload-sequence"), "1");
    let head_headers = captured(&proof, &path, TusRequest::Head);
    let response = replayed(&app, reqwest::Method::HEAD, &path, &head_headers).await;
    assert_eq!(response.status(), StatusCode::OK);

    let garbage = random_body(1000);
    // The PATCH as captured, with its own offset: its sequence is spent.
    let response = patch_with_headers(&app, &path, &patch_headers, 0, 0, &garbage).await;
    expect_code(response, StatusCode::CONFLICT, "stale_request").await;
    // With the offset moved to the upload's, or the next sequence: the
    // signature does not cover them.
    let response = patch_with_headers(&app, &path, &patch_headers, 1000, 0, &garbage).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let response = patch_with_headers(&app, &path, &patch_headers, 1000, 1, &garbage).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    // The creation's signature (over the token alone) serves nothing bound.
    let response = patch_with_headers(&app, &path, &proof, 1000, 1, &garbage).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    // The HEAD replayed only reads.
    let response = replayed(&app, reqwest::Method::HEAD, &path, &head_headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "upload-offset"), "1000");
    // No captured signature deletes it.
    for headers in [&patch_headers, &head_headers, &proof] {
        let response = replayed(&app, reqwest::Method::DELETE, &path, headers).await;
        expect_code(response, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    }

    assert_eq!(offset(&app, &path, &proof).await, 1000);
    assert_eq!(sequence(&app, &path, &proof).await, 1);
    let response = patch_in_sequence(&app, &path, &proof, 1000, 1, &data[1000..]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = header(&response, "x-parcel-id");
    assert_eq!(id, format!("00000001{}", sha256_upper(&data)));
    assert_eq!(app.fetch_v2(&owner, &id).await, data);

    // The completing PATCH replayed: refused, the parcel unchanged.
    let completing = captured(
        &proof,
        &path,
        TusRequest::Patch {
            offset: 1000,
            sequence: 1,
        },
    );
    let response = patch_with_headers(&app, &path, &completing, 1000, 1, &random_body(2000)).await;
    expect_code(response, StatusCode::CONFLICT, "stale_request").await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}
