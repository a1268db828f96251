//! Liveness, readiness of one replica, and the backend status.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn live_ready_and_backends_up_on_real_backends() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/status/backends"] {
        assert_eq!(
            expect_json(app.get(path).await, StatusCode::OK).await["status"],
            "ok",
            "{path}"
        );
    }
}

/// Readiness is about this replica: a shared backend that is down leaves it
/// ready (every replica shares Redis and S3; taking them all out of rotation
/// would hand every request to the load balancer's own error page). The
/// requests that need the backend answer the service's JSON 503 with
/// `Retry-After`; `/status/backends` names what is down.
#[tokio::test]
async fn a_backend_down_leaves_the_replica_ready_and_requests_answer_json_503_with_retry_after() {
    // Port 1 on loopback: nothing listens there.
    let no_redis = spawn_with(settings(&[("AMO_REDIS_URL", "redis://127.0.0.1:1")])).await;
    assert_eq!(
        expect_json(no_redis.get("/readyz").await, StatusCode::OK).await["status"],
        "ok"
    );
    assert_eq!(
        expect_json(no_redis.get("/healthz").await, StatusCode::OK).await["status"],
        "ok"
    );
    let body = expect_json(
        no_redis.get("/status/backends").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("redis") && !reason.contains("s3:"),
        "{reason}"
    );
    let user = Account::new().address;
    for operation in ["upload", "download", "remove"] {
        let response = no_redis
            .auth_raw(json!({"user": user, "operation": operation}))
            .await;
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "Retry-After: {retry}");
        assert_eq!(
            expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await,
            "unavailable"
        );
    }

    let key_file = std::env::temp_dir().join(format!("amo-key-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, r#"{"access_key": "a", "secret_key": "s"}"#).unwrap();
    let no_s3 = spawn_with(settings(&[
        ("AMO_S3_ENDPOINT", "http://127.0.0.1:1"),
        ("AMO_KEY_FILE", &key_file.display().to_string()),
    ]))
    .await;
    assert_eq!(
        expect_json(no_s3.get("/readyz").await, StatusCode::OK).await["status"],
        "ok"
    );
    let body = expect_json(
        no_s3.get("/status/backends").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("s3:") && !reason.contains("redis"),
        "{reason}"
    );
    let id = "0".repeat(72);
    let response = no_s3.inspect_v1(&id, "owner").await;
    assert!(response.headers().contains_key("retry-after"));
    expect_code(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    std::fs::remove_file(key_file).unwrap();
    if crate::BACKEND == Backend::Embedded {
        return; // the rest is about a real S3
    }
    let no_bucket = spawn_with(settings(&[("AMO_S3_BUCKET", "no-such-bucket-amo")])).await;
    expect_json(no_bucket.get("/readyz").await, StatusCode::OK).await;
    let body = expect_json(
        no_bucket.get("/status/backends").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
}

/// A replica streaming as many uploads as its cap allows stays ready (load
/// never takes it out of the load balancer): it refuses the next upload
/// (503 `busy`, `Retry-After`) and serves everything else.
#[tokio::test]
async fn a_replica_at_its_upload_cap_stays_ready_and_refuses_uploads_one_by_one() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "1"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let owner = Account::new();
    let data = random_body(4096);
    let (token, proof) = app.upload_token(&owner, &data).await;
    // An upload whose body the test holds back after its first 1000 bytes.
    let (sender, upload) = crate::limits::held_upload(&app, &proof, &data, 1000);
    app.until_claimed(&token, "the held upload takes the only slot").await;
    expect_json(app.get("/readyz").await, StatusCode::OK).await;
    let other = app.upload_v2(None, b"probe".to_vec(), None).await;
    assert!(other.headers().contains_key("retry-after"));
    assert_eq!(
        expect_error(other, StatusCode::SERVICE_UNAVAILABLE).await,
        "busy"
    );
    expect_json(app.get("/healthz").await, StatusCode::OK).await;
    // Tokens are still issued.
    app.token(&owner.address, json!("download")).await;
    sender.send(Ok(data[1000..].to_vec())).await.unwrap();
    drop(sender);
    expect_json(upload.await.unwrap().unwrap(), StatusCode::CREATED).await;
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
    let draining_answer = get("/readyz").await.unwrap();
    assert!(
        draining_answer.headers().contains_key("retry-after"),
        "every 503 carries Retry-After"
    );
    let body = expect_json(draining_answer, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["code"], "not_ready");
    assert!(
        body["error"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
}
