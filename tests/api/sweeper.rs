//! The sweeper (issue 26): it reads every page of S3's listing of
//! multipart uploads, aborts the abandoned ones, keeps a writer whose Redis
//! mark was lost while its parts keep coming, and one replica sweeps per
//! pass, at a cost of at most two Redis reads, one `ListParts` and one
//! abort per stale upload. And the bucket at start: a missing one stops the
//! start, or is created with the lifecycle rules that back the sweep up.
//!
//! Each test has a key prefix of its own (and the bucket tests buckets of
//! their own): other tests on the shared RGW are neither slowed nor swept.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use amo_storage::{
    app::{Backends, check_store_at_start},
    config::{Settings, StoreBackend},
    parcels::{SweepTiming, multipart_mark_key, sweep_pass, sweeper_lease_key},
    state::Shared,
    storage::{BucketError, MissingRules, S3Store, Store},
};
use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents, interceptors::BeforeTransmitInterceptorContextRef,
};
use futures_util::StreamExt;

use crate::{
    helpers::*,
    metrics::{sample, scrape},
    recorded_state::RecordedState,
};

/// The key of the parcel numbered `number` under `prefix`: keys sort as
/// they are numbered.
fn key_of(prefix: &str, number: usize) -> String {
    format!("{prefix}00000001{number:064X}")
}

/// The keys of every multipart upload under `config`'s prefix, read page
/// by page here, independently of the service.
async fn multipart_keys(config: &amo_storage::storage::S3Config) -> Vec<String> {
    let (_, uploads) = s3_unfinished_uploads(config).await;
    let mut keys: Vec<String> = uploads.into_iter().map(|(key, _)| key).collect();
    keys.sort();
    keys
}

