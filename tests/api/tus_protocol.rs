//! tus 1.0.0 to the letter: 412 with `Tus-Version` for a request without
//! `Tus-Resumable: 1.0.0` (but `OPTIONS`), 415 for a `PATCH` of another
//! `Content-Type`, `Tus-Resumable` on every answer, errors included; and the
//! order of checks on an upload: no proof headers is 401 whatever the path.

use reqwest::{Method, Response, StatusCode};

use crate::{
    helpers::*,
    resumable::{created, header, head, offset, patch_in_sequence, sequence},
};

/// A request on `path` with `headers` (name, value) and `proof`, and nothing
/// else: no `Tus-Resumable` unless given.
async fn request(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    proof: Option<&Proof>,
    body: &[u8],
) -> Response {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(proof) = proof {
        request = proof.apply(request);
    }
    request.send().await.unwrap()
}

/// The JSON error code of a tus answer, which must carry `Tus-Resumable`;
/// a `HEAD` answer has no body (`None`).
async fn tus_error(response: Response, status: StatusCode, method: &Method) -> Option<String> {
    assert_eq!(header(&response, "tus-resumable"), "1.0.0", "{method}");
    if *method == Method::HEAD {
        assert_eq!(response.status(), status, "{method}");
        assert!(response.bytes().await.unwrap().is_empty());
        return None;
    }
    Some(expect_error(response, status).await)
}

#[tokio::test]
async fn a_tus_request_without_version_1_0_0_is_refused_412_and_changes_nothing() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(100);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let (_, unused) = app.upload_token(&owner, &random_body(7)).await;
    let patch_proof = proof.for_upload(
        &path,
        TusRequest::Patch {
            offset: 0,
            sequence: 0,
        },
    );
    let cases = [
        (Method::POST, "/api/v2/uploads", unused.clone()),
        (Method::HEAD, path.as_str(), proof.for_upload(&path, TusRequest::Head)),
        (Method::PATCH, path.as_str(), patch_proof),
        (Method::DELETE, path.as_str(), proof.for_upload(&path, TusRequest::Delete)),
    ];
    for (method, at, proof) in cases {
        for version in [None, Some("0.2.2"), Some("1.0")] {
            let mut headers = vec![
                ("Upload-Length", "7"),
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", "0"),
                ("X-Upload-Sequence", "0"),
            ];
            if let Some(version) = version {
                headers.push(("Tus-Resumable", version));
            }
            let response = request(&app, method.clone(), at, &headers, Some(&proof), &data).await;
            assert_eq!(header(&response, "tus-version"), "1.0.0");
            let code = tus_error(response, StatusCode::PRECONDITION_FAILED, &method).await;
            assert!(code.is_none_or(|code| code == "tus_version"), "{method} {version:?}");
        }
    }
    // Nothing changed: the upload is where it was, its sequence unspent,
    // and the refused creation's token still creates an upload.
    assert_eq!(offset(&app, &path, &proof).await, 0);
    assert_eq!(sequence(&app, &path, &proof).await, 0);
    created(&app, &unused, 7).await;
    // Discovery needs no version.
    let response = request(&app, Method::OPTIONS, "/api/v2/uploads", &[], None, b"").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
}

#[tokio::test]
async fn a_patch_of_another_content_type_is_refused_415_and_spends_nothing() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(100);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let signed = proof.for_upload(
        &path,
        TusRequest::Patch {
            offset: 0,
            sequence: 0,
        },
    );
    for content_type in [
        Some("application/octet-stream"),
        Some("text/plain"),
        Some("application/offset+octet-streams"),
        None,
    ] {
        let mut headers = vec![
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Offset", "0"),
            ("X-Upload-Sequence", "0"),
        ];
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let response = request(&app, Method::PATCH, &path, &headers, Some(&signed), &data).await;
        let code = tus_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, &Method::PATCH).await;
        assert_eq!(code.as_deref(), Some("unsupported_media_type"), "{content_type:?}");
    }
    assert_eq!(offset(&app, &path, &proof).await, 0);
    assert_eq!(sequence(&app, &path, &proof).await, 0, "no sequence spent");
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &data).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = header(&response, "x-parcel-id");
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

#[tokio::test]
async fn every_tus_answer_carries_tus_resumable_errors_included() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(10);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let path = created(&app, &proof, data.len()).await;
    let tus = [("Tus-Resumable", "1.0.0")];
    // 401: no proof.
    let response = request(&app, Method::POST, "/api/v2/uploads", &tus, None, b"").await;
    let code = tus_error(response, StatusCode::UNAUTHORIZED, &Method::POST).await;
    assert_eq!(code.as_deref(), Some("missing_credentials"));
    // 404: an upload this token is not bound to.
    let other = format!("/api/v2/uploads/{}", "f".repeat(32));
    let signed = proof.for_upload(&other, TusRequest::Head);
    let response = request(&app, Method::HEAD, &other, &tus, Some(&signed), b"").await;
    tus_error(response, StatusCode::NOT_FOUND, &Method::HEAD).await;
    // 409: a sequence not due.
    let response = patch_in_sequence(&app, &path, &proof, 0, 5, &data).await;
    let code = tus_error(response, StatusCode::CONFLICT, &Method::PATCH).await;
    assert_eq!(code.as_deref(), Some("stale_request"));
    // 413: past Upload-Length.
    let response = patch_in_sequence(&app, &path, &proof, 0, 0, &random_body(11)).await;
    let code = tus_error(response, StatusCode::PAYLOAD_TOO_LARGE, &Method::PATCH).await;
    assert_eq!(code.as_deref(), Some("too_large"));
    // 405: a method the route does not take, before tus's own checks (a
    // PATCH on the collection is no tus PATCH: 405, not 415).
    for (method, at) in [(Method::PUT, path.as_str()), (Method::PATCH, "/api/v2/uploads")] {
        let response = request(&app, method.clone(), at, &tus, None, b"").await;
        let code = tus_error(response, StatusCode::METHOD_NOT_ALLOWED, &method).await;
        assert_eq!(code.as_deref(), Some("method_not_allowed"), "{method} {at}");
    }
    // And the successes.
    assert_eq!(header(&head(&app, &path, &proof).await, "tus-resumable"), "1.0.0");
}

/// Check 1 of the order of checks comes first on an upload too: without the
/// proof headers, 401 `missing_credentials`, whatever the path names (an
/// unknown upload, or not an upload id at all) and whatever else is missing.
#[tokio::test]
async fn an_upload_request_without_proof_headers_answers_401_whatever_the_path() {
    let app = spawn_app().await;
    let tus = [("Tus-Resumable", "1.0.0")];
    let unknown = format!("/api/v2/uploads/{}", "a".repeat(32));
    for path in [unknown.as_str(), "/api/v2/uploads/unknown"] {
        for method in [Method::HEAD, Method::PATCH, Method::DELETE] {
            let headers = [tus[0], ("Content-Type", "application/offset+octet-stream")];
            let response = request(&app, method.clone(), path, &headers, None, b"").await;
            let code = tus_error(response, StatusCode::UNAUTHORIZED, &method).await;
            assert!(code.is_none_or(|code| code == "missing_credentials"), "{method} {path}");
        }
    }
}
