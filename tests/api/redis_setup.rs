//! What Redis must be, and how the service logs in to it, seen from the
//! process: start-up refuses a Redis that may evict keys (naming the
//! setting), a Redis that refuses `CONFIG` is reported and used, and a Redis
//! password (from its file or in the URL) never shows in the logs, the
//! answers or `Debug` output.
//!
//! The Redis of the first two tests is a `redis-server` of the test's own,
//! a child process on a Unix socket in a temporary directory (no port, so
//! parallel runs never collide), configured as each test needs. Only the
//! real suite runs them (`main.rs`): they need Debian's `redis-server`.
//! Run behind Sentinel (`deploy/local/redis-sentinel.sh`), they still use
//! their own server: a test's `AMO_REDIS_URL` drops the sentinels
//! (`env_for`). The third test keeps them: the master they name refuses it.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{helpers::*, process::ServiceProcess};

/// A `redis-server` child on a Unix socket, stopped when dropped.
struct OwnRedis {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts `redis-server` with `args` beside the socket and no
    /// persistence; returns once it logs that it accepts connections.
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("redis.sock");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (deploy/local/install.sh installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            // "Ready to accept connections", or (a Unix socket only) "The
            // server is now ready to accept connections at …".
            if line.to_lowercase().contains("ready to accept connections") {
                // Its later lines are read and dropped, so it never blocks.
                std::thread::spawn(move || lines.for_each(drop));
                return Self {
                    child,
                    socket,
                    _dir: dir,
                };
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server exited before accepting connections: {seen:#?}");
    }

    /// `AMO_REDIS_URL` for it.
    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Runs `redis-cli` on it with `args`; panics unless it answers OK.
    fn cli(&self, args: &[&str]) {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running redis-cli");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert_eq!(answer.trim(), "OK", "redis-cli {args:?}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of a service process on `redis` (the real S3 beside it),
/// with `overrides`.
fn env_on(redis: &OwnRedis, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let url = redis.url();
    let mut all = vec![("AMO_REDIS_URL", url.as_str())];
    all.extend_from_slice(overrides);
    let mut env = env_for(crate::BACKEND, &all);
    for name in ["AMO_REDIS_USERNAME", "AMO_REDIS_PASSWORD_FILE"] {
        if !overrides.iter().any(|(set, _)| *set == name) {
            env.remove(name);
        }
    }
    env
}

/// Runs the service with `env` until it exits (at most 30 s); its exit
/// code and stderr.
async fn run_to_exit(env: HashMap<String, String>) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amo-storage"))
            .arg("127.0.0.1:0")
            .env_clear()
            .envs(&env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting amo-storage");
        let mut stderr = child.stderr.take().expect("piped stderr");
        // Reading to the end waits for the process to close stderr: to exit.
        let (done, exited) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let _ = done.send(());
            text
        });
        if exited.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the service still ran after 30 s: {}",
                reader.join().unwrap()
            );
        }
        let code = child.wait().expect("waiting for amo-storage").code();
        (code, reader.join().unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn start_up_refuses_a_redis_that_may_evict_keys_unless_allowed() {
    let redis = OwnRedis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let (code, stderr) = run_to_exit(env_on(&redis, &[])).await;
    assert_eq!(
        code,
        Some(2),
        "the service ran on an allkeys-lru Redis: {stderr}"
    );
    assert!(
        stderr.contains("maxmemory-policy is allkeys-lru")
            && stderr.contains("noeviction")
            && stderr.contains("AMO_REDIS_ALLOW_EVICTION"),
        "the refusal names the setting, the value, and the override: {stderr}"
    );

    // Allowed: it starts, and reports the policy.
    let env = env_on(&redis, &[("AMO_REDIS_ALLOW_EVICTION", "true")]);
    let service = ServiceProcess::start(&env).await;
    let body = expect_json(backends_status(&service).await, StatusCode::OK).await;
    assert_eq!(
        body["redis"][0]["maxmemory_policy"], "allkeys-lru",
        "{body}"
    );
    assert_eq!(body["redis"][0]["aof"], false, "{body}");
    assert_eq!(body["redis"][0]["connected_replicas"], 0, "{body}");
    drop(service);

    // On noeviction it starts; an evicting policy set while it runs makes
    // /status/backends answer 503, naming it.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let service = ServiceProcess::start(&env_on(&redis, &[])).await;
    let body = expect_json(backends_status(&service).await, StatusCode::OK).await;
    assert_eq!(body["redis"][0]["maxmemory_policy"], "noeviction", "{body}");
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]);
    let problem = expect_json(
        backends_status(&service).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        problem["error"]
            .as_str()
            .is_some_and(|text| text.contains("maxmemory-policy is volatile-ttl")),
        "{problem}"
    );
}