/// A writer that is alive: it stores a small part of its upload every
/// second until told to stop, and answers how many it stored, or the first
/// failure.
fn keep_writing(
    store: S3Store,
    key: String,
    upload_id: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<i32, String>> {
    tokio::spawn(async move {
        let mut number = 0;
        while !stop.load(Ordering::SeqCst) {
            number += 1;
            store
                .client()
                .upload_part()
                .bucket(store.bucket())
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(random_body(1024).into())
                .send()
                .await
                .map_err(|err| format!("part {number}: {err:?}"))?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(number)
    })
}

/// Past the first page of S3's listing (1,000 multipart uploads, all marked
/// live here), the abandoned uploads are found and aborted; the live ones
/// are kept, and so is one whose Redis mark was lost (as in a failover
/// that lost writes) while its writer goes on storing parts.
#[tokio::test]
async fn the_sweep_aborts_past_the_first_page_and_keeps_a_writer_whose_mark_was_lost() {
    // Passes every 2 s; an upload unmarked and unwritten for 10 s is
    // abandoned, while the writer stores a part every second.
    let app = spawn_with(settings(&[
        ("AMO_LEASE_SECS", "4"),
        ("AMO_SWEEP_GRACE_SECS", "10"),
    ]))
    .await;
    let StoreBackend::S3(config) = &app.settings.store else {
        // The directory store has no listing pages, and no parts to date.
        return;
    };
    let store = S3Store::new(config);
    let state = app.backends.state.clone();
    const LIVE: usize = 1_000;
    const ABANDONED: usize = 50;
    // The writer's upload sorts last, past the first page too.
    let writer_key = key_of(&config.prefix, LIVE + ABANDONED);
    let writer_id = store
        .client()
        .create_multipart_upload()
        .bucket(store.bucket())
        .key(&writer_key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    // Marked live as its replica marks it, then the mark is lost.
    let mark = multipart_mark_key(&writer_id);
    assert!(
        state
            .set_new(&mark, "live", Duration::from_secs(600))
            .await
            .unwrap()
    );
    assert!(state.swap(&mark, "live", None, Duration::ZERO).await.unwrap());
    assert_eq!(state.value(&mark).await.unwrap(), None);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(
        store.clone(),
        writer_key.clone(),
        writer_id.clone(),
        stop.clone(),
    );

    let before = scrape(&app).await;
    // The live ones fill the first page; each is marked live at once, as a
    // replica marks its own.
    let live: Vec<String> = futures_util::stream::iter(0..LIVE + ABANDONED)
        .map(|number| {
            let (store, key, state) = (
                store.clone(),
                key_of(&config.prefix, number),
                state.clone(),
            );
            async move {
                let created = store
                    .client()
                    .create_multipart_upload()
                    .bucket(store.bucket())
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                if number >= LIVE {
                    return None;
                }
                let mark = multipart_mark_key(created.upload_id().unwrap());
                let held = Duration::from_secs(300);
                assert!(state.set_new(&mark, "live", held).await.unwrap());
                Some(key)
            }
        })
        .buffer_unordered(32)
        .filter_map(std::future::ready)
        .collect()
        .await;
    assert_eq!(live.len(), LIVE);

    let mut kept = live.clone();
    kept.push(writer_key.clone());
    kept.sort();
    eventually(
        120,
        "the abandoned uploads past the first page are aborted, or the writer fails",
        || async { writer.is_finished() || multipart_keys(config).await.len() <= kept.len() },
    )
    .await;
    assert!(
        !writer.is_finished(),
        "the writer stopped: {:?}",
        writer.await
    );
    assert_eq!(
        multipart_keys(config).await,
        kept,
        "the live uploads and the writer's are kept, the abandoned ones aborted"
    );
    stop.store(true, Ordering::SeqCst);
    let parts = writer.await.unwrap().expect("every part of the writer stored");
    assert!(parts >= 1);
    // Aborted here before it idles past the grace (the live ones are
    // marked for longer than the clean-up takes).
    let abort = store.client().abort_multipart_upload().bucket(store.bucket());
    let abort = abort.key(&writer_key).upload_id(&writer_id);
    abort.send().await.unwrap();
    let after = scrape(&app).await;
    let counted = |text: &str, result: &str| {
        sample(
            text,
            "amo_swept_uploads_total",
            &["sweep=\"multipart\"", &format!("result=\"{result}\"")],
        )
    };
    assert!(
        counted(&after, "swept") - counted(&before, "swept") >= ABANDONED as f64,
        "the aborts are counted"
    );
    assert!(
        counted(&after, "kept") - counted(&before, "kept") >= (LIVE + 1) as f64,
        "the uploads kept are counted"
    );

    app.lose_unfinished_uploads().await;
    assert_eq!(multipart_keys(config).await, Vec::<String>::new());
}

/// The tails of resumable uploads past the first page of S3's listing
/// (1,000 objects) are swept too, once their upload's record is gone; a
/// tail whose upload lives is kept.
#[tokio::test]
async fn the_sweep_deletes_expired_tails_past_the_first_page() {
    let app = spawn_with(settings(&[("AMO_LEASE_SECS", "2")])).await;
    let (store, state) = (app.backends.store.clone(), app.backends.state.clone());
    const EXPIRED: usize = 1_010;
    // Upload ids of this run alone, that sort as they are numbered: the
    // living one sorts last.
    let run = &uuid::Uuid::new_v4().simple().to_string()[..24];
    let upload = |number: usize| format!("{run}{number:08x}");
    let living = upload(EXPIRED);
    let record = amo_storage::parcels::upload_key(&living);
    assert!(
        state
            .set_new(&record, "{}", Duration::from_secs(300))
            .await
            .unwrap()
    );
    let before = scrape(&app).await;
    futures_util::stream::iter(0..=EXPIRED)
        .map(|number| {
            let (store, upload) = (store.clone(), upload(number));
            async move { store.put_tail(&upload, "t", random_body(16).into()).await }
        })
        .buffer_unordered(32)
        .for_each(|stored| {
            stored.expect("a tail stored");
            std::future::ready(())
        })
        .await;
    eventually(
        120,
        "only the living upload's tail is left",
        || async {
            store.tailed_uploads(Duration::ZERO).await.unwrap() == vec![living.clone()]
        },
    )
    .await;
    let after = scrape(&app).await;
    let counted = |text: &str| {
        sample(
            text,
            "amo_swept_uploads_total",
            &["sweep=\"tails\"", "result=\"swept\""],
        )
    };
    assert!(counted(&after) - counted(&before) >= EXPIRED as f64);
    store.drop_tails(&living, None).await.unwrap();
    assert!(
        state
            .swap(&record, "{}", None, Duration::ZERO)
            .await
            .unwrap()
    );
}

/// Of the replicas that share a store, one sweeps per pass: the sweeper
/// lease elects it, and holds the others off until three eighths of a
/// lease from the pass's start (docs/protocol.md, Redis key layout), which
/// the lease's remaining time right after the pass shows. A store
/// elsewhere (another prefix) has a sweeper of its own.
#[tokio::test]
async fn one_replica_sweeps_per_pass() {
    let settings = settings(&[("AMO_LEASE_SECS", "60")]);
    let first = Backends::from_settings(&settings).unwrap();
    // Two replicas: with Redis, each with a client of its own; embedded,
    // one process holds the state.
    let second = match crate::BACKEND {
        Backend::Embedded => first.clone(),
        _ => Backends::from_settings(&settings).unwrap(),
    };
    let timing = SweepTiming {
        lease: settings.lease,
        grace: settings.sweep_grace,
    };
    let before_the_pass = std::time::Instant::now();
    let (a, b) = tokio::join!(
        sweep_pass(&first.store, &first.state, timing),
        sweep_pass(&second.store, &second.state, timing)
    );
    assert!(a ^ b, "exactly one replica swept: {a}, {b}");
    // The pass is over, and the lease still holds the next one off until
    // three eighths of a lease from the pass's start: the pass started
    // after `before_the_pass`, so what is left lies between the three
    // eighths less the time since then, and the three eighths.
    let key = sweeper_lease_key(&first.store.location());
    let held = timing.lease * 3 / 8;
    let left = first
        .state
        .remaining(&key)
        .await
        .unwrap()
        .expect("the sweeper lease is held after the pass");
    let since = before_the_pass.elapsed();
    eprintln!("the sweeper lease has {left:?} left, {since:?} after the pass began");
    // Redis counts the lease in milliseconds.
    let rounding = Duration::from_millis(1);
    assert!(
        left <= held + rounding && left + since + rounding >= held,
        "the sweeper lease has {left:?} left {since:?} after the pass began; it is held \
         until {held:?} from the pass's start"
    );
    assert!(first.state.value(&key).await.unwrap().is_some());
    assert!(!sweep_pass(&first.store, &first.state, timing).await);
    assert!(!sweep_pass(&second.store, &second.state, timing).await);

    let elsewhere = Backends::from_settings(&crate::helpers::settings(&[])).unwrap();
    let elsewhere = match crate::BACKEND {
        // The same state, another directory.
        Backend::Embedded => Backends {
            state: first.state.clone(),
            ..elsewhere
        },
        _ => elsewhere,
    };
    assert!(sweep_pass(&elsewhere.store, &elsewhere.state, timing).await);
}

/// When the passes of the sweeper of `app`'s store begin, the first
/// `passes` of them seen from now: after each pass the sweeper lease says
/// `swept` and lapses three eighths of a lease from the pass's start, so
/// each expiry read (the lease's remaining time, polled) dates its pass.
async fn sweeper_pass_starts(app: &TestApp, passes: usize) -> Vec<std::time::Instant> {
    let (state, lease) = (&app.backends.state, app.settings.lease);
    let key = sweeper_lease_key(&app.backends.store.location());
    let held = lease * 3 / 8;
    let mut starts: Vec<std::time::Instant> = Vec::new();
    let deadline = std::time::Instant::now() + lease * (passes as u32 + 2);
    while starts.len() < passes {
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} sweeper passes in {:?}, not {passes}",
            starts.len(),
            lease * (passes as u32 + 2)
        );
        if state.value(&key).await.unwrap().as_deref() == Some("swept")
            && let Some(left) = state.remaining(&key).await.unwrap()
        {
            let start = std::time::Instant::now() + left - held;
            // The same pass read again dates it to within the polls' noise.
            let new_pass = starts
                .last()
                .is_none_or(|last| start > *last + lease / 4);
            if new_pass {
                starts.push(start);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    starts
}

/// The sweeper runs every half lease (docs/protocol.md, Redis key layout):
/// with a 6 s lease, successive passes of one replica begin 3 s apart:
/// within twice it, and no sooner than two thirds of it (a tick late on a
/// loaded machine makes the next gap that much shorter; two thirds still
/// fails a sweeper that runs twice as often).
#[tokio::test]
async fn the_sweeper_runs_every_half_lease() {
    let app = spawn_with(settings(&[("AMO_LEASE_SECS", "6")])).await;
    let interval = app.settings.lease / 2;
    let starts = sweeper_pass_starts(&app, 4).await;
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("sweeper passes every {interval:?}: gaps {gaps:?}");
    for gap in gaps {
        assert!(
            gap >= interval * 2 / 3 && gap < interval * 2,
            "passes {gap:?} apart, for an interval of {interval:?}"
        );
    }
}

/// A bucket name of this test alone.
fn fresh_bucket() -> String {
    format!("amo-test-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for the bucket `bucket` (and `more`), and a store on it;
/// `None` on the directory store, which creates its directory.
fn on_bucket(bucket: &str, more: &[(&str, &str)]) -> Option<(Settings, S3Store)> {
    let mut overrides = vec![("AMO_S3_BUCKET", bucket)];
    overrides.extend_from_slice(more);
    let settings = settings(&overrides);
    let StoreBackend::S3(config) = &settings.store else {
        return None;
    };
    let store = S3Store::new(config);
    Some((settings, store))
}

/// Whether the bucket of `store` exists.
async fn exists(store: &S3Store) -> bool {
    let head = store.client().head_bucket().bucket(store.bucket());
    head.send().await.is_ok()
}

/// Deletes the (empty) bucket of `store`.
async fn delete_bucket(store: &S3Store) {
    let delete = store.client().delete_bucket().bucket(store.bucket());
    delete.send().await.unwrap();
}

/// A missing bucket stops the start, unless `AMO_S3_CREATE_BUCKET` is set:
/// then the service creates it, with the lifecycle rules that back the
/// sweep up, and starts.
#[tokio::test]
async fn a_missing_bucket_stops_the_start_or_is_created_with_its_rules() {
    let bucket = fresh_bucket();
    let Some((missing, store)) = on_bucket(&bucket, &[]) else {
        return;
    };
    match check_store_at_start(&missing).await {
        Err(BucketError::Missing { bucket: named }) => assert_eq!(named, bucket),
        other => panic!("a missing bucket must stop the start, not {other:?}"),
    }
    assert!(!exists(&store).await, "nothing created it");

    // (Each settings have a key prefix of their own: the rules are this
    // one's.)
    let (creating, created) = on_bucket(&bucket, &[("AMO_S3_CREATE_BUCKET", "true")]).unwrap();
    check_store_at_start(&creating).await.expect("created");
    assert!(exists(&store).await);
    assert_eq!(
        created.missing_rules().await.unwrap(),
        MissingRules {
            abort_incomplete: false,
            token_markers: false
        },
        "the bucket it created has both lifecycle rules"
    );
    // Started again, it finds the bucket there.
    check_store_at_start(&creating).await.expect("there");
    delete_bucket(&store).await;
}

/// A bucket without lifecycle rules is named as lacking both (the start
/// warns of each, and goes on).
#[tokio::test]
async fn a_bucket_without_lifecycle_rules_lacks_both() {
    let bucket = fresh_bucket();
    let Some((settings, store)) = on_bucket(&bucket, &[]) else {
        return;
    };
    let create = store.client().create_bucket().bucket(&bucket);
    create.send().await.unwrap();
    assert_eq!(
        store.missing_rules().await.unwrap(),
        MissingRules {
            abort_incomplete: true,
            token_markers: true
        }
    );
    // Another prefix's rules do not cover this one's.
    let (_, other) = on_bucket(&bucket, &[]).unwrap();
    other
        .client()
        .put_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .lifecycle_configuration(other.lifecycle_rules())
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.missing_rules().await.unwrap(),
        MissingRules {
            abort_incomplete: true,
            token_markers: true
        },
        "the rules of another prefix"
    );
    assert_eq!(
        other.missing_rules().await.unwrap(),
        MissingRules {
            abort_incomplete: false,
            token_markers: false
        }
    );
    check_store_at_start(&settings)
        .await
        .expect("missing rules only warn");
    delete_bucket(&store).await;
}

/// The binary itself refuses to start on a missing bucket, and says which.
#[tokio::test]
async fn the_binary_exits_on_a_missing_bucket_naming_it() {
    let bucket = fresh_bucket();
    let env = env_for(crate::BACKEND, &[("AMO_S3_BUCKET", &bucket)]);
    if !env.contains_key("AMO_S3_ENDPOINT") {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_amo-storage"))
        .arg("127.0.0.1:0")
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting amo-storage");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the service did not exit within 60 s: it started without its bucket");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exited.code(), Some(1));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains(&bucket) && log.contains("AMO_S3_CREATE_BUCKET"),
        "{log}"
    );
}

/// The S3 requests of one store, each named by its method and the
/// operation its query names (S3's REST API, not the SDK's names): every
/// attempt is one request.
#[derive(Debug, Default, Clone)]
struct S3Requests(Arc<Mutex<Vec<&'static str>>>);

impl S3Requests {
    /// The requests sent so far, as operation names.
    fn sent(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }

    /// How many of the requests sent were `operation`.
    fn count(&self, operation: &str) -> usize {
        self.sent().iter().filter(|sent| **sent == operation).count()
    }
}

impl Intercept for S3Requests {
    fn name(&self) -> &'static str {
        "S3Requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let request = context.request();
        let query = request.uri().split_once('?').map_or("", |(_, query)| query);
        let has = |name: &str| {
            query
                .split('&')
                .any(|pair| pair == name || pair.starts_with(&format!("{name}=")))
        };
        let operation = match request.method() {
            "GET" if has("uploadId") => "ListParts",
            "GET" if has("uploads") => "ListMultipartUploads",
            "GET" if has("list-type") => "ListObjectsV2",
            "DELETE" if has("uploadId") => "AbortMultipartUpload",
            _ => "other",
        };
        self.0.lock().unwrap().push(operation);
        Ok(())
    }
}

/// docs/threat-model.md, "Fill the bucket": a pass costs at most two Redis
/// reads, one `ListParts` and one abort per stale upload. One pass over
/// abandoned uploads, live ones (their mark held) and ones whose parcel's
/// write lock is held, its calls counted one by one: each abandoned upload
/// costs exactly two reads (its mark, its lock), one `ListParts` and one
/// abort; a live one one read; a locked one two reads; and nothing else
/// touches an upload's key.
#[tokio::test]
async fn a_pass_costs_two_redis_reads_one_list_parts_and_one_abort_per_stale_upload() {
    const ABANDONED: usize = 6;
    const LIVE: usize = 4;
    const LOCKED: usize = 3;
    let settings = settings(&[]);
    let StoreBackend::S3(config) = &settings.store else {
        // The directory store has no ListParts: it dates an upload by its file.
        return;
    };
    let backends = Backends::from_settings(&settings).unwrap();
    let s3 = S3Store::new(config);
    // A short lease makes the uploads stale soon; no grace: an unmarked,
    // unlocked upload is abandoned at once.
    let timing = SweepTiming {
        lease: Duration::from_secs(2),
        grace: Duration::ZERO,
    };
    let mut uploads = Vec::new();
    // Live marks and write locks held, to be let go at the end.
    let mut held_keys = Vec::new();
    for number in 0..ABANDONED + LIVE + LOCKED {
        // Parcel ids of this run alone: write locks are not per prefix.
        let key = format!("{}00000001{}", config.prefix, sha256_upper(&random_body(32)));
        let created = s3
            .client()
            .create_multipart_upload()
            .bucket(s3.bucket())
            .key(&key)
            .send()
            .await
            .unwrap();
        let upload_id = created.upload_id().unwrap().to_owned();
        let held = Duration::from_secs(300);
        if (ABANDONED..ABANDONED + LIVE).contains(&number) {
            let mark = documented_keys::multipart(&upload_id);
            assert!(backends.state.set_new(&mark, "live", held).await.unwrap());
            held_keys.push((mark, "live"));
        } else if number >= ABANDONED + LIVE {
            let id = key.strip_prefix(&config.prefix).unwrap();
            let lock = documented_keys::parcel_lock(id);
            assert!(backends.state.set_new(&lock, "claimed:another", held).await.unwrap());
            held_keys.push((lock, "claimed:another"));
        }
        uploads.push((key, upload_id));
    }
    eventually(30, "every upload is older than the lease", || async {
        backends.store.stale_uploads(timing.lease).await.unwrap().len() == uploads.len()
    })
    .await;

    let requests = S3Requests::default();
    let store: Store = Arc::new(S3Store::new(config).with_interceptor(requests.clone()));
    let state = RecordedState::new(backends.state.clone());
    let shared: Shared = state.clone();
    assert!(sweep_pass(&store, &shared, timing).await, "this pass swept");

    let sent = requests.sent();
    assert_eq!(requests.count("ListMultipartUploads"), 1, "{sent:?}");
    assert_eq!(requests.count("ListObjectsV2"), 1, "the tails' listing: {sent:?}");
    assert_eq!(requests.count("ListParts"), ABANDONED, "{sent:?}");
    assert_eq!(requests.count("AbortMultipartUpload"), ABANDONED, "{sent:?}");
    assert_eq!(sent.len(), 2 + 2 * ABANDONED, "no other S3 request: {sent:?}");

    let calls = state.calls();
    let lease = sweeper_lease_key(&store.location());
    for (number, (key, upload_id)) in uploads.iter().enumerate() {
        let id = key.strip_prefix(&config.prefix).unwrap();
        let touching: Vec<_> = calls
            .iter()
            .filter(|call| {
                call.key == documented_keys::multipart(upload_id)
                    || call.key == documented_keys::parcel_lock(id)
            })
            .collect();
        let reads = if (ABANDONED..ABANDONED + LIVE).contains(&number) {
            1
        } else {
            2
        };
        assert_eq!(touching.len(), reads, "upload {number}: {touching:?}");
        assert!(
            touching.iter().all(|call| call.operation == "value"),
            "upload {number}: only reads, {touching:?}"
        );
    }
    let reads = calls.iter().filter(|call| call.operation == "value");
    assert_eq!(reads.count(), 2 * ABANDONED + LIVE + 2 * LOCKED, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|call| call.operation == "value" || call.key == lease),
        "every other Redis call is the sweeper lease's: {calls:?}"
    );

    // The live and locked uploads are kept.
    let mut kept: Vec<String> = uploads[ABANDONED..].iter().map(|(key, _)| key.clone()).collect();
    kept.sort();
    assert_eq!(multipart_keys(config).await, kept);
    for (key, upload_id) in &uploads[ABANDONED..] {
        let abort = s3.client().abort_multipart_upload().bucket(s3.bucket());
        abort.key(key).upload_id(upload_id).send().await.unwrap();
    }
    for (key, value) in held_keys {
        let gone = backends.state.swap(&key, value, None, Duration::ZERO);
        assert!(gone.await.unwrap(), "{key} let go");
    }
}
