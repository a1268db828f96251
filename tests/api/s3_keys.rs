//! S3 keys reloaded without a restart, on the real Ceph RGW: a second key of
//! the service's RGW user is made with `radosgw-admin` (and removed after);
//! a replica whose key file is rewritten switches keys for new requests,
//! keeps its keys when the file holds none, and answers 503 JSON, never
//! 500, while the keys it holds are refused. Each reload is awaited by
//! watching the replica's reload counts, never by sleeping.

use std::{path::Path, process::Command, time::Duration};

use reqwest::StatusCode;
use rustix::process::{Signal, getpid, kill_process};
use serde_json::json;

use amo_storage::storage::{Reloads, S3Keys};

use crate::helpers::*;

/// A `radosgw-admin` command on the local Ceph of deploy/local/ceph.sh.
fn admin_command(args: &[&str]) -> Command {
    let dir = std::env::var("AMO_LOCAL_DIR").unwrap_or_else(|_| "/tmp/amo-local".into());
    let mut command = Command::new("radosgw-admin");
    command
        .arg("-c")
        .arg(Path::new(&dir).join("ceph/ceph.conf"))
        .args(args);
    command
}

/// Runs `radosgw-admin`; fails the test when it fails.
fn radosgw_admin(args: &[&str]) -> std::process::Output {
    let output = admin_command(args)
        .output()
        .expect("radosgw-admin (deploy/local/install.sh installs it)");
    assert!(
        output.status.success(),
        "radosgw-admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A second S3 key of the service's RGW user, removed on drop.
struct SecondKey {
    user: String,
    access_key: String,
    secret_key: String,
}

impl SecondKey {
    fn create(user: &str) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let key = Self {
            user: user.to_owned(),
            access_key: format!("AMOTEST{}", &unique[..13]),
            secret_key: format!("test-secret-{unique}"),
        };
        radosgw_admin(&[
            "key",
            "create",
            &format!("--uid={user}"),
            "--key-type=s3",
            &format!("--access-key={}", key.access_key),
            &format!("--secret-key={}", key.secret_key),
        ]);
        key
    }

    fn json(&self) -> String {
        json!({"access_key": self.access_key, "secret_key": self.secret_key}).to_string()
    }
}

impl Drop for SecondKey {
    fn drop(&mut self) {
        let _ = admin_command(&[
            "key",
            "rm",
            &format!("--uid={}", self.user),
            "--key-type=s3",
            &format!("--access-key={}", self.access_key),
        ])
        .output();
    }
}

/// The RGW user that owns `access_key`.
fn user_of(access_key: &str) -> String {
    let output = radosgw_admin(&["user", "info", &format!("--access-key={access_key}")]);
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    info["user_id"].as_str().unwrap().to_owned()
}

/// Replaces the file at `path` with `text` the way the kubelet updates a
/// mounted Secret: written aside, then renamed over it.
fn rewrite(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Waits until the replica's reload counts are `expected`.
async fn reloaded(keys: &S3Keys, expected: Reloads) {
    let mut reloads = keys.reloads();
    tokio::time::timeout(
        Duration::from_secs(30),
        reloads.wait_for(|now| *now == expected),
    )
    .await
    .unwrap_or_else(|_| panic!("no reload to {expected:?}: {:?}", *keys.reloads().borrow()))
    .unwrap();
}

/// A replica on a key file of its own (holding the suite's keys), read
/// again every `poll_secs`; the file, and the suite's key file's text.
async fn replica(dir: &Path, poll_secs: &str) -> (TestApp, std::path::PathBuf, String) {
    let suite_keys = std::fs::read_to_string(&backend_env()["AMO_KEY_FILE"]).unwrap();
    let file = dir.join("key.json");
    std::fs::write(&file, &suite_keys).unwrap();
    let path = file.display().to_string();
    let app = spawn_with(settings(&[
        ("AMO_KEY_FILE", path.as_str()),
        ("AMO_KEY_FILE_POLL_SECS", poll_secs),
    ]))
    .await;
    (app, file, suite_keys)
}

#[tokio::test]
async fn a_rewritten_key_file_switches_the_s3_keys_without_a_restart() {
    if crate::BACKEND == Backend::Embedded {
        return; // no S3 keys
    }
    let dir = tempfile::tempdir().unwrap();
    let (app, file, first_keys) = replica(dir.path(), "1").await;
    let keys = app.backends.s3_keys.clone().expect("an S3 store has keys");
    let first_access = keys.access_key();
    let second = SecondKey::create(&user_of(&first_access));
    let owner = Account::new();
    let before = app.store_v2(&owner, &random_body(1_000)).await;

    // The second key: new requests sign with it and are served.
    rewrite(&file, &second.json());
    reloaded(&keys, Reloads { applied: 1, refused: 0 }).await;
    assert_eq!(keys.access_key(), second.access_key);
    let data = random_body(2_000);
    let id = app.store_v2(&owner, &data).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
    assert_eq!(app.fetch_v2(&owner, &before).await.len(), 1_000);

    // A file without valid keys: logged, counted, and the keys stay. Only
    // this test writes a bad key file: the process-wide count is its own.
    let refusals = || async {
        crate::metrics::sample(
            &crate::metrics::scrape(&app).await,
            "amo_s3_key_reloads_total",
            &["outcome=\"refused\""],
        )
    };
    let refused_before = refusals().await;
    rewrite(&file, r#"{"access_key": "#);
    reloaded(&keys, Reloads { applied: 1, refused: 1 }).await;
    assert_eq!(refusals().await, refused_before + 1.0);
    assert_eq!(keys.access_key(), second.access_key);
    assert_eq!(app.fetch_v2(&owner, &id).await, data);

    // Keys RGW refuses: uploads and downloads fail cleanly, 503 in JSON.
    rewrite(
        &file,
        &json!({"access_key": second.access_key, "secret_key": "not-the-secret"}).to_string(),
    );
    reloaded(&keys, Reloads { applied: 2, refused: 1 }).await;
    let refused = random_body(500);
    let (_, proof) = app.upload_token(&owner, &refused).await;
    let response = app.upload_v2(Some(&proof), refused.clone(), None).await;
    expect_code(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let response = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    expect_code(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    // Restored: served again.
    rewrite(&file, &first_keys);
    reloaded(&keys, Reloads { applied: 3, refused: 1 }).await;
    assert_eq!(keys.access_key(), first_access);
    let id = app.store_v2(&owner, &refused).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, refused);
}

#[tokio::test]
async fn sighup_reloads_the_s3_keys() {
    if crate::BACKEND == Backend::Embedded {
        return; // no S3 keys
    }
    let dir = tempfile::tempdir().unwrap();
    // Polled once at start, then only on SIGHUP.
    let (app, file, _) = replica(dir.path(), "86400").await;
    let keys = app.backends.s3_keys.clone().expect("an S3 store has keys");
    let second = SecondKey::create(&user_of(&keys.access_key()));
    rewrite(&file, &second.json());
    // The replica listens for SIGHUP from its bind on: it cannot kill the
    // test process.
    kill_process(getpid(), Signal::HUP).unwrap();
    reloaded(&keys, Reloads { applied: 1, refused: 0 }).await;
    assert_eq!(keys.access_key(), second.access_key);
    let owner = Account::new();
    let data = random_body(1_500);
    let id = app.store_v2(&owner, &data).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}
