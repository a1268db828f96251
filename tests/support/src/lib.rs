//! What the test suites share: spawning the service in-process on a backend
//! pair, accounts that sign, typed request helpers.
//!
//! The API suite runs three times (tests/api's `main.rs`, `cluster.rs` and
//! `embedded.rs`): on the real Redis and Ceph RGW that `deploy/local/up.sh`
//! starts, with the state in a real Redis Cluster, and on the embedded
//! backends (in-process state, a data directory). [`Backend`] says which;
//! each suite's `helpers` module binds the functions that take one to its
//! own.
//!
//! Real settings come from the `AMO_*` environment, or else from the env
//! file the script writes (`$AMO_LOCAL_DIR/env`, default
//! `/tmp/amo-local/env`). Every app gets its own S3 key prefix or data
//! directory, so a test can list exactly what it stored.

use std::{collections::HashMap, path::Path, sync::OnceLock, time::Duration};

use amo_storage::{
    app::{App, Backends},
    config::{Settings, StateBackend, StoreBackend},
    storage::S3Store,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::{DerSignature, Signature, SigningKey, signature::Signer};
use rand::RngCore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `AMO_*` variables for the local backends.
pub fn backend_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AMO_"))
            .collect();
        if !vars.contains_key("AMO_REDIS_URL") {
            let dir = std::env::var("AMO_LOCAL_DIR").unwrap_or_else(|_| "/tmp/amo-local".into());
            // Missing, it is needed only by the real suite (see settings_for).
            let file = env_file(&Path::new(&dir).join("env")).unwrap_or_default();
            // The real environment wins over the file.
            for (name, value) in file {
                vars.entry(name).or_insert(value);
            }
        }
        vars.retain(|name, _| !name.starts_with("AMO_LOCAL_"));
        vars
    })
}

/// The variables of an env file of `deploy/local/` (`export NAME=value`
/// lines, shell-quoted), in the file's order; an error when it cannot be
/// opened. Fails the test on a line that does not parse.
pub fn env_file(path: &Path) -> dotenvy::Result<Vec<(String, String)>> {
    Ok(dotenvy::from_path_iter(path)?
        .map(|line| line.unwrap_or_else(|err| panic!("{}: {err}", path.display())))
        .collect())
}

/// The backend pair a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The real Redis and Ceph RGW of `deploy/local/up.sh`.
    Real,
    /// The embedded backends: state in the process, parcels in a directory.
    Embedded,
    /// The real Ceph RGW, with the shared state in the 3-master Redis
    /// Cluster of `deploy/local/redis-cluster.sh` (its URLs in
    /// `AMO_TEST_REDIS_CLUSTER_URL`, or the script's defaults).
    RealCluster,
}

/// The Redis setting of `deploy/local/redis-cluster.sh`'s cluster.
const LOCAL_REDIS_CLUSTER: &str =
    "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003";

/// Settings for a test app on `backend`.
pub fn settings_for(backend: Backend, overrides: &[(&str, &str)]) -> Settings {
    Settings::load_from(None, env_for(backend, overrides))
        .expect("test settings")
        .0
}

