//! Load generator for the token path and the small-parcel cycle (bench/).
//!
//! wrk cannot sign the one-time tokens (ECDSA P-256), so everything past
//! `POST /auth` is driven from here. Run it through cargo:
//!
//! ```text
//! cargo bench --bench load -- --url http://127.0.0.1:8080 --mode cycle \
//!     --concurrency 32 --duration 20 [--requests N] [--pid PID]...
//! ```
//!
//! Modes:
//! - `auth`: `POST /api/v2/auth` only (one token per request).
//! - `cycle`: the small-parcel cycle, 6 requests: upload token, v2 upload of
//!   `--size` bytes (fresh random content each time), download token,
//!   download (checked against the content's SHA-256), remove token, remove.
//! - `mixed`: tokens only, uploads of `--min-size`..`--max-size` bytes
//!   (log-uniform), downloads (checked), inspects, removes, and a few
//!   deliberate errors whose answers are checked (a replayed token must get
//!   401 `token_used`, an unknown id 404). Each worker keeps at most
//!   `--keep` parcels; whatever is left is removed at the end.
//!
//! The run stops at `--duration` seconds or after `--requests` requests,
//! whichever comes first; work in flight at the deadline is finished. It
//! prints requests/s, p50/p99 latency per operation and error counts, then a
//! `RESULT` line for scripts. With `--pid` (repeatable) it samples
//! VmRSS/VmHWM of those processes every second and prints the RSS at 1 min
//! and at the end (and every `--report-every` seconds).
//!
//! Exit status: 0; 1 if any request got an answer other than the expected
//! one (deliberate errors included); 2 if `--max-rss-growth F` is given and
//! some process's RSS at the end exceeds F × its RSS at 1 min (or the run
//! was too short to have an RSS at 1 min).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Load generator for amo-storage (token path, parcel cycle, mixed soak)")]
struct Args {
    /// Base URL of the service (a replica or the proxy). Repeated: each
    /// worker sends its requests to them in turn, so a token issued by one
    /// replica is used on another.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Mode::Cycle)]
    mode: Mode,
    /// Concurrent workers, each with its own account key.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Stop after this many requests (across workers).
    #[arg(long)]
    requests: Option<u64>,
    /// Body size of the `cycle` mode's uploads, in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Smallest upload of the `mixed` mode, in bytes.
    #[arg(long, default_value_t = 1024)]
    min_size: usize,
    /// Largest upload of the `mixed` mode, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_size: usize,
    /// Parcels each `mixed` worker keeps at most.
    #[arg(long, default_value_t = 8)]
    keep: usize,
    /// Processes whose VmRSS/VmHWM are sampled every second (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Print progress (and RSS) every this many seconds; 0: never.
    #[arg(long, default_value_t = 60)]
    report_every: u64,
    /// Fail (exit 2) if an RSS at the end exceeds this factor × at 1 min.
    #[arg(long)]
    max_rss_growth: Option<f64>,
    /// Tokio worker threads of this load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label printed on the RESULT line.
    #[arg(long, default_value = "load")]
    label: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Auth,
    Cycle,
    Mixed,
}

/// What a request does; latencies and errors are kept per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Auth,
    Upload,
    Download,
    Inspect,
    Remove,
    /// Deliberate: a used token sent again; 401 `token_used` expected.
    Replay,
    /// Deliberate: inspecting an id nobody stored; 404 expected.
    InspectMissing,
    /// Removing what a `mixed` worker kept, after the run.
    Cleanup,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Auth => "auth",
            Op::Upload => "upload",
            Op::Download => "download",
            Op::Inspect => "inspect",
            Op::Remove => "remove",
            Op::Replay => "replay (deliberate 401)",
            Op::InspectMissing => "inspect unknown (deliberate 404)",
            Op::Cleanup => "cleanup remove",
        }
    }

    fn deliberate(self) -> bool {
        matches!(self, Op::Replay | Op::InspectMissing)
    }
}

/// A log-linear latency histogram in microseconds (32 sub-buckets per power
/// of two: about 3 % resolution).
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB: u64 = 32;

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; 2 * SUB as usize + 40 * SUB as usize],
            total: 0,
        }
    }

    fn index(micros: u64) -> usize {
        if micros < 2 * SUB {
            return micros as usize;
        }
        let exp = 63 - u64::from(micros.leading_zeros()); // >= 6
        let shift = exp - 5;
        let mantissa = micros >> shift; // 32..63
        (2 * SUB + (exp - 6) * SUB + (mantissa - SUB)) as usize
    }

    /// The middle of bucket `index`, in microseconds.
    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let k = index - 2 * SUB;
        let exp = k / SUB + 6;
        let mantissa = k % SUB + SUB;
        let shift = exp - 5;
        (mantissa << shift) + (1 << shift) / 2
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX >> 24)) as u64;
        let index = Self::index(micros).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The `q` quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= target {
                return Self::value(index) as f64 / 1000.0;
            }
        }
        0.0
    }
}

