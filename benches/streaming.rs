//! Streaming benchmark: the service's v2 data path against the same bytes
//! sent directly to Ceph RGW with the same S3 client configuration.
//!
//! Run it with `deploy/local/bench.sh` (starts Redis and Ceph, then
//! `cargo bench --bench streaming`). It starts the release binary as a child
//! process, so the service's memory is measured alone: peak RSS growth is
//! `VmHWM` (reset through `/proc/PID/clear_refs`) minus `VmRSS` when idle.
//!
//! Knobs: `AMO_BENCH_SIZE_MIB` (default 1024), `AMO_BENCH_ROUNDS` (default 2).
//! It prints its figures and the ratios service ÷ direct; it asserts nothing.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use amo_storage::{
    config::{Settings, StoreBackend},
    domain::{Address, ParcelId, ParcelMetadata, Sha256Hex, StorageId},
    storage::{ParcelStore, S3Store, feed_of},
};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt, future::join_all, stream};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use rand::{RngCore, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
/// Size of the chunks a client sends.
const CHUNK: usize = 1024 * 1024;

/// Deterministic pseudo-random content: `size` bytes from `seed`.
#[derive(Clone, Copy)]
struct Content {
    seed: u64,
    size: u64,
}

impl Content {
    fn chunks(self) -> impl Stream<Item = Bytes> + Send {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut left = self.size;
        stream::iter(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64) as usize;
            left -= n as u64;
            let mut chunk = BytesMut::zeroed(n);
            rng.fill_bytes(&mut chunk);
            Some(chunk.freeze())
        }))
    }

    async fn sha256(self) -> String {
        let mut hasher = Sha256::new();
        let mut chunks = Box::pin(self.chunks());
        while let Some(chunk) = chunks.next().await {
            hasher.update(&chunk);
        }
        hex::encode_upper(hasher.finalize())
    }
}

/// The service, run as a child process.
struct Service {
    child: Child,
    base: String,
}

impl Service {
    fn start(prefix: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_amo-storage"))
            .arg(format!("127.0.0.1:{port}"))
            .env("AMO_S3_PREFIX", prefix)
            .env("AMO_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the service");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resets the peak (VmHWM) to the current RSS; answers the idle RSS.
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        self.status_kib("VmRSS:")
    }