async fn backends_status(service: &ServiceProcess) -> reqwest::Response {
    reqwest::get(format!("{}/status/backends", service.base))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redis_that_refuses_config_is_reported_and_used_with_its_acl_user() {
    let redis = OwnRedis::start(&[]);
    let password = format!("acl-{}", uuid::Uuid::new_v4().simple());
    redis.cli(&[
        "ACL",
        "SETUSER",
        "amo-limited",
        "on",
        &format!(">{password}"),
        "~*",
        "&*",
        "+@all",
        "-config",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let env = env_on(
        &redis,
        &[
            ("AMO_REDIS_USERNAME", "amo-limited"),
            ("AMO_REDIS_PASSWORD_FILE", file.to_str().unwrap()),
        ],
    );
    let service = ServiceProcess::start(&env).await;
    let logs = service.log_lines();
    assert!(
        logs.iter().any(|line| line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|text| text.contains("refuses CONFIG"))),
        "the refused CONFIG is logged: {logs:#?}"
    );
    let body = expect_json(backends_status(&service).await, StatusCode::OK).await;
    let node = &body["redis"][0];
    assert!(
        node["config_refused"]
            .as_str()
            .is_some_and(|text| text.to_lowercase().contains("noperm")),
        "{body}"
    );
    assert!(node.get("maxmemory_policy").is_none(), "{body}");
    // It works as that user: a token is issued and recorded.
    let app = service.app(&env, backends_of(&env));
    let owner = Account::new();
    let token = app
        .token(&owner.address, serde_json::json!("download"))
        .await;
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    assert_no_secret(&logs, &[("the ACL password", &password)]);
}

#[tokio::test]
async fn a_wrong_redis_password_never_shows_in_logs_answers_or_debug_output() {
    let env = env_for(crate::BACKEND, &[]);
    let file_secret = format!("file-secret-{}", uuid::Uuid::new_v4().simple());
    let url_secret = format!("url-secret-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, &file_secret).unwrap();
    // The suite's own Redis, as a user that does not exist, with one
    // password in the URL and another in the file (which wins).
    let mut url = url::Url::parse(&env["AMO_REDIS_URL"]).expect("a single-server URL");
    url.set_username("amo-nobody").unwrap();
    url.set_password(Some(&url_secret)).unwrap();
    let mut overrides = vec![
        ("AMO_REDIS_URL", url.as_str()),
        ("AMO_REDIS_USERNAME", "amo-nobody"),
        ("AMO_REDIS_PASSWORD_FILE", file.to_str().unwrap()),
    ];
    // Behind Sentinel (deploy/local/redis-sentinel.sh), the URL gives only
    // the login: the master the sentinels name refuses it.
    for name in ["AMO_REDIS_SENTINELS", "AMO_REDIS_SENTINEL_MASTER"] {
        if let Some(value) = env.get(name) {
            overrides.push((name, value.as_str()));
        }
    }
    let env = env_for(crate::BACKEND, &overrides);
    let secrets = [
        ("the password of the file", file_secret.as_str()),
        ("the password in the URL", url_secret.as_str()),
    ];
    let (settings, warnings) =
        amo_storage::config::Settings::load_from(None, env.clone()).expect("settings");
    let shown = format!("{settings:?} {warnings:?}");
    for (what, secret) in secrets {
        assert!(
            !shown.contains(secret),
            "{what} shows in Debug output: {shown}"
        );
    }

    let service = ServiceProcess::start(&env).await;
    let mut answers = String::new();
    let status = backends_status(&service).await;
    assert_eq!(status.status(), StatusCode::SERVICE_UNAVAILABLE);
    answers.push_str(&status.text().await.unwrap());
    let auth = reqwest::Client::new()
        .post(format!("{}/api/v2/auth", service.base))
        .json(&serde_json::json!({
            "user": Account::new().address,
            "operation": "download",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), StatusCode::SERVICE_UNAVAILABLE);
    answers.push_str(&auth.text().await.unwrap());
    assert!(
        answers.contains("authentication failed"),
        "the answers say why Redis failed: {answers}"
    );
    for (what, secret) in secrets {
        assert!(
            !answers.contains(secret),
            "{what} shows in an answer: {answers}"
        );
    }
    assert_no_secret(&service.log_lines(), &secrets);
}

/// The backends a test app of `env` inspects the state through.
fn backends_of(env: &HashMap<String, String>) -> amo_storage::app::Backends {
    let settings = amo_storage::config::Settings::load_from(None, env.clone())
        .expect("settings")
        .0;
    amo_storage::app::Backends::from_settings(&settings).expect("backends")
}

fn assert_no_secret(logs: &[Value], secrets: &[(&str, &str)]) {
    assert!(!logs.is_empty(), "the service logged nothing");
    let text: String = logs.iter().map(|line| format!("{line}\n")).collect();
    for (what, secret) in secrets {
        assert!(!text.contains(secret), "{what} shows in the logs");
    }
}