/// One worker's figures.
#[derive(Clone)]
struct Stats {
    ops: BTreeMap<Op, Histogram>,
    all: Histogram,
    cycles: Histogram,
    errors: BTreeMap<String, u64>,
    bytes_up: u64,
    bytes_down: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            ops: BTreeMap::new(),
            all: Histogram::new(),
            cycles: Histogram::new(),
            errors: BTreeMap::new(),
            bytes_up: 0,
            bytes_down: 0,
        }
    }

    fn merge(&mut self, other: &Stats) {
        for (op, histogram) in &other.ops {
            self.ops
                .entry(*op)
                .or_insert_with(Histogram::new)
                .merge(histogram);
        }
        self.all.merge(&other.all);
        self.cycles.merge(&other.cycles);
        for (error, count) in &other.errors {
            *self.errors.entry(error.clone()).or_default() += count;
        }
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
    }

    fn unexpected(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// State shared by the workers and the monitor.
struct Shared {
    started: Instant,
    deadline: Instant,
    budget: Option<u64>,
    reserved: AtomicU64,
    done: AtomicU64,
    unexpected: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// Whether `n` more requests may start.
    fn reserve(&self, n: u64) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        if let Some(budget) = self.budget {
            if self.reserved.fetch_add(n, Ordering::Relaxed) + n > budget {
                self.stop.store(true, Ordering::Relaxed);
                return false;
            }
        }
        true
    }
}

/// A parcel a worker stored.
struct Kept {
    id: String,
    hash: String,
    size: usize,
}

/// The three proof headers of a signed token.
type Proof = [(&'static str, String); 3];

/// One concurrent client with its own account.
struct Worker {
    http: reqwest::Client,
    bases: Vec<String>,
    next_base: usize,
    key: SigningKey,
    address: String,
    public_hex: String,
    rng: SmallRng,
    shared: Arc<Shared>,
    stats: Stats,
    kept: Vec<Kept>,
    used_proof: Option<(String, Proof)>,
    args: Arc<Args>,
}

/// The upper-case hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(data))
}

/// The `code` of an error answer, or its first bytes.
fn error_code(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => value["code"].as_str().unwrap_or("?").to_owned(),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned(),
    }
}