    /// Peak RSS growth since `reset_peak`, in MiB.
    fn peak_growth_mib(&self, idle_kib: u64) -> f64 {
        self.status_kib("VmHWM:").saturating_sub(idle_kib) as f64 / 1024.0
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client account.
struct Client {
    key: SigningKey,
    address: String,
    public_hex: String,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        let key = SigningKey::from_slice(&[0x5a; 32]).unwrap();
        let public = key.verifying_key().to_sec1_point(false);
        Self {
            address: hex::encode_upper(&Sha256::digest(public.as_bytes())[..20]),
            public_hex: hex::encode(public.as_bytes()),
            key,
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    async fn signed(&self, operation: Value) -> [(&'static str, String); 3] {
        let answer: Value = self
            .http
            .post(format!("{}/api/v2/auth", self.base))
            .json(&json!({"user": self.address, "operation": operation}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = answer["token"].as_str().expect("a token").to_owned();
        let signature: Signature = self.key.sign(token.as_bytes());
        [
            ("X-Auth-Token", token),
            ("X-Public-Key", self.public_hex.clone()),
            ("X-Signature", hex::encode(signature.to_bytes())),
        ]
    }

    async fn upload(&self, content: Content, hash: &str) -> String {
        let mut request = self
            .http
            .post(format!("{}/api/v2/parcels", self.base))
            .header("content-type", "application/octet-stream")
            .header("content-length", content.size)
            .body(reqwest::Body::wrap_stream(
                content.chunks().map(Ok::<_, std::io::Error>),
            ));
        for (name, value) in self.signed(json!({"name": "upload", "hash": hash})).await {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "upload: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn download(&self, id: &str) -> u64 {
        let mut request = self.http.get(format!("{}/api/v2/parcels/{id}", self.base));
        for (name, value) in self.signed(json!({"name": "download", "id": id})).await {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "download: {}",
            response.status()
        );
        let mut received = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            received += chunk.unwrap().len() as u64;
        }
        received
    }
}

/// The baseline: the same bytes straight to RGW with the service's own S3
/// client configuration and part logic (one part in flight while the next
/// fills).
struct Direct {
    store: S3Store,
    part_size: usize,
    owner: Address,
}

impl Direct {
    async fn upload(&self, content: Content, hash: &str) -> ParcelId {
        let id = ParcelId::new(StorageId(1), &Sha256Hex::parse(hash).unwrap());
        let metadata = ParcelMetadata::for_owner(None, &self.owner, 8192).unwrap();
        let mut upload = self
            .store
            .start_upload(&id, &self.owner, &metadata)
            .await
            .unwrap();
        let mut buffer = BytesMut::with_capacity(self.part_size);
        let mut chunks = Box::pin(content.chunks());
        while let Some(chunk) = chunks.next().await {
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= self.part_size {
                let part = buffer.split_to(self.part_size).freeze();
                buffer.reserve(self.part_size);
                let length = part.len() as u64;
                upload.push_part(length, feed_of(part)).await.unwrap();
            }
        }
        if !buffer.is_empty() || upload.parts() == 0 {
            let length = buffer.len() as u64;
            upload
                .push_part(length, feed_of(buffer.freeze()))
                .await
                .unwrap();
        }
        upload.complete().await.unwrap();
        id
    }

    async fn download(&self, id: &ParcelId) -> u64 {
        let body = self.store.get_stream(id, None).await.unwrap().unwrap();
        body.try_fold(0u64, |n, chunk| async move { Ok(n + chunk.len() as u64) })
            .await
            .unwrap()
    }
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (settings, _) = Settings::load(None).expect(
        "settings from the environment: run deploy/local/bench.sh, or `. /tmp/amo-local/env` first",
    );
    let size = env_number("AMO_BENCH_SIZE_MIB", 1024) * MIB;
    let rounds = env_number("AMO_BENCH_ROUNDS", 2).max(1);
    let run = uuid::Uuid::new_v4();
    let service_prefix = format!("bench-{run}/service/");
    let StoreBackend::S3(s3) = &settings.store else {
        panic!("the benchmark compares with S3: set AMO_S3_ENDPOINT (deploy/local/bench.sh does)");
    };
    let mut direct_s3 = s3.clone();
    direct_s3.prefix = format!("bench-{run}/direct/");
    let direct_store = S3Store::new(&direct_s3);
    let service_store = S3Store::new(&amo_storage::storage::S3Config {
        prefix: service_prefix.clone(),
        ..s3.clone()
    });

    let service = Service::start(&service_prefix);
    let client = Client::new(&service.base);
    service.wait_ready(&client.http).await;
    let direct = Direct {
        store: direct_store.clone(),
        part_size: settings.s3_part_size_bytes,
        owner: Address::parse(&client.address).unwrap(),
    };
    println!(
        "streaming benchmark: {} MiB parcels, {rounds} rounds, part size {} MiB, service pid {}",
        size / MIB,
        settings.s3_part_size_bytes as u64 / MIB,
        service.child.id()
    );

    // Throughput, in alternation: direct and service take turns going first.
    let (mut up_service, mut up_direct, mut down_service, mut down_direct) =
        (vec![], vec![], vec![], vec![]);
    let mut rss_large = 0.0f64;
    for round in 0..rounds {
        let content = Content { seed: round, size };
        let hash = content.sha256().await;
        for service_first in [round % 2 == 0, round % 2 == 1] {
            if service_first {
                let idle = service.reset_peak();
                let (id, up) = timed(client.upload(content, &hash)).await;
                let (received, down) = timed(client.download(&id)).await;
                assert_eq!(received, size);
                rss_large = rss_large.max(service.peak_growth_mib(idle));
                up_service.push(mib_per_s(size, up));
                down_service.push(mib_per_s(size, down));
                let id = ParcelId::parse(&id).unwrap();
                service_store.delete(&id).await.unwrap();
            } else {
                let (id, up) = timed(direct.upload(content, &hash)).await;
                let (received, down) = timed(direct.download(&id)).await;
                assert_eq!(received, size);
                up_direct.push(mib_per_s(size, up));
                down_direct.push(mib_per_s(size, down));
                direct_store.delete(&id).await.unwrap();
            }
        }
        println!(
            "  round {round}: upload service {:.0} / direct {:.0} MiB/s; download service {:.0} / direct {:.0} MiB/s",
            up_service[round as usize],
            up_direct[round as usize],
            down_service[round as usize],
            down_direct[round as usize]
        );
    }

    // Memory for a 64 MiB parcel.
    let small = Content {
        seed: 1000,
        size: 64 * MIB,
    };
    let small_hash = small.sha256().await;
    let idle = service.reset_peak();
    let id = client.upload(small, &small_hash).await;
    assert_eq!(client.download(&id).await, small.size);
    let rss_small = service.peak_growth_mib(idle);
    service_store
        .delete(&ParcelId::parse(&id).unwrap())
        .await
        .unwrap();

    // Memory for 8 concurrent 128 MiB uploads.
    let many: Vec<Content> = (0..8)
        .map(|i| Content {
            seed: 2000 + i,
            size: 128 * MIB,
        })
        .collect();
    let mut hashes = Vec::new();
    for content in &many {
        hashes.push(content.sha256().await);
    }
    let idle = service.reset_peak();
    let (ids, concurrent) = timed(join_all(
        many.iter()
            .zip(&hashes)
            .map(|(content, hash)| client.upload(*content, hash)),
    ))
    .await;
    let rss_concurrent = service.peak_growth_mib(idle);
    for id in ids {
        service_store
            .delete(&ParcelId::parse(&id).unwrap())
            .await
            .unwrap();
    }

    let (us, ud, ds, dd) = (
        median(up_service),
        median(up_direct),
        median(down_service),
        median(down_direct),
    );
    println!();
    println!("| measure | service | direct to RGW | service ÷ direct |");
    println!("|---|---|---|---|");
    println!(
        "| upload {} MiB (MiB/s, median) | {us:.0} | {ud:.0} | {:.2} |",
        size / MIB,
        us / ud
    );
    println!(
        "| download {} MiB (MiB/s, median) | {ds:.0} | {dd:.0} | {:.2} |",
        size / MIB,
        ds / dd
    );
    println!();
    println!("| service peak RSS growth (VmHWM over idle) | MiB |");
    println!("|---|---|");
    println!("| one 64 MiB parcel, upload + download | {rss_small:.1} |");
    println!(
        "| one {} MiB parcel, upload + download | {rss_large:.1} |",
        size / MIB
    );
    println!(
        "| 8 concurrent 128 MiB uploads ({:.0} MiB/s together) | {rss_concurrent:.1} |",
        (8 * 128) as f64 / concurrent.as_secs_f64()
    );
}
