//! `GET /metrics`: the Prometheus counters move with what the service does.
//! The registry is the process's: in the test process it is shared by the
//! tests running beside one another, so the first test checks growth only;
//! the second runs the service as a process of its own and checks every
//! figure exactly.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::*,
    limits::{client_from, unique_loopback},
    process::{ServiceProcess, process_env_with, streamed_upload},
};

/// The sum of the samples of `name` whose labels contain every one of
/// `labels` (`key="value"`).
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|label| rest.contains(label))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a sample value"))
        .sum()
}

/// `GET /metrics` of `app`, checked to be Prometheus text.
pub async fn scrape(app: &TestApp) -> String {
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let kind = answer.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain"), "content type {kind}");
    answer.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_requests_bytes_tokens_and_refusals() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let owner = Account::new();
    let data = random_body(10_000);
    let id = app.store_v2(&owner, &data).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
    // A refusal: a token signed by another account.
    let token = app
        .token(&owner.address, serde_json::json!({"name": "remove", "id": id}))
        .await;
    let stranger = Account::new();
    let refused = app.remove_v2(Some(&stranger.prove(&token)), &id).await;
    expect_code(refused, StatusCode::UNAUTHORIZED, "key_mismatch").await;
    let after = scrape(&app).await;

    let grew = |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(
        grew(
            "amo_http_requests_total",
            &[r#"route="/api/v2/parcels""#, r#"method="POST""#, r#"status="201""#]
        ) >= 1.0
    );
    assert!(
        grew(
            "amo_http_requests_total",
            &[r#"route="/api/v2/parcels/{id}""#, r#"method="DELETE""#, r#"status="401""#]
        ) >= 1.0
    );
    assert!(
        grew(
            "amo_http_request_duration_seconds_count",
            &[r#"route="/api/v2/parcels/{id}""#, r#"method="GET""#]
        ) >= 1.0
    );
    assert!(grew("amo_parcel_bytes_received_total", &[]) >= data.len() as f64);
    assert!(grew("amo_parcel_bytes_sent_total", &[]) >= data.len() as f64);
    assert!(grew("amo_tokens_issued_total", &[]) >= 3.0);
    assert!(grew("amo_tokens_consumed_total", &[]) >= 2.0);
    assert!(grew("amo_tokens_refused_total", &[]) >= 1.0);
}

/// The registry of a process of its own (the real binary): every figure is
/// exact. Each refusal reason comes a different number of times, so a
/// reason counted under another's label shows; the limits are hit on
/// purpose.
#[tokio::test]
async fn a_process_of_its_own_counts_exactly_what_it_served() {
    const REFUSALS: [&str; 7] = [
        "missing_credentials",
        "token_invalid",
        "token_expired",
        "invalid_public_key",
        "key_mismatch",
        "invalid_signature",
        "token_used",
    ];
    const PER_ADDRESS: usize = 20;
    let secret = "metrics-test-jwt-secret-of-32-bytes-or-more";
    let (env, backends) = process_env_with(&[
        ("AMO_JWT_SECRET", secret),
        ("AMO_AUTH_RATE_PER_IP", &PER_ADDRESS.to_string()),
        ("AMO_MAX_CONCURRENT_UPLOADS", "1"),
    ]);
    let service = ServiceProcess::start(&env).await;
    let mut app = service.app(&env, backends);
    // Token requests come from an address of this test's own: the address
    // limit's counter is in the shared state.
    app.http = client_from(unique_loopback());
    let before = scrape(&app).await;
    for name in [
        "amo_tokens_issued_total",
        "amo_tokens_consumed_total",
        "amo_parcel_bytes_received_total",
        "amo_parcel_bytes_sent_total",
        "amo_tokens_refused_total",
        "amo_backend_errors_total",
        "amo_limited_total",
    ] {
        assert_eq!(sample(&before, name, &[]), 0.0, "{name} at start");
    }

    let owner = Account::new();
    let stranger = Account::new();
    let data = random_body(10_000);
    let id = app.store_v2(&owner, &data).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);

    // Every refusal reason of the token checks, reason i (from 0) i + 1 times.
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let good = owner.prove(&token);
    let mut expired = claims_of(&token);
    expired["exp"] = json!(expired["iat"].as_u64().unwrap() - 1);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &expired,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    for (index, reason) in REFUSALS.iter().enumerate() {
        if *reason == "token_used" {
            let answer = app.remove_v2(Some(&good), &id).await;
            assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        }
        for _ in 0..=index {
            let mut proof = good.clone();
            match *reason {
                "missing_credentials" => proof.signature = None,
                "token_invalid" => proof.token = Some("not.a.jwt".into()),
                "token_expired" => proof = owner.prove(&expired),
                "invalid_public_key" => proof.public_key = Some("zz".into()),
                "key_mismatch" => proof = stranger.prove(&token),
                "invalid_signature" => proof.signature = owner.prove("another").signature,
                _ => {}
            }
            let answer = app.remove_v2(Some(&proof), &id).await;
            expect_code(answer, StatusCode::UNAUTHORIZED, reason).await;
        }
    }

    // The cap of one upload at a time: a second upload is busy.
    let held_data = random_body(3000);
    let (_, held_proof) = app.upload_token(&owner, &held_data).await;
    let (sender, held) = streamed_upload(&app, &held_proof);
    sender.send(Ok(held_data[..1000].to_vec())).await.unwrap();
    let busy_data = random_body(10);
    let (_, busy_proof) = app.upload_token(&owner, &busy_data).await;
    eventually(10, "the held upload streams its body", || async {
        let text = scrape(&app).await;
        sample(&text, "amo_parcel_bytes_received_total", &[]) == (data.len() + 1000) as f64
    })
    .await;
    let answer = app.upload_v2(Some(&busy_proof), busy_data, None).await;
    expect_code(answer, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    sender.send(Ok(held_data[1000..].to_vec())).await.unwrap();
    drop(sender);
    expect_json(held.await.unwrap().unwrap(), StatusCode::CREATED).await;

    // The address limit: PER_ADDRESS token requests a minute, then two 429s.
    let issued_so_far = 5;
    for _ in issued_so_far..PER_ADDRESS {
        app.token(&Account::new().address, json!("download")).await;
    }
    for _ in 0..2 {
        let answer = app
            .auth_raw(json!({"user": owner.address, "operation": "download"}))
            .await;
        expect_code(answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }

    let after = scrape(&app).await;
    let count = |name: &str, labels: &[&str]| sample(&after, name, labels);
    for (index, reason) in REFUSALS.iter().enumerate() {
        let label = format!(r#"reason="{reason}""#);
        assert_eq!(
            count("amo_tokens_refused_total", &[&label]),
            index as f64 + 1.0,
            "{reason}"
        );
    }
    assert_eq!(count("amo_tokens_refused_total", &[]), 28.0);
    assert_eq!(count("amo_tokens_issued_total", &[]), PER_ADDRESS as f64);
    assert_eq!(count("amo_tokens_consumed_total", &[]), 4.0);
    assert_eq!(
        count("amo_parcel_bytes_received_total", &[]),
        (data.len() + held_data.len()) as f64
    );
    assert_eq!(count("amo_parcel_bytes_sent_total", &[]), data.len() as f64);
    assert_eq!(
        count("amo_limited_total", &[r#"limit="concurrent_uploads""#]),
        1.0
    );
    assert_eq!(count("amo_limited_total", &[r#"limit="auth_per_ip""#]), 2.0);
    assert_eq!(count("amo_limited_total", &[]), 3.0);
    assert_eq!(count("amo_backend_errors_total", &[]), 0.0);
    let requests = |route: &str, method: &str, status: &str| {
        let labels = [
            format!(r#"route="{route}""#),
            format!(r#"method="{method}""#),
            format!(r#"status="{status}""#),
        ];
        count("amo_http_requests_total", &labels.each_ref().map(String::as_str))
    };
    assert_eq!(requests("/api/v2/parcels/{id}", "DELETE", "401"), 28.0);
    assert_eq!(requests("/api/v2/parcels/{id}", "DELETE", "204"), 1.0);
    assert_eq!(requests("/api/v2/parcels/{id}", "GET", "200"), 1.0);
    assert_eq!(requests("/api/v2/parcels", "POST", "201"), 2.0);
    assert_eq!(requests("/api/v2/parcels", "POST", "503"), 1.0);
    assert_eq!(requests("/api/v1/auth", "POST", "200"), PER_ADDRESS as f64);
    assert_eq!(requests("/api/v1/auth", "POST", "429"), 2.0);
    assert_eq!(
        count(
            "amo_http_request_duration_seconds_count",
            &[r#"route="/api/v2/parcels/{id}""#, r#"method="DELETE""#]
        ),
        29.0
    );
}