impl Worker {
    fn new(
        index: usize,
        run: u64,
        http: reqwest::Client,
        shared: Arc<Shared>,
        args: Arc<Args>,
    ) -> Self {
        let seed = Sha256::digest(format!("amo-load-{run}-{index}"));
        let key = SigningKey::from_slice(&seed).expect("a valid scalar");
        let public = key.verifying_key().to_sec1_point(false);
        Self {
            http,
            bases: args
                .url
                .iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect(),
            next_base: index,
            address: hex::encode_upper(&Sha256::digest(public.as_bytes())[..20]),
            public_hex: hex::encode(public.as_bytes()),
            key,
            rng: SmallRng::seed_from_u64(run ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            shared,
            stats: Stats::new(),
            kept: Vec::new(),
            used_proof: None,
            args,
        }
    }

    /// The base URL of the next request.
    fn base(&mut self) -> String {
        self.next_base = self.next_base.wrapping_add(1);
        self.bases[self.next_base % self.bases.len()].clone()
    }

    /// Sends `request`, reads the whole answer, and records it under `op`.
    /// Answers the body when the status is `expect`.
    async fn call(
        &mut self,
        op: Op,
        request: reqwest::RequestBuilder,
        expect: u16,
    ) -> Option<Bytes> {
        let started = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let elapsed = started.elapsed();
        self.shared.done.fetch_add(1, Ordering::Relaxed);
        let problem = match answer {
            Ok((status, body)) if status == expect => {
                if op == Op::Replay && error_code(&body) != "token_used" {
                    format!("401 with code {}", error_code(&body))
                } else {
                    self.stats
                        .ops
                        .entry(op)
                        .or_insert_with(Histogram::new)
                        .record(elapsed);
                    self.stats.all.record(elapsed);
                    return Some(body);
                }
            }
            Ok((status, body)) => format!("{status} {}", error_code(&body)),
            Err(err) => format!("transport error: {err}"),
        };
        self.fail(op, &problem);
        None
    }

    fn fail(&mut self, op: Op, problem: &str) {
        self.shared.unexpected.fetch_add(1, Ordering::Relaxed);
        *self
            .stats
            .errors
            .entry(format!("{}: {problem}", op.name()))
            .or_default() += 1;
    }

    /// A token for `operation`, signed: the proof headers.
    async fn token(&mut self, operation: Value) -> Option<Proof> {
        let base = self.base();
        let request = self
            .http
            .post(format!("{base}/api/v2/auth"))
            .json(&json!({"user": self.address, "operation": operation}));
        let body = self.call(Op::Auth, request, 200).await?;
        let token = match serde_json::from_slice::<Value>(&body) {
            Ok(value) => value["token"].as_str().map(str::to_owned),
            Err(_) => None,
        };
        let Some(token) = token else {
            self.fail(Op::Auth, "200 without a token");
            return None;
        };
        let signature: Signature = self.key.sign(token.as_bytes());
        Some([
            ("X-Auth-Token", token),
            ("X-Public-Key", self.public_hex.clone()),
            ("X-Signature", hex::encode(signature.to_bytes())),
        ])
    }

    fn with_proof(mut request: reqwest::RequestBuilder, proof: &Proof) -> reqwest::RequestBuilder {
        for (name, value) in proof {
            request = request.header(*name, value);
        }
        request
    }

    /// Uploads `size` fresh random bytes; keeps the parcel.
    async fn upload(&mut self, size: usize) -> Option<()> {
        let mut data = vec![0u8; size];
        self.rng.fill_bytes(&mut data);
        let hash = sha256_hex(&data);
        let proof = self.token(json!({"name": "upload", "hash": hash})).await?;
        let base = self.base();
        let request = self
            .http
            .post(format!("{base}/api/v2/parcels"))
            .header("content-type", "application/octet-stream")
            .body(data);
        let body = self
            .call(Op::Upload, Self::with_proof(request, &proof), 201)
            .await?;
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|value| value["id"].as_str().map(str::to_owned));
        let Some(id) = id else {
            self.fail(Op::Upload, "201 without an id");
            return None;
        };
        if !id.ends_with(&hash) {
            self.fail(Op::Upload, "id does not end with the content hash");
        }
        self.stats.bytes_up += size as u64;
        self.kept.push(Kept { id, hash, size });
        Some(())
    }

    /// Downloads kept parcel `index` and checks its bytes.
    async fn download(&mut self, index: usize) -> Option<()> {
        let id = self.kept[index].id.clone();
        let proof = self.token(json!({"name": "download", "id": id})).await?;
        let base = self.base();
        let request = self.http.get(format!("{base}/api/v2/parcels/{id}"));
        let body = self
            .call(Op::Download, Self::with_proof(request, &proof), 200)
            .await?;
        self.stats.bytes_down += body.len() as u64;
        let kept = &self.kept[index];
        if body.len() != kept.size || sha256_hex(&body) != kept.hash {
            self.fail(Op::Download, "body differs from what was uploaded");
        }
        self.used_proof = Some((id, proof));
        Some(())
    }

    /// Inspects kept parcel `index` and checks its size and owner.
    async fn inspect(&mut self, index: usize) -> Option<()> {
        let id = self.kept[index].id.clone();
        let base = self.base();
        let request = self
            .http
            .get(format!("{base}/api/v2/parcels/{id}/metadata"));
        let body = self.call(Op::Inspect, request, 200).await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if value["size"].as_u64() != Some(self.kept[index].size as u64)
            || value["owner"].as_str() != Some(self.address.as_str())
        {
            self.fail(Op::Inspect, "size or owner differs");
        }
        Some(())
    }

    /// Removes kept parcel `index`.
    async fn remove(&mut self, index: usize, op: Op) -> Option<()> {
        let id = self.kept[index].id.clone();
        let proof = self.token(json!({"name": "remove", "id": id})).await?;
        let base = self.base();
        let request = self.http.delete(format!("{base}/api/v2/parcels/{id}"));
        self.call(op, Self::with_proof(request, &proof), 204)
            .await?;
        self.kept.swap_remove(index);
        Some(())
    }

