//! Fault tests on a real three-OSD Ceph (`deploy/local/ceph3.sh`: one mon,
//! three memstore OSDs, pools of size 3 and min_size 2, a short heartbeat
//! grace) with the Redis of `deploy/local/up.sh`:
//!
//! - one OSD SIGKILLed while 4 clients upload and download parcels of
//!   1-64 MiB, then started again;
//! - the RGW killed and started again in the middle of a 256 MiB download.
//!
//! They kill and revive Ceph daemons, so they run one at a time, by
//! `tests/ceph3/run.sh`, which starts the cluster, runs
//! `cargo test --test ceph3 -- --test-threads=1 --nocapture` and stops it.
//! Without the cluster every test fails, saying so. `cargo test` alone does
//! not build this target (`test = false` in Cargo.toml).

/// The shared test support (tests/support), on the real Redis and Ceph
/// RGW.
mod helpers {
    pub use amo_test_support::*;

    /// Settings for a test app on the real backends, with `overrides`.
    pub fn settings(overrides: &[(&str, &str)]) -> amo_storage::config::Settings {
        settings_for(Backend::Real, overrides)
    }
}

mod osd_loss;
mod rgw_restart;

use std::{
    collections::HashMap,
    ops::Deref,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use amo_storage::config::Settings;
use reqwest::Response;

/// How long one S3 call may take in these tests (503 past it).
pub const S3_TIMEOUT: Duration = Duration::from_secs(10);

/// The three-OSD cluster's state directory.
fn ceph3_dir() -> PathBuf {
    std::env::var("AMO_CEPH3_DIR")
        .unwrap_or_else(|_| "/tmp/amo-ceph3".into())
        .into()
}

/// The `AMO_S3_*` settings of the three-OSD cluster, from the env file its
/// script writes; fails the test, saying why, when it is not running.
fn ceph3_env() -> HashMap<String, String> {
    let path = ceph3_dir().join("env");
    let vars = helpers::env_file(&path).unwrap_or_else(|err| {
        panic!(
            "the three-OSD Ceph is not running ({}: {err}): run tests/ceph3/run.sh, or \
             deploy/local/ceph3.sh start first",
            path.display()
        )
    });
    vars.into_iter().collect()
}

/// Runs `deploy/local/ceph3.sh` with `args`; fails the test if it fails.
pub fn ceph3(args: &[&str]) -> Duration {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/ceph3.sh");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run deploy/local/ceph3.sh");
    assert!(
        output.status.success(),
        "deploy/local/ceph3.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// Makes sure the cluster runs whole (every daemon up; a fresh cluster if
/// one was missing), and answers settings of a replica on it with
/// `overrides`.
pub async fn ceph3_settings(overrides: &[(&str, &str)]) -> Settings {
    let env = ceph3_env();
    let started = tokio::task::spawn_blocking(|| ceph3(&["start"]))
        .await
        .unwrap();
    eprintln!("three-OSD Ceph whole after {started:.1?}");
    let timeout = S3_TIMEOUT.as_secs().to_string();
    let mut all = vec![
        ("AMO_S3_ENDPOINT", env["AMO_S3_ENDPOINT"].as_str()),
        ("AMO_S3_BUCKET", env["AMO_S3_BUCKET"].as_str()),
        ("AMO_KEY_FILE", env["AMO_KEY_FILE"].as_str()),
        ("AMO_S3_TIMEOUT_SECS", timeout.as_str()),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ];
    all.extend_from_slice(overrides);
    helpers::settings(&all)
}

/// A replica on a runtime of its own, so that the test's clients (which
/// make and hash parcels of up to 64 MiB) do not hold up its timers.
pub struct Replica {
    app: helpers::TestApp,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    /// Starts a replica with `settings` on two worker threads of its own.
    pub async fn start(settings: Settings) -> Self {
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the replica");
            let app = runtime.block_on(helpers::spawn_with(settings));
            Self {
                app,
                runtime: Some(runtime),
            }
        })
        .await
        .unwrap()
    }
}

impl Deref for Replica {
    type Target = helpers::TestApp;

    fn deref(&self) -> &helpers::TestApp {
        &self.app
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The `Retry-After` of `response`, in seconds.
pub fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}
