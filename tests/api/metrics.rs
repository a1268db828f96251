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
    const OUTSTANDING: usize = 10;
    let secret = "metrics-test-jwt-secret-of-32-bytes-or-more";
    let (env, backends) = process_env_with(&[
        ("AMO_JWT_SECRET", secret),
        ("AMO_AUTH_RATE_PER_IP", &PER_ADDRESS.to_string()),
        ("AMO_MAX_OUTSTANDING_TOKENS", &OUTSTANDING.to_string()),
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
    // The rest of them go to one account, past its cap of OUTSTANDING unused
    // tokens: each one past the cap revokes the account's oldest.
    let issued_so_far = 5;
    let crowded = Account::new();
    for _ in issued_so_far..PER_ADDRESS {
        app.token(&crowded.address, json!("download")).await;
    }
    let revoked = PER_ADDRESS - issued_so_far - OUTSTANDING;
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
    assert_eq!(
        count("amo_limited_total", &[r#"limit="outstanding_tokens""#]),
        revoked as f64
    );
    assert_eq!(count("amo_limited_total", &[]), 3.0 + revoked as f64);
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

/// Waits until the process's sweeper has done its first pass (at start;
/// with a lease of an hour, the next is 30 minutes away), so that only the
/// test's own requests call the backends after.
async fn until_swept(app: &TestApp) {
    eventually(30, "the first sweep is done", || async {
        sample(&scrape(app).await, "amo_sweeps_total", &[r#"sweep="tails""#]) >= 1.0
    })
    .await;
}

/// The growth of `amo_backend_calls_total{backend, outcome}` across
/// `operation`.
async fn calls_during<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    operation: F,
) -> [(&'static str, &'static str, f64); 4] {
    let before = scrape(app).await;
    operation.await;
    let after = scrape(app).await;
    [("redis", "ok"), ("redis", "error"), ("s3", "ok"), ("s3", "error")].map(
        |(backend, outcome)| {
            let labels = [
                format!(r#"backend="{backend}""#),
                format!(r#"outcome="{outcome}""#),
            ];
            let labels = labels.each_ref().map(String::as_str);
            let name = "amo_backend_calls_total";
            (
                backend,
                outcome,
                sample(&after, name, &labels) - sample(&before, name, &labels),
            )
        },
    )
}

/// `amo_backend_calls_total` counts each call once, where it is made: an
/// exact number per operation on the real backends (none on the embedded
/// ones), and one error per failed call, whatever the SDK's retries. The
/// process collector's figures are there too.
#[tokio::test]
async fn backend_calls_are_counted_once_each_by_backend_and_outcome() {
    let (env, backends) = process_env_with(&[("AMO_LEASE_SECS", "3600")]);
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    until_swept(&app).await;
    let owner = Account::new();
    let data = random_body(1000);
    let id = app.store_v2(&owner, &data).await;

    let real = !matches!(crate::BACKEND, Backend::Embedded);
    let per = |redis: f64, s3: f64| {
        if real {
            [("redis", "ok", redis), ("redis", "error", 0.0), ("s3", "ok", s3), ("s3", "error", 0.0)]
        } else {
            [("redis", "ok", 0.0), ("redis", "error", 0.0), ("s3", "ok", 0.0), ("s3", "error", 0.0)]
        }
    };
    // An inspect: one HEAD of the object, no Redis.
    let inspect = calls_during(&app, async {
        let answer = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
        assert_eq!(answer.status(), StatusCode::OK);
    })
    .await;
    assert_eq!(inspect, per(0.0, 1.0), "an inspect");
    // An inspect of a parcel that is not there: S3's 404 is an answer.
    let missing = format!("{}{}", &id[..8], sha256_upper(b"not stored"));
    let absent = calls_during(&app, async {
        let answer = app.get(&format!("/api/v2/parcels/{missing}/metadata")).await;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    })
    .await;
    assert_eq!(absent, per(0.0, 1.0), "an inspect of a missing parcel");
    // A token: Redis only: the per-address rate count, the account's
    // outstanding-token count, the token's record.
    let issue = calls_during(&app, async {
        app.token(&owner.address, json!({"name": "remove", "id": id}))
            .await;
    })
    .await;
    assert_eq!(issue, per(3.0, 0.0), "a token");
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let remove = calls_during(&app, async {
        let answer = app.remove_v2(Some(&owner.prove(&token)), &id).await;
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    })
    .await;
    // A remove: the claim of its token, the parcel's write lock taken,
    // renewed right before the delete (fencing) and let go, the token's
    // renewal (fencing), its settlement and the outstanding count in Redis;
    // the object's HEAD, the token's use mark and the DELETE in S3 (with
    // `AMO_TOKEN_MARKERS` on, the default).
    assert_eq!(remove, per(7.0, 3.0), "a remove");

    let text = scrape(&app).await;
    for name in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds"] {
        assert!(sample(&text, name, &[]) > 0.0, "{name} in {text}");
    }
    assert!(text.contains("\nprocess_cpu_seconds_total "), "CPU seconds");
}

/// A backend that does not answer counts one error per call, the S3
/// SDK's retries included.
#[tokio::test]
async fn a_backend_that_does_not_answer_counts_one_error_per_call() {
    if matches!(crate::BACKEND, Backend::Embedded) {
        return;
    }
    let (env, backends) = process_env_with(&[
        ("AMO_LEASE_SECS", "3600"),
        ("AMO_REDIS_URL", "redis://127.0.0.1:1"),
        ("AMO_S3_ENDPOINT", "http://127.0.0.1:1"),
    ]);
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    until_swept(&app).await;
    let id = format!("00000001{}", sha256_upper(b"anything"));
    let inspect = calls_during(&app, async {
        let answer = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
    assert_eq!(
        inspect,
        [("redis", "ok", 0.0), ("redis", "error", 0.0), ("s3", "ok", 0.0), ("s3", "error", 1.0)]
    );
    let owner = Account::new();
    let issue = calls_during(&app, async {
        let answer = app
            .auth_raw(json!({"user": owner.address, "operation": {"name": "remove", "id": id}}))
            .await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
    assert_eq!(
        issue,
        [("redis", "ok", 0.0), ("redis", "error", 1.0), ("s3", "ok", 0.0), ("s3", "error", 0.0)]
    );
}
