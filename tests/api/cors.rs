//! Browsers on other origins (CORS, `AMO_CORS_ALLOWED_ORIGINS`): preflights
//! answered with exact headers for an allowed origin and for `*`, on a
//! route and on tus; nothing for a foreign origin or when the setting is
//! unset; an actual request from an allowed origin names it and exposes the
//! headers a page reads; preflights counted on their route, not as 405.

use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::{helpers::*, metrics::sample};

const MARKET: &str = "https://market.example";
const LOCAL_PAGE: &str = "http://127.0.0.1:8000";
const FOREIGN: &str = "https://evil.example";

const ALLOWED_HEADERS: &str = "X-Auth-Token, X-Public-Key, X-Signature, X-Parcel-Metadata, \
     Range, Content-Type, Upload-Length, Upload-Offset, Upload-Metadata, Tus-Resumable, \
     X-Upload-Sequence, X-Request-Id";
const EXPOSED_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, \
     Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, X-Parcel-Id, X-Upload-Sequence, \
     Content-Range, Content-Length, ETag, X-Request-Id, Retry-After";

/// A replica that lets `origins` in.
async fn spawn_allowing(origins: &str) -> TestApp {
    spawn_with(settings(&[("AMO_CORS_ALLOWED_ORIGINS", origins)])).await
}

/// A preflight from `origin` for `method` on `path`, asking for the headers
/// a signed tus PATCH sends.
async fn preflight(app: &TestApp, origin: &str, method: &str, path: &str) -> Response {
    app.http
        .request(Method::OPTIONS, format!("{}{path}", app.base))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "content-type,tus-resumable,upload-offset,x-auth-token,x-public-key,x-signature,x-upload-sequence",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

/// The names of the `Access-Control-*` headers of `response`.
fn cors_headers(response: &Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

/// A preflight answered for `origin` (echoed as `allow_origin`), with the
/// methods `methods`, the exact headers, a max-age and no credentials.
async fn assert_preflight_answered(response: Response, allow_origin: &str, methods: &str) {
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(allow_origin)
    );
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some(methods)
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some(ALLOWED_HEADERS)
    );
    assert_eq!(header(&response, "access-control-max-age"), Some("600"));
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
    assert_eq!(header(&response, "access-control-expose-headers"), None);
    assert!(header(&response, "x-request-id").is_some());
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn preflights_from_a_listed_origin_are_answered_on_every_route() {
    let app = spawn_allowing(&format!("{MARKET}, {LOCAL_PAGE}")).await;
    let id = format!("00000001{}", "AB".repeat(32));
    for (origin, method, path, methods) in [
        (MARKET, "POST", "/api/v2/auth".to_owned(), "POST"),
        (MARKET, "POST", "/api/v2/parcels".to_owned(), "POST"),
        (
            LOCAL_PAGE,
            "DELETE",
            format!("/api/v2/parcels/{id}"),
            "GET, DELETE",
        ),
        (MARKET, "GET", format!("/api/v1/parcels/{id}"), "GET, DELETE"),
        (MARKET, "POST", "/api/v2/uploads".to_owned(), "POST, OPTIONS"),
        (
            LOCAL_PAGE,
            "PATCH",
            "/api/v2/uploads/0123456789abcdef".to_owned(),
            "HEAD, PATCH, DELETE",
        ),
    ] {
        let response = preflight(&app, origin, method, &path).await;
        assert_eq!(
            header(&response, "vary"),
            Some("origin"),
            "{method} {path}: a listed origin's answer varies on Origin"
        );
        assert_preflight_answered(response, origin, methods).await;
    }
}

#[tokio::test]
async fn preflights_with_any_origin_allowed_answer_a_star() {
    let app = spawn_allowing("*").await;
    for (method, path, methods) in [
        ("GET", "/api/v2/parcels/x", "GET, DELETE"),
        ("HEAD", "/api/v2/uploads/0123456789abcdef", "HEAD, PATCH, DELETE"),
    ] {
        let response = preflight(&app, FOREIGN, method, path).await;
        assert_eq!(header(&response, "vary"), None);
        assert_preflight_answered(response, "*", methods).await;
    }
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_headers_and_is_judged_as_before() {
    let listed = spawn_allowing(MARKET).await;
    let unset = spawn_app().await;
    for app in [&listed, &unset] {
        let response = preflight(app, FOREIGN, "POST", "/api/v2/parcels").await;
        assert!(cors_headers(&response).is_empty(), "{response:?}");
        expect_code(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

        // An allowed origin on a service that allows none: the same.
        let response = preflight(app, LOCAL_PAGE, "PATCH", "/api/v2/uploads/0123456789abcdef").await;
        assert!(cors_headers(&response).is_empty(), "{response:?}");
        expect_code(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

        // tus's own OPTIONS is still tus's, preflight or not.
        let response = preflight(app, FOREIGN, "POST", "/api/v2/uploads").await;
        assert!(cors_headers(&response).is_empty(), "{response:?}");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "tus-version"), Some("1.0.0"));

        let response = app
            .http
            .post(format!("{}/api/v2/auth", app.base))
            .header("Origin", FOREIGN)
            .json(&json!({"user": Account::new().address, "operation": {"name": "download", "id": "x"}}))
            .send()
            .await
            .unwrap();
        assert!(cors_headers(&response).is_empty(), "{response:?}");
    }
}

#[tokio::test]
async fn tus_discovery_from_an_allowed_origin_stays_tus_and_is_readable() {
    let app = spawn_allowing(MARKET).await;
    let response = app
        .http
        .request(Method::OPTIONS, format!("{}/api/v2/uploads", app.base))
        .header("Origin", MARKET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "tus-version"), Some("1.0.0"));
    assert!(header(&response, "tus-max-size").is_some());
    assert_eq!(header(&response, "access-control-allow-origin"), Some(MARKET));
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        Some(EXPOSED_HEADERS)
    );
    assert_eq!(header(&response, "access-control-allow-methods"), None);
}

