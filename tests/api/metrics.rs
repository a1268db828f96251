//! `GET /metrics`: the Prometheus counters move with what the service does.
//! The registry is the process's, shared by the tests running beside this
//! one, so each check is on the growth over this test, never an exact value.

use reqwest::StatusCode;

use crate::helpers::*;

/// The sum of the samples of `name` whose labels contain every one of
/// `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
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

async fn scrape(app: &TestApp) -> String {
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