/// The `AMO_*` variables of a test app on `backend`: the backends' own, a
/// fresh key prefix or data directory, and `overrides`.
pub fn env_for(backend: Backend, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars = backend_env().clone();
    assert!(
        backend == Backend::Embedded || vars.contains_key("AMO_REDIS_URL"),
        "no AMO_REDIS_URL and no env file: start the backends with deploy/local/up.sh \
         first (or run only the embedded suite: cargo test --test api_embedded)"
    );
    let unique = uuid::Uuid::new_v4();
    vars.insert("AMO_S3_PREFIX".into(), format!("test-{unique}/"));
    if backend == Backend::RealCluster {
        let cluster = std::env::var("AMO_TEST_REDIS_CLUSTER_URL")
            .unwrap_or_else(|_| LOCAL_REDIS_CLUSTER.to_owned());
        vars.insert("AMO_REDIS_URL".into(), cluster);
    }
    if backend == Backend::Embedded {
        vars.remove("AMO_REDIS_URL");
        vars.remove("AMO_S3_ENDPOINT");
        let dir = std::env::temp_dir()
            .join("amo-test-data")
            .join(unique.to_string());
        vars.insert("AMO_DATA_DIR".into(), dir.display().to_string());
    }
    // An override that names a Redis URL (an unreachable one, a test's own
    // server) means that server: the environment's sentinels, which would
    // name another master, are dropped unless overridden too.
    let named = |wanted: &str| overrides.iter().any(|(name, _)| *name == wanted);
    if named("AMO_REDIS_URL") && !named("AMO_REDIS_SENTINELS") {
        vars.remove("AMO_REDIS_SENTINELS");
        vars.remove("AMO_REDIS_SENTINEL_MASTER");
    }
    for (name, value) in overrides {
        vars.insert((*name).into(), (*value).into());
    }
    // An override that names a plain `redis://` URL (an unreachable one,
    // say) drops the TLS files of a `rediss://` environment, which the
    // settings refuse beside a plain URL.
    if vars
        .get("AMO_REDIS_URL")
        .is_some_and(|url| !url.contains("rediss"))
    {
        for name in [
            "AMO_REDIS_CA_FILE",
            "AMO_REDIS_CLIENT_CERT_FILE",
            "AMO_REDIS_CLIENT_KEY_FILE",
        ] {
            vars.remove(name);
        }
    }
    vars
}

/// `settings` with other JWT keys, as after a rotation: `signing` signs
/// (`AMO_JWT_SECRET`), `previous` only verify (`AMO_JWT_PREVIOUS_SECRETS`).
/// The backends stay those of `settings`: give the result to
/// [`spawn_beside`].
pub fn with_jwt_keys(settings: &Settings, signing: &str, previous: &[&str]) -> Settings {
    let mut settings = settings.clone();
    settings.jwt_secret = signing.to_owned().into();
    settings.jwt_previous_secrets = previous
        .iter()
        .map(|secret| (*secret).to_owned().into())
        .collect();
    settings
}

/// A fresh JWT secret (43 bytes) whose text starts with `name`.
pub fn jwt_secret(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// One running replica.
#[derive(Clone)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its settings.
    pub settings: Settings,
    /// Its backends.
    pub backends: Backends,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// Starts a replica with `settings`, on the backends they name.
pub async fn spawn_with(settings: Settings) -> TestApp {
    let backends = Backends::from_settings(&settings).expect("backends");
    spawn_on(settings, backends).await
}

/// Starts a replica with `settings` on `backends`.
pub async fn spawn_on(settings: Settings, backends: Backends) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let app = App::bind_with(settings.clone(), backends.clone(), "127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        base,
        settings,
        backends,
        http: reqwest::Client::new(),
    }
}

/// Starts another replica beside `first`, with `settings`, sharing its
/// backends: the same Redis and bucket prefix, or the same embedded state
/// and directory.
pub async fn spawn_beside(first: &TestApp, settings: Settings) -> TestApp {
    match first.settings.state {
        StateBackend::Redis(_) => spawn_with(settings).await,
        StateBackend::Embedded => spawn_on(settings, first.backends.clone()).await,
    }
}

/// Starts two replicas with `settings` that share the backends.
pub async fn spawn_pair_with(settings: Settings) -> (TestApp, TestApp) {
    let first = spawn_with(settings.clone()).await;
    let second = spawn_beside(&first, settings).await;
    (first, second)
}

