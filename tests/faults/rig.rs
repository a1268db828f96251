//! The service under test, reaching the real Redis and Ceph RGW through a
//! [`FaultProxy`] each, and a second replica beside it on the same backends
//! without proxies (the same key prefix), to set up parcels and tokens and
//! to look at what really is in Redis and S3 while the proxies fail.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use amo_storage::config::StoreBackend;
use futures_util::Stream;
use reqwest::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    helpers::*,
    proxy::{FaultProxy, Mode},
};

/// The smallest S3 part: uploads past it are multipart.
pub const PART: usize = 5 * 1024 * 1024;

/// A service behind fault proxies, and a replica on the real backends.
pub struct Rig {
    /// The service under test: its Redis and S3 are the proxies.
    pub app: TestApp,
    /// A replica on the real Redis and S3, with the same key prefix.
    pub direct: TestApp,
    /// In front of the real Redis.
    pub redis: FaultProxy,
    /// In front of the real Ceph RGW.
    pub s3: FaultProxy,
    /// This test's place beside the others (`crate::shared`).
    _running: tokio::sync::RwLockReadGuard<'static, ()>,
}

/// Starts a rig whose proxies begin in `redis` and `s3` modes; `overrides`
/// are `AMO_*` settings for both replicas.
pub async fn rig(redis: Mode, s3: Mode, overrides: &[(&str, &str)]) -> Rig {
    let running = crate::shared().await;
    let Proxies {
        redis,
        s3,
        redis_url: proxied_redis,
        s3_url: proxied_s3,
    } = Proxies::start(redis, s3).await;

    let prefix = format!("faults-{}/", uuid::Uuid::new_v4());
    let mut common = vec![("AMO_S3_PREFIX", prefix.as_str())];
    common.extend_from_slice(overrides);
    let direct = spawn_with(settings(&common)).await;

    let mut proxied = common.clone();
    proxied.push(("AMO_REDIS_URL", &proxied_redis));
    proxied.push(("AMO_S3_ENDPOINT", &proxied_s3));
    let app = spawn_with(settings(&proxied)).await;
    Rig {
        app,
        direct,
        redis,
        s3,
        _running: running,
    }
}

impl Rig {
    /// How many parts the real RGW holds of the unfinished uploads under
    /// the rig's prefix.
    pub async fn parts_uploaded(&self) -> usize {
        let StoreBackend::S3(config) = &self.direct.settings.store else {
            unreachable!("the rig runs on S3");
        };
        let (store, uploads) = s3_unfinished_uploads(config).await;
        let mut parts = 0;
        for (key, upload_id) in uploads {
            let listed = store
                .client()
                .list_parts()
                .bucket(store.bucket())
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .unwrap();
            parts += listed.parts().len();
        }
        parts
    }
}

/// A fault proxy in front of the real Redis and one in front of the real
/// RGW, and the settings that reach each through its proxy.
pub struct Proxies {
    /// In front of the real Redis.
    pub redis: FaultProxy,
    /// In front of the real Ceph RGW.
    pub s3: FaultProxy,
    /// `AMO_REDIS_URL` through the proxy.
    pub redis_url: String,
    /// `AMO_S3_ENDPOINT` through the proxy.
    pub s3_url: String,
}

impl Proxies {
    /// Starts both proxies, in `redis` and `s3` modes.
    pub async fn start(redis: Mode, s3: Mode) -> Self {
        let env = backend_env();
        let redis_url = url::Url::parse(
            env.get("AMO_REDIS_URL")
                .expect("no AMO_REDIS_URL: start the backends with deploy/local/up.sh first"),
        )
        .unwrap();
        let s3_url = url::Url::parse(&env["AMO_S3_ENDPOINT"]).unwrap();
        let redis = FaultProxy::start(socket_of(&redis_url), redis).await;
        let s3 = FaultProxy::start(socket_of(&s3_url), s3).await;
        let mut proxied_redis = redis_url.clone();
        proxied_redis.set_ip_host(redis.addr().ip()).unwrap();
        proxied_redis.set_port(Some(redis.addr().port())).unwrap();
        Self {
            redis_url: proxied_redis.to_string(),
            s3_url: format!("{}://{}", s3_url.scheme(), s3.addr()),
            redis,
            s3,
        }
    }
}