    /// The `cycle` mode's loop.
    async fn run_cycles(&mut self) {
        let size = self.args.size;
        while self.shared.reserve(6) {
            let started = Instant::now();
            let complete = async {
                self.upload(size).await?;
                let last = self.kept.len() - 1;
                self.download(last).await?;
                self.remove(last, Op::Remove).await
            }
            .await;
            if complete.is_some() {
                self.stats.cycles.record(started.elapsed());
            }
        }
        self.cleanup().await;
    }

    /// The `auth` mode's loop.
    async fn run_auth(&mut self) {
        let operation = json!({"name": "upload", "hash": "00".repeat(32)});
        while self.shared.reserve(1) {
            let _ = self.token(operation.clone()).await;
        }
    }

    /// The `mixed` mode's loop.
    async fn run_mixed(&mut self) {
        let (min, max) = (
            self.args.min_size.max(1),
            self.args.max_size.max(self.args.min_size.max(1)),
        );
        while self.shared.reserve(2) {
            let roll = self.rng.random_range(0..100u32);
            if self.kept.is_empty() || (roll < 20 && self.kept.len() < self.args.keep) {
                // Log-uniform: many small parcels, some large.
                let size = ((min as f64).ln()
                    + self.rng.random::<f64>() * ((max as f64).ln() - (min as f64).ln()))
                .exp() as usize;
                let _ = self.upload(size.clamp(min, max)).await;
                continue;
            }
            let index = self.rng.random_range(0..self.kept.len());
            let _ = match roll {
                0..20 => self.remove(index, Op::Remove).await, // full: make room
                20..45 => self
                    .token(json!({"name": "download", "id": self.kept[index].id}))
                    .await
                    .map(drop),
                45..70 => self.download(index).await,
                70..88 => self.inspect(index).await,
                88..96 => self.remove(index, Op::Remove).await,
                96..98 => self.replay().await,
                _ => self.inspect_missing().await,
            };
        }
        self.cleanup().await;
    }

    /// Sends a download's used token again: 401 `token_used` expected.
    async fn replay(&mut self) -> Option<()> {
        let Some((id, proof)) = self.used_proof.take() else {
            return Some(());
        };
        let base = self.base();
        let request = self.http.get(format!("{base}/api/v2/parcels/{id}"));
        self.call(Op::Replay, Self::with_proof(request, &proof), 401)
            .await
            .map(drop)
    }

    /// Inspects an id nobody stored: 404 expected.
    async fn inspect_missing(&mut self) -> Option<()> {
        let mut random = [0u8; 32];
        self.rng.fill_bytes(&mut random);
        let id = format!("00000001{}", hex::encode_upper(random));
        let base = self.base();
        let request = self
            .http
            .get(format!("{base}/api/v2/parcels/{id}/metadata"));
        self.call(Op::InspectMissing, request, 404).await.map(drop)
    }

    /// Removes every kept parcel (after the run).
    async fn cleanup(&mut self) {
        let mut attempts = self.kept.len() * 2;
        while !self.kept.is_empty() && attempts > 0 {
            attempts -= 1;
            let _ = self.remove(self.kept.len() - 1, Op::Cleanup).await;
        }
        if !self.kept.is_empty() {
            let left = self.kept.len();
            self.fail(Op::Cleanup, &format!("{left} parcels left behind"));
        }
    }
}

/// One sample of a process's memory, in KiB.
#[derive(Clone, Copy)]
struct Memory {
    /// Seconds since the start of the run.
    second: u64,
    /// VmRSS: resident memory, the binary's mapped pages included.
    rss: u64,
    /// VmHWM: the peak of VmRSS.
    hwm: u64,
    /// RssAnon: resident heap and stacks (what a leak would grow).
    anon: u64,
}

