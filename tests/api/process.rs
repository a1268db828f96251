//! The service as a real process: what only a process can show. A SIGKILL
//! in the middle of an upload leaves no partial parcel after a restart (and
//! the directory store cleans its temporary files at start), and one
//! between a token's mark and its commit leaves the token spent; a SIGTERM lets
//! an upload in flight finish, turns readiness off at once and exits 0; the
//! logs carry request ids and never a token, a signature or a secret.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use amo_storage::{app::Backends, state::ISSUED};
use reqwest::StatusCode;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use tokio::sync::mpsc as channel;

use crate::{
    helpers::*,
    marks::{jti_of, request_holder, token_mark},
    metrics::{sample, scrape},
};

/// The fault proxy of tests/faults, here between a replica process and
/// RGW, to hold a commit.
#[path = "../faults/proxy.rs"]
#[allow(dead_code)] // this suite uses one of its modes
mod proxy;

/// How long the drain tests keep a request in flight after SIGTERM (the
/// drain timeout is 30 s).
const HOLD: Duration = Duration::from_secs(2);

/// A running `amo-storage` process and the JSON log lines it wrote.
pub struct ServiceProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl ServiceProcess {
    /// Starts the binary with `env` (and nothing else of the test's
    /// environment) on a port it picks, and waits until `/readyz` is 200.
    pub async fn start(env: &HashMap<String, String>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amo-storage"))
            .arg("127.0.0.1:0")
            .env_clear()
            .envs(env)
            .env("AMO_LOG_FORMAT", "json")
            .env("AMO_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting amo-storage");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, address) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                        panic!("a log line that is not JSON: {line}");
                    };
                    if entry["message"] == "amo-storage listening" {
                        let _ = listening.send(entry["addr"].as_str().unwrap_or("").to_owned());
                    }
                    logs.lock().unwrap().push(entry);
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the service logged no listening address within 30 s");
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        eventually(30, "the process is ready", || {
            let request = http.get(format!("{base}/readyz")).send();
            async move { request.await.is_ok_and(|answer| answer.status().is_success()) }
        })
        .await;
        Self { child, base, logs }
    }

    /// A test app that talks to this process over HTTP, on `backends`.
    pub fn app(&self, env: &HashMap<String, String>, backends: Backends) -> TestApp {
        let settings = amo_storage::config::Settings::load_from(None, env.clone())
            .expect("settings")
            .0;
        TestApp {
            base: self.base.clone(),
            settings,
            backends,
            http: reqwest::Client::new(),
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_child(&self.child);
        kill_process(pid, signal).unwrap_or_else(|err| panic!("kill({pid:?}, {signal:?}): {err}"));
    }

    /// Waits (up to `seconds`) for the process to exit, and its exit code.
    pub async fn exit_code(mut self, seconds: u64) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process did not exit within {seconds} s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("waiting for the child").is_none()
    }

    /// Holds a request in flight `HOLD` past a SIGTERM: the process must
    /// still be running then, draining.
    pub async fn still_draining_after_hold(&mut self) {
        tokio::time::sleep(HOLD).await;
        assert!(self.running(), "the process exited within {HOLD:?} of SIGTERM, mid-request");
    }

    pub fn log_lines(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A field of `/proc/PID/status`, in KiB (`VmHWM:` is the peak RSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the service's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Resets the process's peak RSS (`VmHWM`) to its RSS now (Linux
    /// `clear_refs` 5), so that a later peak is one's own.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("resetting the service's peak RSS");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of one service process and the backends that see what
/// it stores: the shared Redis and S3 prefix on the real pair; on the
/// embedded pair only HTTP tells (the state is inside the process), so the
/// test app's own backends are a scratch pair.
pub fn process_env() -> (HashMap<String, String>, Backends) {
    process_env_with(&[])
}

/// [`process_env`] with `overrides` (pairs of `AMO_*` names and values).
pub fn process_env_with(overrides: &[(&str, &str)]) -> (HashMap<String, String>, Backends) {
    let env = env_for(crate::BACKEND, overrides);
    let backends = match crate::BACKEND {
        Backend::Real | Backend::RealCluster => Backends::from_settings(
            &amo_storage::config::Settings::load_from(None, env.clone())
                .unwrap()
                .0,
        ),
        Backend::Embedded => Backends::from_settings(&settings(&[])),
    }
    .expect("backends");
    (env, backends)
}

/// The directory-store files under the process's data directory.
fn parcel_files(env: &HashMap<String, String>) -> Vec<String> {
    let dir = PathBuf::from(&env["AMO_DATA_DIR"]).join("parcels");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Feeds the body of an upload in flight.
pub type BodySender = channel::Sender<Result<Vec<u8>, std::io::Error>>;

/// The answer of an upload in flight.
pub type PendingAnswer = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// Starts a v2 upload whose body the returned sender feeds.
pub fn streamed_upload(app: &TestApp, proof: &Proof) -> (BodySender, PendingAnswer) {
    let (sender, receiver) = channel::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ));
    let request = app
        .http
        .post(format!("{}/api/v2/parcels", app.base))
        .header("content-type", "application/octet-stream")
        .proven(proof)
        .body(body);
    (sender, tokio::spawn(request.send()))
}

const MIB: usize = 1 << 20;

/// The smallest S3 part: a declared length past it is a multipart upload
/// when `AMO_S3_SINGLE_PUT_MAX_BYTES` is one part.
const PART: usize = 5 * MIB;

#[tokio::test]
async fn a_sigkill_mid_upload_leaves_no_partial_parcel_after_a_restart() {
    // The dead replica's upload is aborted once S3 saw no part of it for
    // the grace.
    let (env, backends) = process_env_with(&[("AMO_SWEEP_GRACE_SECS", "5")]);
    let first = ServiceProcess::start(&env).await;
    let app = first.app(&env, backends.clone());
    let owner = Account::new();
    let data = random_body(24 * MIB);
    let id = format!("00000001{}", sha256_upper(&data));
    let (_, proof) = app.upload_token(&owner, &data).await;
    let (sender, upload) = streamed_upload(&app, &proof);
    for chunk in data[..16 * MIB].chunks(MIB) {
        sender.send(Ok(chunk.to_vec())).await.unwrap();
    }
    // The upload is really under way: bytes are in storage.
    match crate::BACKEND {
        Backend::Embedded => {
            eventually(30, "a temporary upload file holds bytes", || async {
                parcel_files(&env).iter().any(|name| name.starts_with(".upload-"))
            })
            .await
        }
        Backend::Real | Backend::RealCluster => {
            eventually(30, "a multipart upload has started", || async {
                !app.multipart_uploads().await.is_empty()
            })
            .await
        }
    }
    first.signal(Signal::KILL);
    assert_eq!(first.exit_code(10).await, None, "killed by a signal");
    assert!(upload.await.unwrap().is_err(), "the client saw the connection die");
    drop(sender);

    let second = ServiceProcess::start(&env).await;
    let app = second.app(&env, backends);
    let answer = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
    expect_code(answer, StatusCode::NOT_FOUND, "not_found").await;
    match crate::BACKEND {
        Backend::Embedded => assert_eq!(
            parcel_files(&env),
            Vec::<String>::new(),
            "the restart removed the temporary file and no parcel file exists"
        ),
        // The dead replica's mark expires (30 s) and the sweeper of the new
        // one aborts its multipart upload (every 15 s).
        Backend::Real | Backend::RealCluster => {
            eventually(90, "the abandoned multipart upload is aborted", || async {
                app.multipart_uploads().await.is_empty()
            })
            .await;
            assert_eq!(app.stored_keys().await, Vec::<String>::new());
        }
    }
    // And the same content can be stored whole afterwards.
    let stored = app.store_v2(&owner, &data).await;
    assert_eq!(stored, id);
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

#[tokio::test]
async fn a_sigterm_lets_the_upload_in_flight_finish_then_exits_0() {
    let (env, backends) = process_env();
    let mut service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends.clone());
    let owner = Account::new();
    let data = random_body(12 * MIB);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let (sender, upload) = streamed_upload(&app, &proof);
    let (head, tail) = data.split_at(6 * MIB);
    for chunk in head.chunks(MIB) {
        sender.send(Ok(chunk.to_vec())).await.unwrap();
    }
    until_received(&app, head.len()).await;
    service.signal(Signal::TERM);
    readiness_is_off(&app).await;
    service.still_draining_after_hold().await;
    // The upload in flight finishes.
    for chunk in tail.chunks(MIB) {
        sender.send(Ok(chunk.to_vec())).await.unwrap();
    }
    drop(sender);
    let answer = upload.await.unwrap().expect("the upload's answer");
    let id = expect_json(answer, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(service.exit_code(30).await, Some(0), "a drained exit is 0");

    // What it stored is there, whole, for the next replica.
    let next = ServiceProcess::start(&env).await;
    let app = next.app(&env, backends);
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

/// `AMO_DRAIN_GRACE_SECS` (docs/operations.md): after SIGTERM the replica
/// keeps accepting for the grace, answering `/readyz` 503 on every new
/// connection, then stops accepting while a request in flight drains. The
/// listener closes no sooner than the grace, and within twice it.
#[tokio::test]
async fn the_drain_grace_keeps_accepting_for_its_length_then_closes() {
    const GRACE: Duration = Duration::from_secs(2);
    let (env, backends) = process_env_with(&[("AMO_DRAIN_GRACE_SECS", "2")]);
    let mut service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(2 * MIB);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let (sender, upload) = streamed_upload(&app, &proof);
    sender.send(Ok(data[..MIB].to_vec())).await.unwrap();
    until_received(&app, MIB).await;
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    service.signal(Signal::TERM);
    let signalled = std::time::Instant::now();
    let mut last_answer = None;
    let closed = loop {
        match probe.get(format!("{}/readyz", app.base)).send().await {
            Ok(answer) => {
                let at = signalled.elapsed();
                // The first probe may come before the process handled the
                // signal; every later one is 503.
                if answer.status() != StatusCode::OK {
                    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
                }
                last_answer = Some(at);
            }
            Err(err) if err.is_connect() => break signalled.elapsed(),
            // A connection the kernel accepted into the backlog just as the
            // listener closed is reset before its answer: that, too, is the
            // listener closing (a refusal before the grace still fails
            // below).
            Err(err) => {
                eprintln!("a probe was cut as the listener closed: {err:?}");
                break signalled.elapsed();
            }
        }
        assert!(
            signalled.elapsed() < GRACE * 5,
            "still accepting {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    eprintln!("drain grace {GRACE:?}: last /readyz answered {last_answer:?}, refused from {closed:?} after SIGTERM");
    assert!(last_answer.is_some(), "no probe answered within the grace");
    // The grace starts once the process handles the signal, after it was
    // sent: a refusal sooner than the grace is a shorter grace.
    assert!(
        closed >= GRACE,
        "the listener closed {closed:?} after SIGTERM (last answer {last_answer:?}), before the grace of {GRACE:?}"
    );
    assert!(closed <= GRACE * 2, "the listener closed {closed:?} after SIGTERM");
    assert!(service.running(), "the process exited with an upload in flight");
    sender.send(Ok(data[MIB..].to_vec())).await.unwrap();
    drop(sender);
    let answer = upload.await.unwrap().expect("the upload's answer");
    expect_json(answer, StatusCode::CREATED).await;
    assert_eq!(service.exit_code(30).await, Some(0), "a drained exit is 0");
}

/// Waits until the process has read `bytes` parcel bytes (its own
/// `amo_parcel_bytes_received_total`): the upload has really started.
async fn until_received(app: &TestApp, bytes: usize) {
    eventually(30, "the service has read the body sent so far", || async {
        sample(&scrape(app).await, "amo_parcel_bytes_received_total", &[]) >= bytes as f64
    })
    .await;
}

/// After a SIGTERM the replica is not ready: for `AMO_DRAIN_GRACE_SECS` it
/// still accepts, and `/readyz` answers 503 on a new connection (a probe
/// sees it leave, not a refused connection). It never answers 200 again.
async fn readiness_is_off(app: &TestApp) {
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    eventually(10, "readiness is off", || {
        let request = probe.get(format!("{}/readyz", app.base)).send();
        async move {
            match request.await {
                Ok(answer) => {
                    let status = answer.status();
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a draining /readyz");
                    true
                }
                Err(err) => panic!("within the grace, /readyz must answer: {err}"),
            }
        }
    })
    .await;
}

/// A download in flight at SIGTERM (the service has sent part of it, the
/// client has not read the rest) completes, whole; then the process exits 0.
#[tokio::test]
async fn a_sigterm_lets_the_download_in_flight_finish_then_exits_0() {
    let (env, backends) = process_env();
    let mut service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(48 * MIB);
    let id = app.store_v2(&owner, &data).await;
    let token = app
        .token(&owner.address, serde_json::json!({"name": "download", "id": id}))
        .await;
    let mut answer = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let mut received = answer.chunk().await.unwrap().expect("a first chunk").to_vec();
    let sent = sample(&scrape(&app).await, "amo_parcel_bytes_sent_total", &[]);
    assert!(
        sent > 0.0 && sent < data.len() as f64,
        "the download is not in flight: {sent} of {} bytes sent",
        data.len()
    );
    service.signal(Signal::TERM);
    readiness_is_off(&app).await;
    service.still_draining_after_hold().await;
    while let Some(chunk) = answer.chunk().await.expect("the download goes on") {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), data.len());
    assert!(received == data, "the downloaded body differs");
    assert_eq!(service.exit_code(30).await, Some(0), "a drained exit is 0");
}

/// A request still running when `AMO_DRAIN_TIMEOUT_SECS` ends is cut, and
/// the process exits 0 all the same, once the drain timeout has passed.
#[tokio::test]
async fn a_request_that_outlives_the_drain_is_cut_and_the_process_still_exits_0() {
    const DRAIN: Duration = Duration::from_secs(2);
    let (env, backends) = process_env_with(&[("AMO_DRAIN_TIMEOUT_SECS", "2")]);
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(2 * MIB);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let (sender, upload) = streamed_upload(&app, &proof);
    sender.send(Ok(data[..MIB].to_vec())).await.unwrap();
    until_received(&app, MIB).await;
    let signalled = std::time::Instant::now();
    service.signal(Signal::TERM);
    // The client sends nothing more and keeps the request open.
    let code = service.exit_code(DRAIN.as_secs() + 10).await;
    let took = signalled.elapsed();
    eprintln!("drain of {DRAIN:?} with a request that outlives it: exited {code:?} after {took:?}");
    assert_eq!(code, Some(0), "the process exits 0 after a drain that timed out");
    assert!(
        took >= DRAIN - Duration::from_millis(100),
        "exited after {took:?}, before the drain timeout of {DRAIN:?}"
    );
    assert!(
        took <= DRAIN + Duration::from_secs(3),
        "exited {took:?} after SIGTERM, for a drain timeout of {DRAIN:?}"
    );
    let cut = upload.await.unwrap();
    assert!(cut.is_err(), "the cut upload answered: {:?}", cut.map(|r| r.status()));
    drop(sender);
    // Nothing was stored, and the token was not used up.
    let id = format!("00000001{}", sha256_upper(&data));
    match crate::BACKEND {
        Backend::Embedded => assert!(!parcel_files(&env).contains(&id), "the cut parcel is stored"),
        Backend::Real | Backend::RealCluster => {
            assert_eq!(app.stored_keys().await, Vec::<String>::new());
            // Given back before the exit: `issued`, not a claim that would
            // lapse and take the token with it.
            let record = app.token_record(&token).await;
            assert_eq!(record.as_deref(), Some("issued"), "the cut request's token");
        }
    }
}

#[tokio::test]
async fn logs_carry_request_ids_and_never_a_token_a_signature_or_a_secret() {
    // A JWT secret of this test's own, on every backend pair.
    let jwt_secret = format!("logs-test-secret-{}", uuid::Uuid::new_v4().simple());
    let (env, backends) = process_env_with(&[("AMO_JWT_SECRET", &jwt_secret)]);
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(4096);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let request_id = format!("test-{}", uuid::Uuid::new_v4());
    let answer = app
        .http
        .post(format!("{}/api/v2/parcels", app.base))
        .header("content-type", "application/octet-stream")
        .header("X-Request-Id", &request_id)
        .proven(&proof)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], request_id.as_str());
    let id = expect_json(answer, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A refused request too: its token is in the log's reach.
    let refused = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    let generated = refused.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!generated.is_empty(), "a request id is generated when none is sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "an upload token cannot remove");
    assert_eq!(app.fetch_v2(&owner, &id).await, data);

    let logs = service.log_lines();
    let ours: Vec<&Value> = logs
        .iter()
        .filter(|line| request_id_of(line) == Some(request_id.as_str()))
        .collect();
    assert!(
        ours.iter().any(|line| line["status"] == 201),
        "the upload's answer line carries its request id: {ours:?}"
    );
    assert!(
        logs.iter()
            .any(|line| request_id_of(line) == Some(generated.as_str())),
        "the refused request's lines carry the generated id"
    );
    // Every line of our code written inside a request names its request id.
    for line in &logs {
        let ours = line["target"]
            .as_str()
            .is_some_and(|target| target.starts_with("amo_storage"));
        let in_a_request = line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["name"] == "request"));
        if ours && line.get("spans").is_some() || in_a_request {
            assert!(
                request_id_of(line).is_some(),
                "a request's line without a request id: {line}"
            );
        }
    }
    let text: String = logs.iter().map(|line| format!("{line}\n")).collect();
    let signature = proof.signature.as_deref().unwrap();
    let jwt_signature = token.rsplit('.').next().unwrap();
    let mut secrets = vec![
        ("the token", token.as_str()),
        ("the token's signature part", jwt_signature),
        ("the proof signature", signature),
    ];
    secrets.push(("the JWT secret", jwt_secret.as_str()));
    // The S3 secret: on the real pair the service signs with it; the
    // embedded pair has none.
    let s3_secret = match crate::BACKEND {
        Backend::Real | Backend::RealCluster => {
            let path = env
                .get("AMO_KEY_FILE")
                .expect("the real backends name their AMO_KEY_FILE");
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|err| panic!("cannot read the S3 key file {path}: {err}"));
            let key: Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("the S3 key file {path} is not JSON: {err}"));
            let secret = key["secret_key"].as_str().map(str::to_owned);
            Some(secret.unwrap_or_else(|| panic!("no secret_key in {path}")))
        }
        Backend::Embedded => None,
    };
    if let Some(value) = &s3_secret {
        secrets.push(("the S3 secret key", value.as_str()));
    }
    for (what, secret) in secrets {
        assert!(
            !text.to_lowercase().contains(&secret.to_lowercase()),
            "{what} appears in the logs"
        );
    }
}