#[tokio::test]
async fn actual_requests_from_an_allowed_origin_name_it_and_expose_headers() {
    let app = spawn_allowing(MARKET).await;
    let owner = Account::new();
    let data = random_body(5_000);
    let sha = sha256_upper(&data);
    let token = app
        .token(&owner.address, json!({"name": "upload", "hash": sha}))
        .await;
    let stored = owner
        .prove(&token)
        .apply(app.http.post(format!("{}/api/v2/parcels", app.base)))
        .header("Origin", MARKET)
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);
    assert_eq!(header(&stored, "access-control-allow-origin"), Some(MARKET));
    assert_eq!(
        header(&stored, "access-control-expose-headers"),
        Some(EXPOSED_HEADERS)
    );
    assert_eq!(header(&stored, "vary"), Some("origin"));
    assert_eq!(header(&stored, "access-control-allow-credentials"), None);
    let id = stored.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An error is readable by the page too: the JSON and its code.
    let refused = app
        .http
        .get(format!("{}/api/v2/parcels/{id}", app.base))
        .header("Origin", MARKET)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(MARKET));
    assert!(
        header(&refused, "access-control-expose-headers").is_some(),
        "{refused:?}"
    );
    expect_error(refused, StatusCode::UNAUTHORIZED).await;

    // A ranged download: Content-Range is what the page reads.
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let ranged = owner
        .prove(&token)
        .apply(app.http.get(format!("{}/api/v2/parcels/{id}", app.base)))
        .header("Origin", MARKET)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&ranged, "access-control-allow-origin"), Some(MARKET));
    assert_eq!(header(&ranged, "content-range"), Some("bytes 10-19/5000"));
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[10..20]);
}

#[tokio::test]
async fn preflights_count_on_their_route_not_as_refusals() {
    // The only test that sends OPTIONS to this route: the registry is the
    // test process's, shared with the tests beside this one.
    let app = spawn_allowing(MARKET).await;
    let route = r#"route="/api/v2/parcels/{id}/metadata""#;
    let before = crate::metrics::scrape(&app).await;
    const PREFLIGHTS: f64 = 5.0;
    for _ in 0..PREFLIGHTS as usize {
        let response = preflight(&app, MARKET, "GET", "/api/v2/parcels/abc/metadata").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let after = crate::metrics::scrape(&app).await;
    let grew = |status: &str| {
        let labels = [route, r#"method="OPTIONS""#, status];
        sample(&after, "amo_http_requests_total", &labels)
            - sample(&before, "amo_http_requests_total", &labels)
    };
    assert_eq!(grew(r#"status="204""#), PREFLIGHTS);
    assert_eq!(grew(r#"status="405""#), 0.0);
}