impl TestApp {
    /// `POST /api/v1/auth` with a raw JSON body.
    pub async fn auth_raw(&self, body: Value) -> Response {
        self.http
            .post(format!("{}/api/v1/auth", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// This replica as a client at `ip` reaches it: every request of the
    /// copy comes from `ip`, a loopback address (127.0.0.0/8), so that a
    /// test can be several clients at once.
    pub fn client_at(&self, ip: &str) -> TestApp {
        let http = reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("an IP address"))
            .build()
            .expect("an HTTP client");
        TestApp {
            http,
            ..self.clone()
        }
    }

    /// A token for `user` and `operation`; fails the test otherwise.
    pub async fn token(&self, user: &str, operation: Value) -> String {
        let response = self
            .auth_raw(json!({"user": user, "operation": operation}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// `POST /api/v1/parcels` with `body` and optional proof headers.
    pub async fn upload_v1(&self, proof: Option<&Proof>, body: &Value) -> Response {
        let request = self
            .http
            .post(format!("{}/api/v1/parcels", self.base))
            .json(body);
        with_proof(request, proof).send().await.unwrap()
    }

    /// `GET /api/v1/parcels/{id}` (download) with optional proof headers.
    pub async fn download_v1(&self, proof: Option<&Proof>, id: &str) -> Response {
        let request = self.http.get(format!("{}/api/v1/parcels/{id}", self.base));
        with_proof(request, proof).send().await.unwrap()
    }

    /// `GET /api/v1/parcels/{id}?key=…` (inspect).
    pub async fn inspect_v1(&self, id: &str, key: &str) -> Response {
        self.http
            .get(format!("{}/api/v1/parcels/{id}?key={key}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /api/v1/parcels/{id}` with optional proof headers.
    pub async fn remove_v1(&self, proof: Option<&Proof>, id: &str) -> Response {
        let request = self
            .http
            .delete(format!("{}/api/v1/parcels/{id}", self.base));
        with_proof(request, proof).send().await.unwrap()
    }

    /// `POST /api/v2/parcels` with a raw body.
    pub async fn upload_v2(
        &self,
        proof: Option<&Proof>,
        body: impl Into<reqwest::Body>,
        metadata: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .post(format!("{}/api/v2/parcels", self.base))
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(metadata) = metadata {
            request = request.header("X-Parcel-Metadata", metadata);
        }
        with_proof(request, proof).send().await.unwrap()
    }

    /// `GET /api/v2/parcels/{id}` with an optional `Range`.
    pub async fn download_v2(
        &self,
        proof: Option<&Proof>,
        id: &str,
        range: Option<&str>,
    ) -> Response {
        let mut request = self.http.get(format!("{}/api/v2/parcels/{id}", self.base));
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        with_proof(request, proof).send().await.unwrap()
    }

    /// `DELETE /api/v2/parcels/{id}`.
    pub async fn remove_v2(&self, proof: Option<&Proof>, id: &str) -> Response {
        let request = self
            .http
            .delete(format!("{}/api/v2/parcels/{id}", self.base));
        with_proof(request, proof).send().await.unwrap()
    }

    /// Uploads `data` for `account` through v2; returns the id.
    pub async fn store_v2(&self, account: &Account, data: &[u8]) -> String {
        let token = self
            .token(
                &account.address,
                json!({"name": "upload", "hash": sha256_upper(data)}),
            )
            .await;
        let response = self
            .upload_v2(Some(&account.prove(&token)), data.to_vec(), None)
            .await;
        expect_json(response, StatusCode::CREATED).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Downloads a whole parcel through v2 with a new token.
    pub async fn fetch_v2(&self, account: &Account, id: &str) -> Vec<u8> {
        let token = self
            .token(&account.address, json!({"name": "download", "id": id}))
            .await;
        let response = self
            .download_v2(Some(&account.prove(&token)), id, None)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap().to_vec()
    }

    /// The uploads begun and not yet completed or discarded.
    pub async fn multipart_uploads(&self) -> Vec<String> {
        self.backends
            .store
            .unfinished_uploads()
            .await
            .expect("list unfinished uploads")
    }

    /// Whether a request holds `token`'s claim now.
    pub async fn token_claimed(&self, token: &str) -> bool {
        self.token_record(token)
            .await
            .is_some_and(|value| value.starts_with("claimed:"))
    }

    /// Waits (up to 10 s) until a request holds `token`'s claim: the request
    /// passed its proof and is under way. `what` names it for the failure.
    pub async fn until_claimed(&self, token: &str, what: &str) {
        eventually(10, what, || self.token_claimed(token)).await;
    }

    /// The value of a token's record in the shared state (`None`: gone).
    pub async fn token_record(&self, token: &str) -> Option<String> {
        let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
        self.backends
            .state
            .value(&documented_keys::token(&jti))
            .await
            .unwrap()
    }

    /// How long a token's record has left to live.
    pub async fn token_lifetime(&self, token: &str) -> Option<Duration> {
        let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
        self.backends
            .state
            .remaining(&documented_keys::token(&jti))
            .await
            .unwrap()
    }

    /// A token to upload exactly `data` (it declares its SHA-256), and the
    /// account's proof over it.
    pub async fn upload_token(&self, account: &Account, data: &[u8]) -> (String, Proof) {
        let token = self
            .token(
                &account.address,
                json!({"name": "upload", "hash": sha256_upper(data)}),
            )
            .await;
        let proof = account.prove(&token);
        (token, proof)
    }

    /// `GET` any path.
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// The store loses every unfinished upload under the service's feet: S3
    /// aborts its multipart uploads, or the upload files vanish.
    pub async fn lose_unfinished_uploads(&self) {
        match &self.settings.store {
            StoreBackend::S3(config) => {
                let (store, uploads) = s3_unfinished_uploads(config).await;
                for (key, upload_id) in uploads {
                    store
                        .client()
                        .abort_multipart_upload()
                        .bucket(store.bucket())
                        .key(key)
                        .upload_id(upload_id)
                        .send()
                        .await
                        .unwrap();
                }
            }
            StoreBackend::Directory(dir) => {
                for name in self.multipart_uploads().await {
                    std::fs::remove_file(dir.join("parcels").join(name)).unwrap();
                }
            }
        }
    }

    /// The S3 ETag of a stored parcel (`"…-N"` for a multipart upload of N
    /// parts); `None` on the directory store.
    pub async fn s3_etag(&self, id: &str) -> Option<String> {
        let StoreBackend::S3(config) = &self.settings.store else {
            return None;
        };
        let store = S3Store::new(config);
        let head = store
            .client()
            .head_object()
            .bucket(store.bucket())
            .key(format!("{}{id}", config.prefix))
            .send()
            .await
            .unwrap();
        Some(head.e_tag().unwrap().to_owned())
    }

    /// The ids of every parcel this app stored (under its prefix).
    pub async fn stored_keys(&self) -> Vec<String> {
        self.backends.store.list().await.expect("list parcels")
    }
}

fn with_proof(request: reqwest::RequestBuilder, proof: Option<&Proof>) -> reqwest::RequestBuilder {
    match proof {
        None => request,
        Some(proof) => proof.apply(request),
    }
}

/// The three proof headers; any may be left out to test refusals.
#[derive(Debug, Clone)]
pub struct Proof {
    pub token: Option<String>,
    pub public_key: Option<String>,
    pub signature: Option<String>,
    /// The key that signed it, when one did: it signs the requests on a
    /// resumable upload ([`Proof::for_upload`]).
    pub signer: Option<SigningKey>,
}

/// A request on a resumable upload, as its signature names it (written
/// here from docs/protocol.md, independently of the service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusRequest {
    /// `HEAD`.
    Head,
    /// `PATCH` at an offset, with the upload's sequence.
    Patch { offset: u64, sequence: u64 },
    /// `DELETE`.
    Delete,
}

/// What `X-Signature` signs on a resumable upload after its creation:
/// `<METHOD>\n<upload id>\n<Upload-Offset>\n<X-Upload-Sequence>\n<token>`.
pub fn tus_signed_text(request: TusRequest, upload: &str, token: &str) -> String {
    let (method, offset, sequence) = match request {
        TusRequest::Head => ("HEAD", String::new(), String::new()),
        TusRequest::Patch { offset, sequence } => {
            ("PATCH", offset.to_string(), sequence.to_string())
        }
        TusRequest::Delete => ("DELETE", String::new(), String::new()),
    };
    format!("{method}\n{upload}\n{offset}\n{sequence}\n{token}")
}

impl Proof {
    /// This proof for `request` on the upload at `path`
    /// (`/api/v2/uploads/<id>`): the same token and key, the signature over
    /// the request. A proof without its key (or its token) is kept as it
    /// is, for tests of refusals.
    pub fn for_upload(&self, path: &str, request: TusRequest) -> Proof {
        let (Some(key), Some(token)) = (&self.signer, &self.token) else {
            return self.clone();
        };
        let upload = path.rsplit('/').next().unwrap_or_default();
        let signature: Signature = key.sign(tus_signed_text(request, upload, token).as_bytes());
        Proof {
            signature: Some(hex::encode(signature.to_bytes())),
            ..self.clone()
        }
    }

    /// The headers this proof has, by name.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        [
            ("X-Auth-Token", &self.token),
            ("X-Public-Key", &self.public_key),
            ("X-Signature", &self.signature),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.clone()?)))
        .collect()
    }

    /// Adds the headers this proof has to `request`.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.headers()
            .into_iter()
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            })
    }
}

/// A request that carries a proof's headers.
pub trait Proven {
    /// This request with the headers `proof` has.
    fn proven(self, proof: &Proof) -> Self;
}

impl Proven for reqwest::RequestBuilder {
    fn proven(self, proof: &Proof) -> Self {
        proof.apply(self)
    }
}

/// A client account with its own P-256 key.
pub struct Account {
    key: SigningKey,
    /// Upper-case hex address, computed here from the key independently.
    pub address: String,
}

impl Account {
    /// A new random account.
    pub fn new() -> Self {
        loop {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            if let Ok(key) = SigningKey::from_slice(&secret) {
                let public = key.verifying_key().to_sec1_point(false);
                let address = hex::encode_upper(&Sha256::digest(public.as_bytes())[..20]);
                return Self { key, address };
            }
        }
    }

