//! One OSD of three SIGKILLed while 4 clients upload and download parcels
//! of 1-64 MiB; then started again (empty: memstore), under the same load.
//!
//! Every upload that answered an id downloads byte for byte at the end;
//! every failed upload left no object and no multipart upload; every
//! failure is a 503 with `Retry-After`, none past the S3 timeout; the
//! service carries on without a restart. The figures are printed.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Replica, S3_TIMEOUT, ceph3, ceph3_settings, helpers::*, retry_after};

const MIB: usize = 1024 * 1024;
/// Parcels are 1 to 64 MiB.
const MAX_PARCEL: usize = 64 * MIB;
const CLIENTS: usize = 4;
/// Uploads that must succeed in each phase (before the kill, after it,
/// after the revive), counting only those begun in the phase.
const PER_PHASE: usize = 8;
/// The OSD killed.
const VICTIM: &str = "osd.1";
/// The longest any request may take: a 64 MiB transfer on a busy 2-core
/// box, plus the S3 timeout.
const HANG: Duration = Duration::from_secs(60);

/// What happened to one request.
#[derive(Debug, Clone)]
struct Event {
    what: &'static str,
    started: Instant,
    took: Duration,
    /// The status, or 0 for a body cut short after a 200.
    status: u16,
    retry_after: Option<u64>,
}

/// What the clients share.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<Event>>,
}

impl Log {
    fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    /// Uploads begun at or after `since` that answered 201, and when the
    /// first of them ended.
    fn uploads_since(&self, since: Instant) -> (usize, Option<Duration>) {
        let events = self.events.lock().unwrap();
        let done: Vec<&Event> = events
            .iter()
            .filter(|e| e.what == "upload" && e.status == 201 && e.started >= since)
            .collect();
        let first = done
            .iter()
            .map(|e| (e.started + e.took).duration_since(since))
            .min();
        (done.len(), first)
    }
}

/// A token for `operation`, asked again after a 503 (recorded) once its
/// `Retry-After` passed.
async fn token(app: &TestApp, log: &Log, owner: &Account, operation: Value) -> String {
    loop {
        let started = Instant::now();
        let response = app
            .auth_raw(json!({"user": owner.address, "operation": operation}))
            .await;
        let status = response.status();
        if status == StatusCode::OK {
            return expect_json(response, StatusCode::OK).await["token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        let retry = retry_after(&response);
        log.record(Event {
            what: "auth",
            started,
            took: started.elapsed(),
            status: status.as_u16(),
            retry_after: retry,
        });
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a token request answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
    }
}

/// Of `events`, those in flight at `at`: how many, and how many of them
/// succeeded.
fn in_flight_at(events: &[Event], at: Instant) -> (usize, usize) {
    let across: Vec<&Event> = events
        .iter()
        .filter(|e| e.started < at && e.started + e.took > at)
        .collect();
    let ok = across
        .iter()
        .filter(|e| matches!(e.status, 200 | 201 | 204))
        .count();
    (across.len(), ok)
}

/// How long after `at` the first request begun then succeeded (ended).
fn first_success_after(events: &[Event], at: Instant) -> Option<Duration> {
    events
        .iter()
        .filter(|e| e.started >= at && matches!(e.status, 200 | 201 | 204))
        .map(|e| (e.started + e.took).duration_since(at))
        .min()
}

/// A client's parcels still stored, the ids of its failed uploads, and
/// those whose upload or remove answered 503 `outcome_unknown`: S3 got the
/// write and did not confirm it in time, so it may have happened
/// (docs/protocol.md): stored or not, they are checked at the end.
struct ClientEnd {
    owner: Account,
    live: Vec<String>,
    failed: Vec<String>,
    uncertain: Vec<String>,
}

/// The error code of an error answer.
async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap_or_default();
    body["code"].as_str().unwrap_or_default().to_owned()
}

/// Downloads `id` and checks it against its id's SHA-256 and `size`:
/// `Ok(status)` (200 checked, or an error status), or `Err` for a body cut
/// short (the client saw it: never a short body that looks complete).
async fn download(
    app: &TestApp,
    log: &Log,
    owner: &Account,
    id: &str,
    size: usize,
) -> (u16, Option<u64>, bool) {
    let token = token(app, log, owner, json!({"name": "download", "id": id})).await;
    let mut response = app.download_v2(Some(&owner.prove(&token)), id, None).await;
    let status = response.status().as_u16();
    if status != 200 {
        return (status, retry_after(&response), false);
    }
    let mut hasher = Sha256::new();
    let mut received = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len();
                hasher.update(&chunk);
            }
            Ok(None) => break,
            // Cut short: the client knows (Content-Length not reached).
            Err(_) => return (0, None, received < size),
        }
    }
    assert_eq!(received, size, "parcel {id}: a complete-looking short body");
    assert_eq!(
        hex::encode_upper(hasher.finalize()),
        id[8..],
        "parcel {id} differs"
    );
    (200, None, true)
}

