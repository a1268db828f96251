//! Connection hygiene (issue 16): clients that trickle request heads are
//! cut off after `AMO_HEADER_READ_TIMEOUT_SECS` while a normal client keeps
//! being served; idle connections close after `AMO_IDLE_TIMEOUT_SECS`, but
//! never one with a request in flight; past `AMO_MAX_CONNECTIONS` a new
//! connection is closed at once and the open ones go on.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::{
    helpers::*,
    slow_clients::{Service, read_response},
};

/// Slow clients against one replica.
const SLOW: usize = 2_000;
/// The replica's header read timeout in the slow-client test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How late past the header timeout a slow connection may be closed.
const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// Raises this process's soft limit of open files to at least `needed`
/// (the service, its child, inherits it), up to the hard limit.
fn raise_fd_limit(needed: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // `None` is RLIM_INFINITY.
    let finite = |value: Option<u64>| value.unwrap_or(u64::MAX);
    let mut limit = getrlimit(Resource::Nofile);
    if finite(limit.current) < needed {
        limit.current = Some(finite(limit.maximum).min(needed));
        setrlimit(Resource::Nofile, limit).expect("setrlimit(RLIMIT_NOFILE)");
    }
    assert!(
        finite(limit.current) >= needed,
        "this test needs {needed} open files; the hard limit is {:?}",
        limit.maximum
    );
}

/// The open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// The connections process `pid` has accepted on `port` and holds open.
fn accepted_on(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Established (01) and the like; 0A is the listening socket.
            fields.len() > 3
                && fields[1].ends_with(&local)
                && fields[3] != "0A"
                && fields[3] != "06"
        })
        .count()
}

/// Backend connections the service may open or close on its own (its S3
/// and Redis pools) while the test runs.
const POOL_SLACK: usize = 2;

