//! Resumable (tus) uploads against v2 single-request uploads, in the same
//! run, through the same service process: throughput, and the service's
//! peak RSS growth during each (`VmHWM`, reset through
//! `/proc/PID/clear_refs`, minus `VmRSS` when idle).
//!
//! Run it with `. /tmp/amo-local/env; cargo bench --bench resumable` (the
//! real Redis and Ceph RGW of `deploy/local/up.sh`). It starts the binary as
//! a child process, so the service's memory is measured alone. Knobs:
//! `AMO_BENCH_SIZE_MIB` (default 1024), `AMO_BENCH_PATCH_MIB` (the bytes of
//! one PATCH, default 64), `AMO_BENCH_ROUNDS` (default 2). It prints its
//! figures and the ratio resumable ÷ v2; it asserts nothing.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use rand::{RngCore, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
/// The service's part size (its default).
const PART_MIB: f64 = 8.0;

/// A source of pseudo-random content, read in order across requests.
type Source = std::sync::Arc<std::sync::Mutex<SmallRng>>;

fn source(seed: u64) -> Source {
    std::sync::Arc::new(std::sync::Mutex::new(SmallRng::seed_from_u64(seed)))
}

/// The next `length` bytes of `source`, in 1 MiB chunks.
fn chunks(source: Source, length: u64) -> impl Stream<Item = Bytes> + Send {
    let mut left = length;
    stream::iter(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(MIB);
        left -= n;
        let mut chunk = BytesMut::zeroed(n as usize);
        source.lock().unwrap().fill_bytes(&mut chunk);
        Some(chunk.freeze())
    }))
}

async fn sha256(seed: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut body = Box::pin(chunks(source(seed), size));
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk);
    }
    hex::encode_upper(hasher.finalize())
}