/// The request id of a JSON log line, from the spans it was written in.
fn request_id_of(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|span| span["request_id"].as_str())
}

/// docs/reliability.md, "Exactly once across a failover": a replica that
/// dies between the mark and the effect leaves its token spent. RGW (behind
/// a proxy) takes the upload's parts and its token's mark, and is never
/// sent the `CompleteMultipartUpload`; the replica is SIGKILLed. A
/// failover then brings the token's record back to `issued`: on a fresh
/// replica the token answers 401 `token_used`, and nothing is stored.
#[tokio::test]
async fn a_replica_killed_between_the_mark_and_the_commit_leaves_its_token_spent() {
    if crate::BACKEND == Backend::Embedded {
        // No RGW to hold the commit.
        return;
    }
    let part = PART.to_string();
    let (env, backends) = process_env_with(&[
        ("AMO_S3_SINGLE_PUT_MAX_BYTES", part.as_str()),
        ("AMO_S3_PART_SIZE_BYTES", part.as_str()),
    ]);
    let rgw = url::Url::parse(&env["AMO_S3_ENDPOINT"]).unwrap();
    let rgw = rgw.socket_addrs(|| None).unwrap()[0];
    let proxy = proxy::FaultProxy::start(rgw, proxy::Mode::HoldCompletions).await;
    let mut held_env = env.clone();
    let endpoint = format!("http://{}", proxy.addr());
    held_env.insert("AMO_S3_ENDPOINT".into(), endpoint);
    let first = ServiceProcess::start(&held_env).await;
    // Requests go to the process; the test reads RGW directly.
    let app = first.app(&env, backends.clone());
    let owner = Account::new();
    let data = random_body(PART + 1024);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let jti = jti_of(&token);
    let upload = app
        .http
        .post(format!("{}/api/v2/parcels", app.base))
        .header("content-type", "application/octet-stream")
        .proven(&proof)
        .body(data.clone());
    let upload = tokio::spawn(upload.send());
    tokio::time::timeout(Duration::from_secs(60), proxy.until_a_request_is_held())
        .await
        .expect("the upload's CompleteMultipartUpload reached the proxy within 60 s");
    request_holder(token_mark(&app, &jti).await, "the upload held at its commit");
    let record = app.token_record(&token).await.expect("the token's record");
    assert!(record.starts_with("claimed:"), "the upload holds its token: {record}");
    first.signal(Signal::KILL);
    assert_eq!(first.exit_code(10).await, None, "killed by a signal");
    assert!(upload.await.unwrap().is_err(), "the client saw the connection die");

    // A failover that lost the use: the record is `issued` again, and the
    // parcel's write lock, taken later, is lost too.
    let key = documented_keys::token(&jti);
    let back = backends.state.swap(&key, &record, Some(ISSUED), Duration::from_secs(60));
    assert!(back.await.unwrap(), "the record put back to issued");
    let id = format!("00000001{}", sha256_upper(&data));
    let lock = documented_keys::parcel_lock(&id);
    let locked = backends.state.value(&lock).await.unwrap();
    let locked = locked.expect("the dead replica held the parcel's write lock");
    let lost = backends.state.swap(&lock, &locked, None, Duration::ZERO);
    assert!(lost.await.unwrap(), "the write lock lost");
    let second = ServiceProcess::start(&env).await;
    let app = second.app(&env, backends);
    let answer = app.upload_v2(Some(&proof), data.clone(), None).await;
    expect_code(answer, StatusCode::UNAUTHORIZED, "token_used").await;
    let inspect = app.get(&format!("/api/v2/parcels/{id}/metadata")).await;
    expect_code(inspect, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.stored_keys().await, Vec::<String>::new());
    // The dead replica's parts (the sweep would abort them).
    app.lose_unfinished_uploads().await;
}