/// One small-parcel cycle against `service`: token, upload, token,
/// download, compare. Answers how long it took.
async fn small_cycle(service: &Service, http: &reqwest::Client, owner: &Account) -> Duration {
    let started = Instant::now();
    let data = random_body(1024);
    let token = service
        .token(
            http,
            owner,
            json!({"name": "upload", "hash": sha256_upper(&data)}),
        )
        .await;
    let response = owner
        .prove(&token)
        .apply(
            http.post(format!("{}/api/v2/parcels", service.base))
                .header("content-type", "application/octet-stream")
                .body(data.clone()),
        )
        .send()
        .await
        .unwrap();
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = service
        .token(http, owner, json!({"name": "download", "id": id}))
        .await;
    let response = owner
        .prove(&token)
        .apply(http.get(format!("{}/api/v2/parcels/{id}", service.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.bytes().await.unwrap() == data,
        "a download differs"
    );
    started.elapsed()
}

/// A client that sends a request line, then one header line a second,
/// until the service closes the connection. Answers how long after its
/// first byte that was.
async fn trickle(address: String, index: usize) -> Duration {
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let first_byte = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut buffer = [0u8; 1024];
    loop {
        assert!(
            first_byte.elapsed() < Duration::from_secs(60),
            "slow connection {index} still open after 60 s"
        );
        tokio::select! {
            read = socket.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return first_byte.elapsed(),
                Ok(_) => panic!("slow connection {index} got an answer to a head it never ended"),
            },
            _ = tick.tick() => {
                let line = format!("X-Slow-{}: {index}\r\n", first_byte.elapsed().as_secs());
                if socket.write_all(line.as_bytes()).await.is_err() {
                    return first_byte.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_clients_are_cut_off_and_a_normal_client_is_served() {
    let _alone = crate::exclusive().await;
    raise_fd_limit(2 * SLOW as u64 + 1_000);
    // Every client here is one address: no per-client share, so that the
    // header timeout, not the share, is what cuts them.
    let service = Service::start_with(&[
        ("AMO_HEADER_READ_TIMEOUT_SECS", "5"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
        ("AMO_CLIENT_SHARE_PERCENT", "100"),
    ]);
    let port: u16 = service.base.rsplit(':').next().unwrap().parse().unwrap();
    let owner = Account::new();
    {
        let http = reqwest::Client::new();
        service.wait_ready(&http).await;
        for _ in 0..3 {
            small_cycle(&service, &http, &owner).await;
        }
    }
    // The baseline: warmed up, no client connected.
    eventually(
        10,
        "the warm-up client's connections are closed",
        || async { accepted_on(service.pid(), port) == 0 },
    )
    .await;
    let baseline = open_fds(service.pid());
    let http = reqwest::Client::new();

    let address = service.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = JoinSet::new();
    for index in 0..SLOW {
        slow.spawn(trickle(address.clone(), index));
    }
    // The normal client, all the while the slow ones are open. The cycles
    // measured are those begun once the slow connections are all accepted
    // (the burst of 2,000 accepts is its own, printed, figure).
    let mut cycles = Vec::new();
    let mut during_accepts = Vec::new();
    let mut peak_fds = baseline;
    let mut closed = Vec::new();
    while !slow.is_empty() {
        let all_accepted = peak_fds >= baseline + SLOW * 9 / 10;
        let took = small_cycle(&service, &http, &owner).await;
        if all_accepted {
            cycles.push(took);
        } else {
            during_accepts.push(took);
        }
        peak_fds = peak_fds.max(open_fds(service.pid()));
        while let Some(done) = slow.try_join_next() {
            closed.push(done.unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} slow connections still open after 90 s",
            slow.len()
        );
    }
    let all_closed = started.elapsed();
    cycles.sort();
    closed.sort();
    let p99 = cycles[(cycles.len() * 99).div_ceil(100) - 1];
    let (earliest, latest) = (closed[0], closed[closed.len() - 1]);
    eprintln!(
        "{SLOW} slow clients, header timeout {HEADER_TIMEOUT:?}: closed {earliest:.1?} to \
         {latest:.1?} after their first byte, all within {all_closed:.1?}; service fds: \
         baseline {baseline}, peak {peak_fds}; normal client while the slow ones were \
         accepted: {during_accepts:.0?}; once all were open: {} cycles, median {:.0?}, \
         p99 {p99:.0?}, max {:.0?}",
        cycles.len(),
        cycles[cycles.len() / 2],
        cycles[cycles.len() - 1],
    );
    assert_eq!(closed.len(), SLOW);
    assert!(
        peak_fds >= baseline + SLOW * 9 / 10,
        "the slow connections were not all open at once: peak {peak_fds}, baseline {baseline}"
    );
    assert!(
        earliest + Duration::from_millis(500) >= HEADER_TIMEOUT,
        "a slow connection was closed early: {earliest:?}"
    );
    assert!(
        latest <= HEADER_TIMEOUT + CLOSE_SLACK,
        "a slow connection was closed late: {latest:?}"
    );
    assert!(
        cycles.len() >= 10,
        "too few cycles to measure: {}",
        cycles.len()
    );
    // Starved by the slow clients, the normal client would wait for their
    // header timeouts; half of that bounds a served client with room for a
    // shared, noisy machine (seen: 67-226 ms quiet, 728 ms and once 1.27 s
    // loaded). The figures themselves are printed above.
    assert!(
        p99 < HEADER_TIMEOUT / 2,
        "the normal client's p99 is {p99:?}"
    );
    let metrics = http
        .get(format!("{}/metrics", service.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cut: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"amo_http_connections_closed_total{reason="header_timeout"} "#)
        })
        .expect("the header timeouts are counted")
        .parse()
        .unwrap();
    drop(http);
    let back = Instant::now();
    let mut fds = open_fds(service.pid());
    while fds > baseline + POOL_SLACK || accepted_on(service.pid(), port) > 0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the service holds {fds} file descriptors and {} accepted connections 10 s after, \
             baseline {baseline} and none",
            accepted_on(service.pid(), port)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = open_fds(service.pid());
    }
    eprintln!(
        "  no client connected: the service's fds back to {fds} (baseline {baseline}) within \
         {:.1?}; {cut} connections closed on the header timeout",
        back.elapsed(),
    );
    assert!(cut >= SLOW as f64, "{cut} header timeouts counted");
}

/// Opens a connection to `base` and has it answer `GET /healthz`, keeping
/// it open.
async fn kept_open(base: &str) -> TcpStream {
    let mut socket = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    healthz(&mut socket).await;
    socket
}

async fn healthz(socket: &mut TcpStream) {
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(10), read_response(socket))
        .await
        .expect("an answer within 10 s");
    assert_eq!(status, 200);
}

/// Reads until the service closes `socket`; answers what came, and when
/// (from `since`).
async fn until_closed(
    socket: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> (Vec<u8>, Duration) {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(within, socket.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after {within:?}"));
    (bytes, since.elapsed())
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_at_once_and_open_ones_go_on() {
    let _running = crate::shared().await;
    const CAP: usize = 20;
    // One address fills the cap: no per-client share here (the share has
    // its own test, tests/api/fair_share.rs).
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONNECTIONS", &CAP.to_string()),
        ("AMO_CLIENT_SHARE_PERCENT", "100"),
    ]))
    .await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(kept_open(&app.base).await);
    }
    for _ in 0..3 {
        let mut refused = TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let (answer, took) =
            until_closed(&mut refused, Instant::now(), Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        eprintln!(
            "connection {} of a cap of {CAP}: closed after {took:?}",
            CAP + 1
        );
        // At once (23-103 µs here), not after the 5 s header timeout:
        // docs/reliability.md says within 0.2 s.
        assert!(took < Duration::from_millis(200), "closed after {took:?}");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("retry-after: 2"), "{answer:?}");
        assert!(
            answer.contains(r#""code":"too_many_connections""#),
            "{answer:?}"
        );
    }
    // The open ones go on.
    for socket in &mut open {
        healthz(socket).await;
    }
    // One closed, a new one is served.
    drop(open.pop());
    let started = Instant::now();
    loop {
        let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut socket, Instant::now(), Duration::from_secs(10)).await;
        if answer.starts_with(b"HTTP/1.1 200 ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no place freed 10 s after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for socket in &mut open {
        healthz(socket).await;
    }
}

#[tokio::test]
async fn idle_and_silent_connections_close_but_never_one_with_a_request_in_flight() {
    // Timed to the second: not beside this binary's large transfers.
    let _alone = crate::exclusive().await;
    let timeout = Duration::from_secs(2);
    let app = spawn_with(settings(&[
        ("AMO_HEADER_READ_TIMEOUT_SECS", "2"),
        ("AMO_IDLE_TIMEOUT_SECS", "2"),
    ]))
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let owner = Account::new();
    let data = random_body(4096);
    let (_, proof) = app.upload_token(&owner, &data).await;

    // An upload whose body takes twice both timeouts, a quarter a second.
    let upload = {
        let address = address.clone();
        let data = data.clone();
        tokio::spawn(async move {
            let mut socket = TcpStream::connect(&address).await.unwrap();
            let head = upload_head(&proof, data.len(), false);
            socket.write_all(head.as_bytes()).await.unwrap();
            for quarter in data.chunks(data.len() / 4) {
                tokio::time::sleep(timeout).await;
                if socket.write_all(quarter).await.is_err() {
                    break; // answered early: the answer says why
                }
            }
            let (status, _, body) = read_response(&mut socket).await;
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    // A connection that answered a request, then idles.
    let mut idle = kept_open(&app.base).await;
    let idle_since = Instant::now();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let silent_since = Instant::now();
    let ((_, idle_for), (_, silent_for)) = tokio::join!(
        until_closed(&mut idle, idle_since, Duration::from_secs(10)),
        until_closed(&mut silent, silent_since, Duration::from_secs(10)),
    );
    let (status, body) = upload.await.unwrap();
    eprintln!(
        "idle connection closed after {idle_for:?}, silent one after {silent_for:?}; an upload \
         of {:?} answered {status}",
        timeout * 4
    );
    assert_eq!(status, 201, "{body}");
    // No sooner than the timeout (less a margin: the service's clock
    // starts a moment before the test's), no later than twice it.
    for took in [idle_for, silent_for] {
        assert!(
            took + Duration::from_millis(100) >= timeout && took <= timeout * 2,
            "closed after {took:?}, timeout {timeout:?}"
        );
    }
}