    fn public_bytes(&self, compressed: bool) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_sec1_point(compressed)
            .as_bytes()
            .to_vec()
    }

    fn sign(&self, token: &str) -> Signature {
        self.key.sign(token.as_bytes())
    }

    /// The public clients' form: 65-byte key as hex, r‖s signature as hex.
    pub fn prove(&self, token: &str) -> Proof {
        Proof {
            token: Some(token.to_owned()),
            public_key: Some(hex::encode(self.public_bytes(false))),
            signature: Some(hex::encode(self.sign(token).to_bytes())),
            signer: Some(self.key.clone()),
        }
    }

    /// The seed's form: key and r‖s signature as base64url.
    pub fn prove_seed(&self, token: &str) -> Proof {
        Proof {
            token: Some(token.to_owned()),
            public_key: Some(URL_SAFE_NO_PAD.encode(self.public_bytes(false))),
            signature: Some(URL_SAFE_NO_PAD.encode(self.sign(token).to_bytes())),
            signer: None,
        }
    }

    /// A 33-byte compressed hex key with a DER hex signature.
    pub fn prove_compressed_der(&self, token: &str) -> Proof {
        let der: DerSignature = self.sign(token).to_der();
        Proof {
            token: Some(token.to_owned()),
            public_key: Some(hex::encode(self.public_bytes(true))),
            signature: Some(hex::encode(der.as_bytes())),
            signer: None,
        }
    }
}

