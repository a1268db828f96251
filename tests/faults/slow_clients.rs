//! Clients that stop mid-transfer: one that stops sending an upload is timed
//! out after `AMO_BODY_IDLE_TIMEOUT_SECS` (its multipart upload aborted, its
//! token released); one that stops reading a download does not make the
//! service buffer the parcel.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    helpers::*,
    rig::{PART, remove_parcel},
};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_client_that_stops_sending_is_timed_out_and_leaves_nothing() {
    let _running = crate::shared().await;
    let idle = Duration::from_secs(2);
    // Bodies over one part go up in parts, so a multipart upload is begun
    // and must be aborted.
    let app = spawn_with(settings(&[
        ("AMO_BODY_IDLE_TIMEOUT_SECS", "2"),
        ("AMO_S3_PART_SIZE_BYTES", &PART.to_string()),
        ("AMO_S3_SINGLE_PUT_MAX_BYTES", &PART.to_string()),
    ]))
    .await;
    let owner = Account::new();
    let data = random_body(3 * PART);
    let (token, proof) = app.upload_token(&owner, &data).await;

    let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = upload_head(&proof, data.len(), false);
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&data[..PART + PART / 2]).await.unwrap();
    // The service received nothing after this instant.
    let stopped = Instant::now();
    eventually(10, "a multipart upload has started", || async {
        !app.multipart_uploads().await.is_empty()
    })
    .await;

    // The socket stays open, sending nothing; the service answers.
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(15), read_response(&mut socket))
            .await
            .expect("the service answers a stalled upload");
    let took = stopped.elapsed();
    eprintln!("client stopped sending (idle timeout {idle:?}): answered {status} after {took:?}");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["code"], json!("bad_request"));
    assert!(
        body["error"].as_str().unwrap().contains("sent nothing"),
        "{body}"
    );
    assert!(
        took >= idle - Duration::from_millis(100),
        "timed out early: {took:?}"
    );
    // Measured from the last write the socket took: what the kernel still
    // buffered reaches the service later, which only makes this longer.
    assert!(took <= idle * 2, "timed out late: {took:?}, twice {idle:?}");

    eventually(10, "the multipart upload is aborted", || async {
        app.multipart_uploads().await.is_empty()
    })
    .await;
    eventually(10, "the token is released", || async {
        app.token_record(&token).await.as_deref() == Some("issued")
    })
    .await;
    assert!(app.stored_keys().await.is_empty());
    drop(socket);
    let response = app.upload_v2(Some(&proof), data.clone(), None).await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app.fetch_v2(&owner, &id).await == data);
    remove_parcel(&app, &owner, &id).await;
}

/// How big the parcel of the download test is.
const BIG: u64 = 256 * MIB;
/// How much the service may hand to a client that reads nothing: what the
/// kernel's socket buffers take, a few MiB, never the parcel.
const SENT_BOUND_MIB: u64 = 64;
/// How much the service's peak RSS may grow while a client reads nothing:
/// docs/reliability.md's "at most 12 MiB". Measured 0 to 6.2 MiB on the
/// shared 2-core machine (allocator noise); twice the worst of those. A
/// service that buffered what the client does not read would grow by up
/// to the parcel's 256 MiB.
const GROWTH_BOUND_KIB: u64 = 12 * 1024;