/// The service, run as a child process, and a client of it.
struct Service {
    child: Child,
    base: String,
    http: reqwest::Client,
    key: SigningKey,
    address: String,
    public_hex: String,
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
        let key = SigningKey::from_slice(&[0x5b; 32]).unwrap();
        let public = key.verifying_key().to_sec1_point(false);
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            address: hex::encode_upper(&Sha256::digest(public.as_bytes())[..20]),
            public_hex: hex::encode(public.as_bytes()),
            key,
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "the service is not ready");
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

    /// Resets the peak RSS; answers the idle RSS.
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        self.status_kib("VmRSS:")
    }

    fn peak_growth_mib(&self, idle_kib: u64) -> f64 {
        self.status_kib("VmHWM:").saturating_sub(idle_kib) as f64 / 1024.0
    }

    /// A signed token for `operation`, as the three proof headers.
    async fn signed(&self, operation: Value) -> Vec<(&'static str, String)> {
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
        vec![
            ("X-Auth-Token", token),
            ("X-Public-Key", self.public_hex.clone()),
            ("X-Signature", hex::encode(signature.to_bytes())),
        ]
    }

    fn with(
        mut request: reqwest::RequestBuilder,
        headers: &[(&'static str, String)],
    ) -> reqwest::RequestBuilder {
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request
    }

    /// One v2 request; answers the parcel id.
    async fn upload_v2(&self, seed: u64, size: u64, hash: &str) -> String {
        let proof = self.signed(json!({"name": "upload", "hash": hash})).await;
        let request = self
            .http
            .post(format!("{}/api/v2/parcels", self.base))
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(
                chunks(source(seed), size).map(Ok::<_, std::io::Error>),
            ));
        let response = Self::with(request, &proof).send().await.unwrap();
        assert!(response.status().is_success(), "v2: {}", response.status());
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// A tus upload in PATCHes of `patch` bytes; answers the parcel id.
    async fn upload_resumable(&self, seed: u64, size: u64, hash: &str, patch: u64) -> String {
        let proof = self.signed(json!({"name": "upload", "hash": hash})).await;
        let request = self
            .http
            .post(format!("{}/api/v2/uploads", self.base))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", size);
        let created = Self::with(request, &proof).send().await.unwrap();
        assert_eq!(created.status().as_u16(), 201, "creation");
        let url = format!(
            "{}{}",
            self.base,
            created.headers()["location"].to_str().unwrap()
        );
        let content = source(seed);
        let upload = url.rsplit('/').next().unwrap().to_owned();
        let mut offset = 0;
        let mut sequence = 0u64;
        let mut id = None;
        while offset < size {
            let length = patch.min(size - offset);
            let request = self
                .http
                .patch(&url)
                .header("Tus-Resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("Upload-Offset", offset)
                .header("X-Upload-Sequence", sequence)
                .header("content-length", length)
                .body(reqwest::Body::wrap_stream(
                    chunks(content.clone(), length).map(Ok::<_, std::io::Error>),
                ));
            // A request on an upload signs itself (docs/protocol.md).
            let token = &proof[0].1;
            let text = format!("PATCH\n{upload}\n{offset}\n{sequence}\n{token}");
            let signature: Signature = self.key.sign(text.as_bytes());
            let signed = [
                proof[0].clone(),
                proof[1].clone(),
                ("X-Signature", hex::encode(signature.to_bytes())),
            ];
            let response = Self::with(request, &signed).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 204, "PATCH at {offset}");
            let number =
                |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
            offset = number("upload-offset");
            sequence = number("x-upload-sequence");
            id = response
                .headers()
                .get("x-parcel-id")
                .map(|id| id.to_str().unwrap().to_owned());
        }
        id.expect("the last PATCH names the parcel")
    }

    async fn remove(&self, id: &str) {
        let proof = self.signed(json!({"name": "remove", "id": id})).await;
        let request = self
            .http
            .delete(format!("{}/api/v2/parcels/{id}", self.base));
        let response = Self::with(request, &proof).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "remove: {}",
            response.status()
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    assert!(
        std::env::var("AMO_S3_ENDPOINT").is_ok(),
        "run with the real backends: `. /tmp/amo-local/env` first"
    );
    let size = env_number("AMO_BENCH_SIZE_MIB", 1024) * MIB;
    // Whole MiB: the content source hands out whole 1 MiB chunks.
    let patch = env_number("AMO_BENCH_PATCH_MIB", 64).max(1) * MIB;
    let rounds = env_number("AMO_BENCH_ROUNDS", 2).max(1);
    let service = Service::start(&format!("bench-{}/resumable/", uuid::Uuid::new_v4()));
    service.wait_ready().await;

    let (mut v2_rates, mut tus_rates) = (Vec::new(), Vec::new());
    let (mut v2_rss, mut tus_rss) = (0.0f64, 0.0f64);
    for round in 0..rounds {
        for resumable in [false, true] {
            let seed = round * 2 + u64::from(resumable) + 1;
            let hash = sha256(seed, size).await;
            let idle = service.reset_peak();
            let started = Instant::now();
            let id = if resumable {
                service.upload_resumable(seed, size, &hash, patch).await
            } else {
                service.upload_v2(seed, size, &hash).await
            };
            let elapsed = started.elapsed();
            let rate = size as f64 / MIB as f64 / elapsed.as_secs_f64();
            let growth = service.peak_growth_mib(idle);
            assert!(id.ends_with(&hash), "the id names the content");
            let what = if resumable { "resumable" } else { "v2" };
            println!(
                "round {round}: {what:>9} {} MiB in {:.2} s = {rate:.1} MiB/s, peak RSS growth {growth:.1} MiB",
                size / MIB,
                elapsed.as_secs_f64()
            );
            if resumable {
                tus_rates.push(rate);
                tus_rss = tus_rss.max(growth);
            } else {
                v2_rates.push(rate);
                v2_rss = v2_rss.max(growth);
            }
            service.remove(&id).await;
        }
    }
    let (v2, tus) = (median(v2_rates), median(tus_rates));
    println!();
    println!(
        "| upload of {} MiB (median of {rounds}) | MiB/s | peak RSS growth, MiB |",
        size / MIB
    );
    println!("|---|---|---|");
    println!("| v2, one request | {v2:.1} | {v2_rss:.1} |");
    println!(
        "| resumable, {} MiB PATCHes | {tus:.1} | {tus_rss:.1} |",
        patch / MIB
    );
    println!(
        "resumable ÷ v2 = {:.2} (goal ≥ 0.8); resumable RSS growth {tus_rss:.1} MiB against one part of {PART_MIB} MiB",
        tus / v2
    );
}