/// The claims of a JWT, decoded without checking anything.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Polls `check` every 50 ms until it holds, for at most `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `n` random bytes.
pub fn random_body(n: usize) -> Vec<u8> {
    let mut body = vec![0u8; n];
    rand::rng().fill_bytes(&mut body);
    body
}

/// Upper-case hex SHA-256, computed here independently of the service.
pub fn sha256_upper(body: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(body))
}

/// The v1 upload body for `owner`.
pub fn v1_body(owner: &str, metadata: Value, data: &[u8]) -> Value {
    json!({"owner": owner, "metadata": metadata, "data": hex::encode(data)})
}

/// The JSON body of a response, with its status checked.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts an error answer: the status and a JSON body with `error`, and
/// returns its `code`.
pub async fn expect_error(response: Response, status: StatusCode) -> String {
    let body = expect_json(response, status).await;
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "no error message in {body}"
    );
    body["code"].as_str().unwrap_or_default().to_owned()
}

/// Asserts an error answer with this status and this stable `code`.
pub async fn expect_code(response: Response, status: StatusCode, code: &str) {
    assert_eq!(expect_error(response, status).await, code, "the error code");
}

/// Waits until `token` is two seconds old (by its `iat`), so that its
/// remaining lifetime is told apart from a fresh one.
pub async fn wait_until_aged(token: &str) {
    let iat = claims_of(token)["iat"].as_u64().unwrap();
    eventually(5, "the token is two seconds old", || async {
        amo_storage::state::unix_now() >= iat + 2
    })
    .await;
}