async fn client(app: Arc<Replica>, log: Arc<Log>, stop: Arc<AtomicBool>) -> ClientEnd {
    let owner = Account::new();
    let mut live: VecDeque<(String, usize)> = VecDeque::new();
    let mut failed = Vec::new();
    let mut uncertain = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let size = rand::rng().random_range(MIB..=MAX_PARCEL);
        let (data, hash) = tokio::task::spawn_blocking(move || {
            let data = random_body(size);
            let hash = sha256_upper(&data);
            (data, hash)
        })
        .await
        .unwrap();
        let id = format!("00000001{hash}");
        let upload = token(&app, &log, &owner, json!({"name": "upload", "hash": hash})).await;
        let proof = owner.prove(&upload);
        let started = Instant::now();
        let response = tokio::time::timeout(HANG, app.upload_v2(Some(&proof), data, None))
            .await
            .unwrap_or_else(|_| panic!("an upload of {size} bytes hung for {HANG:?}"));
        let status = response.status();
        log.record(Event {
            what: "upload",
            started,
            took: started.elapsed(),
            status: status.as_u16(),
            retry_after: retry_after(&response),
        });
        match status {
            StatusCode::CREATED => {
                let body = expect_json(response, StatusCode::CREATED).await;
                assert_eq!(body["id"], json!(id));
                live.push_back((id, size));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                if error_code(response).await == "outcome_unknown" {
                    uncertain.push(id);
                } else {
                    failed.push(id);
                }
            }
            other => panic!(
                "an upload answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        let Some((oldest, oldest_size)) = live.front().cloned() else {
            continue;
        };
        let started = Instant::now();
        let (status, retry, whole) =
            tokio::time::timeout(HANG, download(&app, &log, &owner, &oldest, oldest_size))
                .await
                .unwrap_or_else(|_| panic!("a download of {oldest_size} bytes hung for {HANG:?}"));
        log.record(Event {
            what: "download",
            started,
            took: started.elapsed(),
            status,
            retry_after: retry,
        });
        assert!(
            matches!(status, 0 | 200 | 503),
            "a download answered {status}"
        );
        assert!(status != 0 || whole, "a cut body looked complete");
        if status == 200 && live.len() > 2 {
            // Checked whole just now: remove it, to bound Ceph's memory.
            let token = token(&app, &log, &owner, json!({"name": "remove", "id": oldest})).await;
            let started = Instant::now();
            let response = app.remove_v2(Some(&owner.prove(&token)), &oldest).await;
            let status = response.status().as_u16();
            log.record(Event {
                what: "remove",
                started,
                took: started.elapsed(),
                status,
                retry_after: retry_after(&response),
            });
            assert!(matches!(status, 204 | 503), "a remove answered {status}");
            if status == 204 {
                live.pop_front();
            } else if error_code(response).await == "outcome_unknown" {
                // It may have removed the parcel: never expect it again.
                let (id, _) = live.pop_front().unwrap();
                uncertain.push(id);
            }
        }
    }
    ClientEnd {
        owner,
        live: live.into_iter().map(|(id, _)| id).collect(),
        failed,
        uncertain,
    }
}