#[tokio::test]
async fn a_client_that_stops_reading_does_not_pin_memory() {
    let _running = crate::shared().await;
    let service = Service::start();
    let http = reqwest::Client::new();
    service.wait_ready(&http).await;
    let owner = Account::new();
    let content = Content::new(BIG);
    let hash = content.sha256();

    let started = Instant::now();
    let id = store_content(&service, &http, &owner, &content).await;
    eprintln!(
        "client stops reading: stored {} MiB in {:?}",
        BIG / MIB,
        started.elapsed()
    );

    let idle_kib = service.reset_peak();
    let mut socket = stalled_download(&service, &http, &owner, &id).await;

    // Read nothing: at least 3 s, and until the service has stopped sending
    // for a second (it waits for the client).
    let opened = Instant::now();
    let mut history: Vec<(Instant, u64)> = Vec::new();
    loop {
        let sent = service.bytes_sent(&http).await;
        history.push((Instant::now(), sent));
        let steady_since = history
            .iter()
            .rev()
            .take_while(|(_, earlier)| *earlier == sent)
            .last()
            .map(|(at, _)| *at)
            .unwrap();
        if sent > 0
            && opened.elapsed() >= Duration::from_secs(3)
            && steady_since.elapsed() >= Duration::from_secs(1)
        {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(20),
            "the service never stopped sending to a client that reads nothing: {sent} bytes sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = history.last().unwrap().1;
    let growth_kib = service.status_kib("VmHWM:").saturating_sub(idle_kib);
    eprintln!(
        "  not reading for {:?}: the service sent {:.1} MiB of {} MiB, then waited; peak RSS growth {:.1} MiB",
        opened.elapsed(),
        sent as f64 / MIB as f64,
        BIG / MIB,
        growth_kib as f64 / 1024.0
    );
    assert!(
        sent < SENT_BOUND_MIB * MIB,
        "sent {sent} bytes to a client that reads nothing"
    );
    assert!(
        growth_kib <= GROWTH_BOUND_KIB,
        "the peak RSS grew by {growth_kib} KiB (bound {GROWTH_BOUND_KIB} KiB)"
    );

    // Reading again, the client gets the whole parcel.
    let resumed = Instant::now();
    let (status, headers, length, digest) = read_streamed(&mut socket).await;
    eprintln!("  then read it all in {:?}", resumed.elapsed());
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-length").map(String::as_str),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(length, BIG);
    assert_eq!(digest, hash);

    let token = service
        .token(&http, &owner, json!({"name": "remove", "id": id}))
        .await;
    let response = owner
        .prove(&token)
        .headers()
        .into_iter()
        .fold(
            http.delete(format!("{}/api/v2/parcels/{id}", service.base)),
            |request, (name, value)| request.header(name, value),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// Reads one HTTP/1.1 response with a `Content-Length`: status, headers
/// (names in lower case), body.
pub(crate) async fn read_response(
    socket: &mut TcpStream,
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let (status, headers, mut body) = read_head(socket).await;
    let length: usize = headers["content-length"].parse().unwrap();
    while body.len() < length {
        let mut buffer = vec![0u8; length - body.len()];
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection closed mid-body");
        body.extend_from_slice(&buffer[..n]);
    }
    (status, headers, body)
}

/// Reads one HTTP/1.1 response, hashing its body: status, headers, body
/// length and upper-case hex SHA-256.
async fn read_streamed(socket: &mut TcpStream) -> (u16, HashMap<String, String>, u64, String) {
    let (status, headers, start) = read_head(socket).await;
    let length: u64 = headers["content-length"].parse().unwrap();
    let mut hasher = Sha256::new();
    hasher.update(&start);
    let mut read = start.len() as u64;
    let mut buffer = vec![0u8; 1024 * 1024];
    while read < length {
        let n = socket.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        read += n as u64;
    }
    (status, headers, read, hex::encode_upper(hasher.finalize()))
}

/// Reads a response head; answers the status, the headers and the bytes
/// of the body read with it.
async fn read_head(socket: &mut TcpStream) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection closed before a response");
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8(received[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, received[end + 4..].to_vec())
}

/// Content of `size` bytes, made again each time it is read, never held
/// whole: 1 MiB blocks of one random block, each stamped with its index.
#[derive(Clone)]
struct Content {
    block: Bytes,
    size: u64,
}

impl Content {
    fn new(size: u64) -> Self {
        Self {
            block: Bytes::from(random_body(MIB as usize)),
            size,
        }
    }

    fn chunk(&self, index: u64) -> Bytes {
        let n = (self.size - index * MIB).min(MIB) as usize;
        let mut chunk = BytesMut::from(&self.block[..n]);
        let stamp = index.to_le_bytes();
        let stamped = stamp.len().min(n);
        chunk[..stamped].copy_from_slice(&stamp[..stamped]);
        chunk.freeze()
    }

    fn chunks(&self) -> impl Stream<Item = Bytes> + Send + use<> {
        let content = self.clone();
        stream::iter((0..self.size.div_ceil(MIB)).map(move |index| content.chunk(index)))
    }

    fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for index in 0..self.size.div_ceil(MIB) {
            hasher.update(self.chunk(index));
        }
        hex::encode_upper(hasher.finalize())
    }
}

/// The real binary, run as a child process on the real backends, so its
/// memory and its metrics are measured alone.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Service {
    /// Starts the binary on the real backends, under a fresh key prefix.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Service::start`] with `overrides` (pairs of `AMO_*` names and values).
    pub fn start_with(overrides: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_amo-storage"))
            .arg(format!("127.0.0.1:{port}"))
            .envs(backend_env())
            .env("AMO_S3_PREFIX", format!("faults-{}/", uuid::Uuid::new_v4()))
            .env("AMO_LOG", "warn")
            .envs(overrides.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the service");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        owner: &Account,
        operation: Value,
    ) -> String {
        let response = http
            .post(format!("{}/api/v2/auth", self.base))
            .json(&json!({"user": owner.address, "operation": operation}))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::OK).await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The parcel bytes it handed to clients so far (its own metric).
    async fn bytes_sent(&self, http: &reqwest::Client) -> u64 {
        let text = self.metrics(http).await;
        text.lines()
            .find_map(|line| line.strip_prefix("amo_parcel_bytes_sent_total "))
            .map(|value| value.trim().parse::<f64>().unwrap() as u64)
            .expect("amo_parcel_bytes_sent_total in /metrics")
    }

    /// A `kB` field of the process's `/proc/PID/status`; fails the test,
    /// saying why, when the field is absent or unreadable.
    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
        let value = status.lines().find_map(|line| line.strip_prefix(field));
        value
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no readable {field} in {path}: {value:?}"))
    }

    /// Resets the peak (VmHWM) to the current RSS; answers that RSS.
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        self.status_kib("VmRSS:")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The memory plan of deploy/kubernetes/validate.py, in MiB: a replica idle,
/// plus per upload in flight two parts of `AMO_S3_PART_SIZE_BYTES` and 2 MiB
/// of stream buffers, plus per download in flight 2 MiB, plus the v1 upload
/// budget. Keep the figures equal to validate.py's `IDLE_MIB`, `upload_mib`
/// and `DOWNLOAD_MIB`.
fn planned_mib(uploads: u64, part_mib: u64, downloads: u64, v1_budget_mib: u64) -> u64 {
    const IDLE_MIB: u64 = 40;
    const DOWNLOAD_MIB: u64 = 2;
    IDLE_MIB + uploads * (2 * part_mib + 2) + downloads * DOWNLOAD_MIB + v1_budget_mib
}

/// Stores `content` for `owner` through a v2 upload of declared length;
/// answers the parcel id.
async fn store_content(
    service: &Service,
    http: &reqwest::Client,
    owner: &Account,
    content: &Content,
) -> String {
    let token = service
        .token(
            http,
            owner,
            json!({"name": "upload", "hash": content.sha256()}),
        )
        .await;
    let response = owner
        .prove(&token)
        .headers()
        .into_iter()
        .fold(
            http.post(format!("{}/api/v2/parcels", service.base))
                .header("content-type", "application/octet-stream")
                .header("content-length", content.size)
                .body(reqwest::Body::wrap_stream(
                    content.chunks().map(Ok::<_, std::io::Error>),
                )),
            |request, (name, value)| request.header(name, value),
        )
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Opens a download of `id` on a socket that then reads nothing.
async fn stalled_download(
    service: &Service,
    http: &reqwest::Client,
    owner: &Account,
    id: &str,
) -> TcpStream {
    let token = service
        .token(http, owner, json!({"name": "download", "id": id}))
        .await;
    let mut socket = TcpStream::connect(service.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut head = format!("GET /api/v2/parcels/{id} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in owner.prove(&token).headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// An upload whose body the returned sender feeds, and that never ends
/// unless the sender does: `length` declared, or chunked when `None`.
fn slow_writer(
    http: &reqwest::Client,
    base: &str,
    proof: &Proof,
    length: Option<u64>,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let body = stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let mut request = http
        .post(format!("{base}/api/v2/parcels"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body));
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    for (name, value) in proof.headers() {
        request = request.header(name, value);
    }
    (sender, tokio::spawn(request.send()))
}

/// One replica driven to its caps: downloads by readers that stopped (the
/// next is refused), uploads by slow writers, each held below completion
/// and above the minimum rate: chunked bodies that sent one part and all
/// but a MiB of the next (the most a chunked upload holds), and a body
/// declared 100 GiB whose grown 11 MiB parts stream through. Its peak RSS
/// stays under the memory plan that validate.py checks against the
/// Deployment's limit.
#[tokio::test]
async fn a_replica_at_its_upload_cap_stays_under_its_memory_plan() {
    let _running = crate::shared().await;
    const UPLOADS: u64 = 6;
    const DECLARED: u64 = 1;
    const PART_MIB: u64 = 32;
    const V1_BUDGET_MIB: u64 = 4;
    const DOWNLOADS: u64 = 8;
    let service = Service::start_with(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", &UPLOADS.to_string()),
        ("AMO_MAX_CONCURRENT_DOWNLOADS", &DOWNLOADS.to_string()),
        ("AMO_CLIENT_SHARE_PERCENT", "100"),
        ("AMO_S3_PART_SIZE_BYTES", &(PART_MIB * MIB).to_string()),
        ("AMO_V1_MAX_DATA_BYTES", &MIB.to_string()),
        (
            "AMO_V1_UPLOAD_MEMORY_BYTES",
            &(V1_BUDGET_MIB * MIB).to_string(),
        ),
        ("AMO_MIN_TRANSFER_BYTES_PER_SEC", "2048"),
        ("AMO_MIN_TRANSFER_WINDOW_SECS", "60"),
        ("AMO_BODY_IDLE_TIMEOUT_SECS", "60"),
    ]);
    let http = reqwest::Client::new();
    service.wait_ready(&http).await;
    let limit_mib = planned_mib(UPLOADS, PART_MIB, DOWNLOADS, V1_BUDGET_MIB);
    let owner = Account::new();
    // Readers that stop: each download's answer waits on its client.
    let content = Content::new(64 * MIB);
    let id = store_content(&service, &http, &owner, &content).await;
    let mut readers = Vec::new();
    for _ in 0..DOWNLOADS {
        readers.push(stalled_download(&service, &http, &owner, &id).await);
    }
    // Each holds its slot before the next one asks (else the next may take
    // a slot first, and one of these be the one refused).
    let holding = format!(r#"amo_in_flight{{resource="downloads"}} {DOWNLOADS}"#);
    eventually(30, "the stalled downloads hold their slots", || async {
        service
            .metrics(&http)
            .await
            .lines()
            .any(|line| line == holding)
    })
    .await;
    let mut refused = stalled_download(&service, &http, &owner, &id).await;
    let (status, _, body) = read_response(&mut refused).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let piece = Bytes::from(vec![b'm'; MIB as usize]);
    let mut writers = Vec::new();
    let mut fed = 0;
    for index in 0..UPLOADS {
        let hash = hex::encode_upper(Sha256::digest(format!("never whole {index}")));
        let token = service
            .token(&http, &owner, json!({"name": "upload", "hash": hash}))
            .await;
        let declared = (index < DECLARED).then_some(100 << 30);
        let (sender, answer) = slow_writer(&http, &service.base, &owner.prove(&token), declared);
        // A part and all but a MiB of the next: the first part goes up,
        // the second is all but full.
        let mibs = 2 * PART_MIB - 1;
        for _ in 0..mibs {
            sender.send(Ok(piece.clone())).await.unwrap();
        }
        fed += mibs * MIB;
        writers.push((sender, answer));
    }
    // Measured once the replica has read all of it, and has sent the
    // readers all they will take (nothing more for a second).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut sent_before = (0, Instant::now());
    loop {
        let text = service.metrics(&http).await;
        let received = text
            .lines()
            .find_map(|line| line.strip_prefix("amo_parcel_bytes_received_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let sent = service.bytes_sent(&http).await;
        if sent != sent_before.0 {
            sent_before = (sent, Instant::now());
        }
        if received >= fed + content.size
            && sent_before.0 > 0
            && sent_before.1.elapsed() >= Duration::from_secs(1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica read {received} of the {fed} bytes sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every slot is held: one more upload is turned away.
    let refused = http
        .post(format!("{}/api/v2/parcels", service.base))
        .header("content-type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(writers.iter().all(|(_, answer)| !answer.is_finished()));
    let peak_mib = service.status_kib("VmHWM:") / 1024;
    eprintln!(
        "{DOWNLOADS} stalled downloads and {UPLOADS} uploads held at the caps ({DECLARED} \
         declared 100 GiB, the rest chunked), {PART_MIB} MiB parts: peak RSS {peak_mib} MiB, \
         plan {limit_mib} MiB"
    );
    drop(readers);
    assert!(
        peak_mib <= limit_mib,
        "peak RSS {peak_mib} MiB is past the plan, {limit_mib} MiB"
    );
}