/// Asserts that a request refused after it claimed `token` gave it back:
/// its record is `issued` again, for the rest of the token's own lifetime,
/// not a fresh one. `sent` is the Unix second at which the refused request
/// was sent.
pub async fn assert_released(app: &TestApp, token: &str, sent: u64) {
    eventually(10, "the token is released", || async {
        app.token_record(token).await.as_deref() == Some("issued")
    })
    .await;
    let exp = claims_of(token)["exp"].as_u64().unwrap();
    let left = app
        .token_lifetime(token)
        .await
        .expect("a released token has a lifetime");
    assert!(
        left <= Duration::from_secs(exp - sent),
        "the released token lives {left:?}: more than its own {} s left when the request was sent",
        exp - sent
    );
    let now = amo_storage::state::unix_now();
    assert!(
        left + Duration::from_secs(2) >= Duration::from_secs(exp.saturating_sub(now)),
        "the released token lives {left:?}, less than the {} s it has left",
        exp.saturating_sub(now)
    );
}

/// The multipart uploads begun and not finished under the prefix of
/// `config`, as (key, upload id), read page by page here, independently of
/// the service; and a store to act on them with.
pub async fn s3_unfinished_uploads(
    config: &amo_storage::storage::S3Config,
) -> (S3Store, Vec<(String, String)>) {
    let store = S3Store::new(config);
    let mut found = Vec::new();
    let (mut key_marker, mut id_marker) = (None, None);
    loop {
        let page = store
            .client()
            .list_multipart_uploads()
            .bucket(store.bucket())
            .prefix(&config.prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .unwrap();
        found.extend(page.uploads().iter().map(|upload| {
            (
                upload.key().unwrap().to_owned(),
                upload.upload_id().unwrap().to_owned(),
            )
        }));
        if !page.is_truncated().unwrap_or(false) {
            return (store, found);
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
}

/// The three proof headers as raw header lines.
pub fn proof_lines(proof: &Proof) -> String {
    format!(
        "X-Auth-Token: {}\r\nX-Public-Key: {}\r\nX-Signature: {}\r\n",
        proof.token.as_deref().unwrap(),
        proof.public_key.as_deref().unwrap(),
        proof.signature.as_deref().unwrap(),
    )
}

/// The head of a raw HTTP/1.1 v2 upload of `length` bytes with `proof`.
pub fn upload_head(proof: &Proof, length: usize, connection_close: bool) -> String {
    format!(
        "POST /api/v2/parcels HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n{}\r\n",
        if connection_close {
            "Connection: close\r\n"
        } else {
            ""
        },
        proof_lines(proof)
    )
}

/// Uploads `data` for `account` through v1 with a scoped token; returns the id.
pub async fn store_parcel(app: &TestApp, account: &Account, data: &[u8]) -> String {
    let token = app
        .token(
            &account.address,
            json!({"name": "upload", "hash": sha256_upper(data)}),
        )
        .await;
    let response = app
        .upload_v1(
            Some(&account.prove(&token)),
            &v1_body(&account.address, json!({}), data),
        )
        .await;
    let body = expect_json(response, StatusCode::CREATED).await;
    body["id"].as_str().unwrap().to_owned()
}

/// The Redis keys of docs/protocol.md's table ("Redis keys"), written here
/// from the document, not with the crate's functions: a change of layout
/// fails the tests that read them.
pub mod documented_keys {
    /// `amo:token:{<jti>}`.
    pub fn token(jti: &str) -> String {
        format!("amo:token:{{{jti}}}")
    }

    /// `amo:lock:{<parcel id>}`.
    pub fn parcel_lock(id: &str) -> String {
        format!("amo:lock:{{{id}}}")
    }

    /// `amo:multipart:{<upload id>}`.
    pub fn multipart(upload_id: &str) -> String {
        format!("amo:multipart:{{{upload_id}}}")
    }

    /// `amo:upload-lock:{<upload id>}`.
    pub fn upload_lock(upload: &str) -> String {
        format!("amo:upload-lock:{{{upload}}}")
    }
}