fn socket_of(url: &url::Url) -> SocketAddr {
    url.socket_addrs(|| None).unwrap()[0]
}

/// The tokens of one account for one stored parcel and one new body, all
/// issued before a fault.
pub struct Tokens {
    /// To upload `fresh`.
    pub upload: String,
    /// To download the stored parcel.
    pub download: String,
    /// To remove the stored parcel.
    pub remove: String,
}

impl Tokens {
    /// Issues the three tokens through `issuer`.
    pub async fn issue(issuer: &TestApp, owner: &Account, stored: &str, fresh: &[u8]) -> Self {
        Self {
            upload: issuer
                .token(
                    &owner.address,
                    json!({"name": "upload", "hash": sha256_upper(fresh)}),
                )
                .await,
            download: issuer
                .token(&owner.address, json!({"name": "download", "id": stored}))
                .await,
            remove: issuer
                .token(&owner.address, json!({"name": "remove", "id": stored}))
                .await,
        }
    }

    /// Each token's record in the real Redis.
    pub async fn records(&self, direct: &TestApp) -> Vec<Option<String>> {
        let mut records = Vec::new();
        for token in [&self.upload, &self.download, &self.remove] {
            records.push(direct.token_record(token).await);
        }
        records
    }
}

/// Asserts a 503 with a JSON `{"error", "code"}` body and a `Retry-After`
/// of at least one second; answers the code.
pub async fn expect_unavailable(response: Response) -> String {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let code = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        retry_after.is_some_and(|secs| secs >= 1),
        "a 503 ({code}) without a Retry-After of at least 1 s: {retry_after:?}"
    );
    code
}

/// Asserts a refused token: 401 (used up) or 409 (held by a request that
/// will never finish it); answers the code.
pub async fn expect_token_refused(response: Response) -> String {
    let status = response.status();
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::CONFLICT,
        "a reused token was not refused: {status} {}",
        response.text().await.unwrap_or_default()
    );
    let code = expect_error(response, status).await;
    assert!(
        code == "token_used" || code == "token_in_use",
        "unexpected code {code}"
    );
    code
}

/// Runs `request` and answers how long it took.
pub async fn timed<T>(request: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let answer = request.await;
    (answer, start.elapsed())
}

/// Repeats `request` every 50 ms until it answers `status`, for at most
/// `seconds`; answers how long that took (from the first try).
pub async fn until_status<F, Fut>(
    seconds: u64,
    what: &str,
    status: StatusCode,
    request: F,
) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = Response>,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    loop {
        let answer = request().await.status();
        if answer == status {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {answer} after {seconds} s, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes a parcel of `owner` through `app` (the tests remove their large
/// parcels, which Ceph would otherwise keep).
pub async fn remove_parcel(app: &TestApp, owner: &Account, id: &str) {
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let response = app.remove_v2(Some(&owner.prove(&token)), id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// `POST /api/v1/auth` for a new account's upload (never rate limited).
pub async fn auth_once(app: &TestApp) -> Response {
    let account = Account::new();
    app.auth_raw(json!({
        "user": account.address,
        "operation": {"name": "upload", "hash": sha256_upper(b"x")}
    }))
    .await
}

/// `GET /api/v2/parcels/{id}/metadata`.
pub async fn inspect_v2(app: &TestApp, id: &str) -> Response {
    app.get(&format!("/api/v2/parcels/{id}/metadata")).await
}

/// A request body the test feeds chunk by chunk.
pub struct BodyFeed {
    sender: Option<mpsc::Sender<std::io::Result<Vec<u8>>>>,
}

impl BodyFeed {
    /// A feed and the body it makes.
    pub fn new() -> (Self, reqwest::Body) {
        let (sender, receiver) = mpsc::channel(4);
        (
            Self {
                sender: Some(sender),
            },
            reqwest::Body::wrap_stream(stream_of(receiver)),
        )
    }

    /// Sends `bytes` in 1 MiB chunks; `false` once the service stopped
    /// reading.
    pub async fn send(&self, bytes: &[u8]) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        for chunk in bytes.chunks(1024 * 1024) {
            if sender.send(Ok(chunk.to_vec())).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the body.
    pub fn finish(&mut self) {
        self.sender = None;
    }
}

fn stream_of<T: Send + 'static>(receiver: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}
