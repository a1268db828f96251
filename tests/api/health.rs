//! Liveness and readiness.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn live_and_ready_on_real_backends() {
    let app = spawn_app().await;
    assert_eq!(
        expect_json(app.get("/healthz").await, StatusCode::OK).await["status"],
        "ok"
    );
    assert_eq!(
        expect_json(app.get("/readyz").await, StatusCode::OK).await["status"],
        "ok"
    );
}

#[tokio::test]
async fn not_ready_names_the_missing_backend_and_requests_answer_503() {
    // Port 1 on loopback: nothing listens there.
    let no_redis = spawn_with(settings(&[("AMO_REDIS_URL", "redis://127.0.0.1:1")])).await;
    let body = expect_json(
        no_redis.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("redis") && !reason.contains("s3:"),
        "{reason}"
    );
    assert_eq!(
        expect_json(no_redis.get("/healthz").await, StatusCode::OK).await["status"],
        "ok"
    );
    let user = Account::new().address;
    let response = no_redis
        .auth_raw(serde_json::json!({"user": user, "operation": "upload"}))
        .await;
    assert_eq!(
        expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await,
        "unavailable"
    );

    let key_file = std::env::temp_dir().join(format!("amo-key-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, r#"{"access_key": "a", "secret_key": "s"}"#).unwrap();
    let no_s3 = spawn_with(settings(&[
        ("AMO_S3_ENDPOINT", "http://127.0.0.1:1"),
        ("AMO_KEY_FILE", &key_file.display().to_string()),
    ]))
    .await;
    let body = expect_json(no_s3.get("/readyz").await, StatusCode::SERVICE_UNAVAILABLE).await;
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("s3:") && !reason.contains("redis"),
        "{reason}"
    );
    let id = "0".repeat(72);
    let response = no_s3.inspect_v1(&id, "owner").await;
    expect_code(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    std::fs::remove_file(key_file).unwrap();
    if crate::BACKEND == Backend::Embedded {
        return; // the rest is about a real S3
    }
    let no_bucket = spawn_with(settings(&[("AMO_S3_BUCKET", "no-such-bucket-amo")])).await;
    let body = expect_json(
        no_bucket.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
}

/// From the moment a replica drains, `/readyz` answers 503 `not_ready`
/// (saying so) on every connection that still reaches it, while other
/// requests are served. (The process closes its listener at the same
/// moment, so from outside a probe mostly finds the connection refused:
/// `process.rs` shows it never answers 200 again.)
#[tokio::test]
async fn readyz_answers_503_not_ready_from_the_moment_the_replica_drains() {
    use poem::listener::{Acceptor, Listener};

    let settings = settings(&[]);
    let backends = amo_storage::app::Backends::from_settings(&settings).unwrap();
    let draining = amo_storage::api::health::Draining::default();
    let endpoint = amo_storage::app::endpoint(&settings, &backends, draining.clone());
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(endpoint));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    draining.start();
    let body = expect_json(get("/readyz").await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["code"], "not_ready");
    assert!(
        body["error"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
}