/// The memory of `pid` now, as the sample of `second`.
fn memory_kib(pid: u32, second: u64) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Memory {
        second,
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The memory samples of one process.
struct Samples {
    pid: u32,
    points: Vec<Memory>,
}

impl Samples {
    /// The samples taken on whole minutes (one each), the start excluded.
    fn minutes(&self) -> Vec<Memory> {
        let mut minutes: Vec<Memory> = self
            .points
            .iter()
            .filter(|p| p.second > 0 && p.second % 60 == 0)
            .copied()
            .collect();
        minutes.dedup_by_key(|p| p.second);
        minutes
    }
}

/// The least-squares slope of `field` of the per-minute samples from
/// minute 2 on, in MiB per minute; `None` with fewer than 3 of them.
fn trend(minutes: &[Memory], field: fn(&Memory) -> u64) -> Option<f64> {
    let xy: Vec<(f64, f64)> = minutes
        .iter()
        .filter(|p| p.second >= 120)
        .map(|p| (p.second as f64 / 60.0, mib(field(p))))
        .collect();
    if xy.len() < 3 {
        return None;
    }
    let n = xy.len() as f64;
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    Some(sxy / sxx)
}

/// Samples every second; prints progress every `report_every` seconds.
async fn monitor(shared: Arc<Shared>, samples: Arc<Mutex<Vec<Samples>>>, report_every: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_done = 0;
    loop {
        tick.tick().await;
        let second = shared.started.elapsed().as_secs_f64().round() as u64;
        let mut line = String::new();
        let report = report_every > 0 && second % report_every == 0;
        {
            let mut samples = samples.lock().unwrap();
            for process in samples.iter_mut() {
                if let Some(memory) = memory_kib(process.pid, second) {
                    process.points.push(memory);
                    let _ = write!(
                        line,
                        " | pid {} VmRSS {:.1} MiB (anon {:.1}) VmHWM {:.1} MiB",
                        process.pid,
                        mib(memory.rss),
                        mib(memory.anon),
                        mib(memory.hwm)
                    );
                } else {
                    let _ = write!(line, " | pid {} gone", process.pid);
                }
            }
        }
        if report {
            let done = shared.done.load(Ordering::Relaxed);
            println!(
                "[t={second}s] requests {done} ({:.0}/s over the last {report_every} s), unexpected errors {}{line}",
                (done - last_done) as f64 / report_every as f64,
                shared.unexpected.load(Ordering::Relaxed),
            );
            last_done = done;
        }
    }
}

fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run(args))
}