/// Waits until `PER_PHASE` uploads begun at or after `since` succeeded;
/// answers when the first of them ended (from `since`).
async fn phase(log: &Log, since: Instant, what: &str) -> Duration {
    let deadline = since + Duration::from_secs(180);
    loop {
        let (done, first) = log.uploads_since(since);
        if done >= PER_PHASE {
            return first.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {done} uploads succeeded in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(after) => after.as_secs_f64(),
        None => -from.duration_since(to).as_secs_f64(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_killed_under_load_loses_nothing_and_the_service_carries_on() {
    let app = Arc::new(
        Replica::start(
            ceph3_settings(&[("AMO_LEASE_SECS", "5"), ("AMO_SWEEP_GRACE_SECS", "5")]).await,
        )
        .await,
    );
    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(app.clone(), log.clone(), stop.clone())))
        .collect();

    phase(&log, began, "before the kill").await;
    let killed = Instant::now();
    tokio::task::spawn_blocking(|| ceph3(&["kill", VICTIM]))
        .await
        .unwrap();
    let recovered = phase(&log, killed, "after the kill").await;
    let revived = Instant::now();
    let revive_took = tokio::task::spawn_blocking(|| ceph3(&["revive", VICTIM]))
        .await
        .unwrap();
    let recovered_again = phase(&log, revived, "after the revive").await;
    stop.store(true, Ordering::Relaxed);
    let mut ends = Vec::new();
    for client in clients {
        ends.push(client.await.unwrap());
    }
    let load_took = began.elapsed();

    // Every failure a 503 with Retry-After, none past the S3 timeout (on
    // top of its own transfer: the longest success is the yardstick).
    let events = log.events.lock().unwrap().clone();
    let longest_ok = events
        .iter()
        .filter(|e| matches!(e.status, 200 | 201 | 204))
        .map(|e| e.took)
        .max()
        .unwrap();
    let failures: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e.status, 200 | 201 | 204))
        .collect();
    for failure in &failures {
        if failure.status == 503 {
            assert!(
                failure.retry_after.is_some_and(|secs| secs >= 1),
                "a 503 without Retry-After: {failure:?}"
            );
        }
        assert!(
            failure.took <= S3_TIMEOUT + longest_ok,
            "a failure past the S3 timeout: {failure:?}"
        );
    }

    // Every upload that answered an id downloads byte for byte; nothing
    // else is stored, no multipart upload is left.
    let mut lost = 0;
    let mut expected = BTreeSet::new();
    for end in &ends {
        for id in &end.live {
            let data = app.fetch_v2(&end.owner, id).await;
            if sha256_upper(&data) != id[8..] {
                lost += 1;
            }
            expected.insert(id.clone());
        }
    }
    let stored: BTreeSet<String> = app.stored_keys().await.into_iter().collect();
    // What answered `outcome_unknown` may be stored or not; stored, it is
    // whole, and it is removed with the rest at the end.
    let mut settled_uncertain = Vec::new();
    for end in &mut ends {
        for id in std::mem::take(&mut end.uncertain) {
            if stored.contains(&id) {
                let data = app.fetch_v2(&end.owner, &id).await;
                if sha256_upper(&data) != id[8..] {
                    lost += 1;
                }
                expected.insert(id.clone());
                end.live.push(id.clone());
            }
            settled_uncertain.push(id);
        }
    }
    let failed: Vec<&String> = ends.iter().flat_map(|end| &end.failed).collect();
    eventually(30, "no multipart upload is left", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;

    let count = |what: &str, ok: u16| {
        let all: Vec<&Event> = events.iter().filter(|e| e.what == what).collect();
        let good = all.iter().filter(|e| e.status == ok).count();
        (all.len(), good, all.len() - good)
    };
    let (_, _, auth_failed) = count("auth", 200);
    let (uploads, created, upload_failed) = count("upload", 201);
    let (downloads, downloaded, download_failed) = count("download", 200);
    let (removes, removed, remove_failed) = count("remove", 204);
    let slowest = events.iter().map(|e| e.took).max().unwrap();
    let (across_kill, across_kill_ok) = in_flight_at(&events, killed);
    let (across_revive, across_revive_ok) = in_flight_at(&events, revived);
    let any_after_kill = first_success_after(&events, killed).unwrap();
    let any_after_revive = first_success_after(&events, revived).unwrap();
    eprintln!(
        "{VICTIM} SIGKILLed under {CLIENTS} clients of 1-{} MiB parcels ({load_took:.0?} of load):\n  \
         token requests answered 503: {auth_failed}; uploads {uploads}: {created} answered \
         an id, {upload_failed} failed; downloads \
         {downloads}: {downloaded} whole, {download_failed} failed; removes {removes}: \
         {removed} done, {remove_failed} failed\n  \
         failures: {:?}\n  \
         at the kill {across_kill} requests were in flight, {across_kill_ok} of them \
         succeeded; the first request begun after the kill succeeded {any_after_kill:.1?} \
         after it, the first upload {recovered:.1?} after it\n  \
         the OSD revived (empty) in {revive_took:.1?}; {across_revive} requests in flight \
         then, {across_revive_ok} succeeded; the first request begun after it succeeded \
         {any_after_revive:.1?} after it, the first upload {recovered_again:.1?}\n  \
         slowest request {slowest:.1?} (S3 timeout {S3_TIMEOUT:?}); {} parcels checked byte \
         for byte at the end, lost {lost}; answered outcome_unknown (stored or not, \
         checked): {settled_uncertain:?}",
        MAX_PARCEL / MIB,
        failures
            .iter()
            .map(|e| format!(
                "{} {} (Retry-After {:?}) begun {:+.1} s from the kill, took {:.1?}",
                e.what,
                e.status,
                e.retry_after,
                seconds_between(killed, e.started),
                e.took
            ))
            .collect::<Vec<_>>(),
        expected.len(),
    );
    assert_eq!(lost, 0, "parcels that answered an id do not download whole");
    assert_eq!(
        stored, expected,
        "what is stored is not exactly what answered an id (failed: {failed:?})"
    );
    for end in ends {
        for id in &end.live {
            let token = app
                .token(&end.owner.address, json!({"name": "remove", "id": id}))
                .await;
            let response = app.remove_v2(Some(&end.owner.prove(&token)), id).await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        }
    }
}