async fn run(args: Arc<Args>) -> ExitCode {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        deadline: started + Duration::from_secs_f64(args.duration),
        budget: args.requests,
        reserved: AtomicU64::new(0),
        done: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let samples = Arc::new(Mutex::new(
        args.pid
            .iter()
            .map(|&pid| Samples {
                pid,
                points: memory_kib(pid, 0).into_iter().collect(),
            })
            .collect::<Vec<_>>(),
    ));
    let monitor = tokio::spawn(monitor(shared.clone(), samples.clone(), args.report_every));
    println!(
        "load: mode {:?}, {} workers, {} threads, up to {} s{}, against {}",
        args.mode,
        args.concurrency,
        args.threads,
        args.duration,
        args.requests
            .map_or(String::new(), |n| format!(" or {n} requests")),
        args.url.join(" ")
    );

    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| {
            let mut worker = Worker::new(index, run, http.clone(), shared.clone(), args.clone());
            tokio::spawn(async move {
                match worker.args.mode {
                    Mode::Auth => worker.run_auth().await,
                    Mode::Cycle => worker.run_cycles().await,
                    Mode::Mixed => worker.run_mixed().await,
                }
                worker.stats
            })
        })
        .collect();
    let mut stats = Stats::new();
    for worker in workers {
        stats.merge(&worker.await.expect("a worker panicked"));
    }
    let elapsed = started.elapsed();
    // One last sample: the RSS at the end of the load.
    let end_second = elapsed.as_secs_f64().round() as u64;
    monitor.abort();
    {
        let mut samples = samples.lock().unwrap();
        for process in samples.iter_mut() {
            if let Some(memory) = memory_kib(process.pid, end_second) {
                process.points.push(memory);
            }
        }
    }

    let secs = elapsed.as_secs_f64();
    let ok = stats.all.total;
    let unexpected = stats.unexpected();
    let deliberate: u64 = stats
        .ops
        .iter()
        .filter(|(op, _)| op.deliberate())
        .map(|(_, h)| h.total)
        .sum();
    let cleanup = stats.ops.get(&Op::Cleanup).map_or(0, |h| h.total);
    let measured = ok - cleanup;
    println!();
    println!(
        "{} requests answered as expected in {secs:.1} s ({deliberate} of them deliberate errors answered correctly{}), {unexpected} unexpected",
        ok,
        if cleanup > 0 {
            format!(", {cleanup} cleanup removes after the run")
        } else {
            String::new()
        }
    );
    println!("| operation | count | per s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (op, histogram) in &stats.ops {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |",
            op.name(),
            histogram.total,
            histogram.total as f64 / secs,
            histogram.quantile_ms(0.5),
            histogram.quantile_ms(0.99)
        );
    }
    println!(
        "| all requests | {ok} | {:.0} | {:.2} | {:.2} |",
        ok as f64 / secs,
        stats.all.quantile_ms(0.5),
        stats.all.quantile_ms(0.99)
    );
    if stats.cycles.total > 0 {
        println!(
            "| whole cycles (6 requests) | {} | {:.0} | {:.2} | {:.2} |",
            stats.cycles.total,
            stats.cycles.total as f64 / secs,
            stats.cycles.quantile_ms(0.5),
            stats.cycles.quantile_ms(0.99)
        );
    }
    if stats.bytes_up + stats.bytes_down > 0 {
        println!(
            "bytes: {:.1} MiB up ({:.1} MiB/s), {:.1} MiB down ({:.1} MiB/s)",
            mib(stats.bytes_up / 1024),
            mib(stats.bytes_up / 1024) / secs,
            mib(stats.bytes_down / 1024),
            mib(stats.bytes_down / 1024) / secs
        );
    }
    for (error, count) in &stats.errors {
        println!("UNEXPECTED {count} × {error}");
    }

    let mut rss_fail = false;
    for process in samples.lock().unwrap().iter() {
        let minute = process
            .points
            .iter()
            .find(|p| p.second >= 60)
            .copied()
            .filter(|p| p.second < end_second || end_second == 60);
        let end = process.points.last().copied();
        let minutes = process.minutes();
        let trail: Vec<String> = minutes
            .iter()
            .map(|p| format!("{}s {:.1} ({:.1})", p.second, mib(p.rss), mib(p.anon)))
            .collect();
        let slopes = match (trend(&minutes, |p| p.rss), trend(&minutes, |p| p.anon)) {
            (Some(rss), Some(anon)) => {
                format!(
                    "; trend from 2 min on: VmRSS {rss:+.3} MiB/min, RssAnon {anon:+.3} MiB/min"
                )
            }
            _ => String::new(),
        };
        match (minute, end) {
            (Some(minute), Some(end)) => {
                let ratio = end.rss as f64 / minute.rss as f64;
                println!(
                    "RSS pid {}: at 1 min {:.1} MiB, at end ({} s) {:.1} MiB, end/1min {ratio:.3}, peak (VmHWM) {:.1} MiB; RssAnon at 1 min {:.1} MiB, at end {:.1} MiB, end/1min {:.3}",
                    process.pid,
                    mib(minute.rss),
                    end.second,
                    mib(end.rss),
                    mib(end.hwm),
                    mib(minute.anon),
                    mib(end.anon),
                    end.anon as f64 / minute.anon as f64,
                );
                println!(
                    "RSS pid {} per minute, MiB VmRSS (RssAnon): {}{slopes}",
                    process.pid,
                    trail.join(", ")
                );
                if args.max_rss_growth.is_some_and(|limit| ratio > limit) {
                    println!(
                        "FAIL: pid {} RSS grew by more than {:.0} % after the first minute",
                        process.pid,
                        (args.max_rss_growth.unwrap_or(1.0) - 1.0) * 100.0
                    );
                    rss_fail = true;
                }
            }
            (None, Some(end)) => {
                println!(
                    "RSS pid {}: at end ({} s) {:.1} MiB, peak (VmHWM) {:.1} MiB (no 1-min sample: the run was shorter)",
                    process.pid,
                    end.second,
                    mib(end.rss),
                    mib(end.hwm)
                );
                if args.max_rss_growth.is_some() {
                    println!("FAIL: no RSS sample at 1 min to compare with");
                    rss_fail = true;
                }
            }
            _ => {
                println!("RSS pid {}: no sample (process gone?)", process.pid);
                rss_fail |= args.max_rss_growth.is_some();
            }
        }
    }
    let (p50, p99) = match args.mode {
        Mode::Auth => {
            let auth = stats
                .ops
                .get(&Op::Auth)
                .cloned()
                .unwrap_or_else(Histogram::new);
            (auth.quantile_ms(0.5), auth.quantile_ms(0.99))
        }
        _ => (stats.all.quantile_ms(0.5), stats.all.quantile_ms(0.99)),
    };
    println!(
        "RESULT label={} mode={:?} requests={measured} secs={secs:.2} requests_per_s={:.0} cycles_per_s={:.0} p50_ms={p50:.2} p99_ms={p99:.2} unexpected={unexpected}",
        args.label,
        args.mode,
        measured as f64 / secs,
        stats.cycles.total as f64 / secs,
    );
    if unexpected > 0 {
        println!("FAIL: {unexpected} unexpected answers");
        ExitCode::from(1)
    } else if rss_fail {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
