//! Free accounts hold nothing that others need (docs/threat-model.md, "Fair
//! share"). Any key is an account and `/auth` needs no proof, so each test
//! is an attacker with free keys, from its own loopback address, against a
//! victim at another one:
//! - upload slots held by stalled bodies leave the replica ready, and the
//!   victim's upload is served;
//! - an upload body trickled below the minimum rate is cut, and its slot
//!   and token are freed;
//! - an HTTP/2 client that keeps its window at zero holds neither its own
//!   connections for long nor the victim's out;
//! - token requests in the victim's name never revoke the victim's token.
//!
//! The v1 memory budget, held by trickled v1 bodies, is in `attacks.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};

use crate::{helpers::*, limits::held_upload};

const ATTACKER: &str = "127.0.0.2";
const VICTIM: &str = "127.0.0.3";

/// The window of the minimum transfer rate in the timed tests
/// (`AMO_MIN_TRANSFER_WINDOW_SECS`): 2 s, so that a loaded machine's
/// scheduling noise is small against the bounds, which are whole windows.
const WINDOW_SECS: u64 = 2;
const WINDOW: Duration = Duration::from_secs(WINDOW_SECS);

/// Asserts that `what` took at least `at_least` windows of the minimum
/// rate (no cut comes before a window of waiting) and at most `at_most`.
fn assert_cut_within_windows(what: &str, took: Duration, at_least: u32, at_most: u32) {
    assert!(
        took >= WINDOW * at_least && took <= WINDOW * at_most,
        "{what} after {took:?}: not within [{at_least}, {at_most}] windows of {WINDOW:?}"
    );
}

#[tokio::test]
async fn stalled_uploads_of_one_client_leave_the_replica_ready_and_others_uploading() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "4"),
        ("AMO_CLIENT_SHARE_PERCENT", "50"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let (attacker, victim) = (app.client_at(ATTACKER), app.client_at(VICTIM));
    // One free key starts as many uploads as the replica takes, and stalls
    // each after 10 bytes.
    let key = Account::new();
    let mut held = Vec::new();
    for started in 0..4 {
        let data = random_body(1000);
        let (token, proof) = attacker.upload_token(&key, &data).await;
        let (sender, answer) = held_upload(&attacker, &proof, &data, 10);
        if started < 2 {
            app.until_claimed(&token, "a stalled upload holds a slot").await;
        }
        held.push((token, data, sender, answer));
    }
    // Two hold slots (the client's share); the others are refused at once.
    let mut refused = 0;
    for (token, _, _, answer) in &mut held[2..] {
        let response = answer.await.unwrap().unwrap();
        assert_eq!(
            expect_error(response, StatusCode::TOO_MANY_REQUESTS).await,
            "client_share"
        );
        assert_eq!(app.token_record(token).await.as_deref(), Some("issued"));
        refused += 1;
    }
    assert_eq!(refused, 2);
    // The replica stays ready, and another client uploads.
    expect_json(victim.get("/readyz").await, StatusCode::OK).await;
    let owner = Account::new();
    let id = victim.store_v2(&owner, &random_body(1024)).await;
    expect_json(
        victim.get(&format!("/api/v2/parcels/{id}/metadata")).await,
        StatusCode::OK,
    )
    .await;
    // The stalled uploads finish when their client sends the rest.
    for (_, data, sender, answer) in held.drain(..2) {
        sender.send(Ok(data[10..].to_vec())).await.unwrap();
        drop(sender);
        expect_json(answer.await.unwrap().unwrap(), StatusCode::CREATED).await;
    }
}

#[tokio::test]
async fn an_upload_trickled_below_the_minimum_rate_is_cut_and_frees_its_slot() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONCURRENT_UPLOADS", "1"),
        ("AMO_MIN_TRANSFER_BYTES_PER_SEC", "1000"),
        ("AMO_MIN_TRANSFER_WINDOW_SECS", &WINDOW_SECS.to_string()),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let attacker = app.client_at(ATTACKER);
    let key = Account::new();
    let data = random_body(100_000);
    let (token, proof) = attacker.upload_token(&key, &data).await;
    // 10 bytes every 100 ms: 100 bytes/s, never silent for long.
    let started = Instant::now();
    let (sender, answer) = held_upload(&attacker, &proof, &data, 10);
    let trickle = tokio::spawn(async move {
        for _ in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sender.send(Ok(vec![b'x'; 10])).await.is_err() {
                break;
            }
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("a trickled upload is cut within 30 s")
        .unwrap()
        .unwrap();
    let cut_after = started.elapsed();
    trickle.abort();
    eprintln!(
        "a body trickled at 100 B/s (minimum 1000 B/s over {WINDOW:?}): cut after {cut_after:?}"
    );
    let body = expect_json(response, StatusCode::REQUEST_TIMEOUT).await;
    assert_eq!(body["code"], "too_slow", "{body}");
    // docs/threat-model.md: cut within one or two windows.
    assert_cut_within_windows("a trickled upload cut", cut_after, 1, 2);
    // Nothing is stored; the token is released; the slot is free.
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let victim = app.client_at(VICTIM);
    victim.store_v2(&Account::new(), b"after the cut").await;
    let response = attacker
        .upload_v2(Some(&proof), data.clone(), None)
        .await;
    expect_json(response, StatusCode::CREATED).await;
}

/// An HTTP/2 connection (h2c, prior knowledge) that announces a window of
/// zero and asks for `/healthz`: its answer can never be sent.
async fn zero_window_connection(app: &TestApp, from: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .unwrap();
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
    bytes.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http /healthz.
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    bytes.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    stream.write_all(&bytes).await.unwrap();
    stream
}

/// The tests that count connections closed as too slow: the count is the
/// process's, so they take turns.
static TOO_SLOW_COUNT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many connections this process closed as too slow so far.
fn closed_too_slow() -> u64 {
    amo_storage::metrics::render()
        .lines()
        .find_map(|line| {
            line.strip_prefix("amo_http_connections_closed_total{reason=\"too_slow\"} ")
        })
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test]
async fn a_download_its_client_stops_taking_is_cut_below_the_minimum_rate() {
    let _turn = TOO_SLOW_COUNT.lock().await;
    let app = spawn_with(settings(&[
        ("AMO_MIN_TRANSFER_BYTES_PER_SEC", "100000"),
        ("AMO_MIN_TRANSFER_WINDOW_SECS", &WINDOW_SECS.to_string()),
    ]))
    .await;
    let owner = Account::new();
    let size = 16 << 20;
    let id = app.store_v2(&owner, &random_body(size)).await;
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    // A client with a small receive buffer that reads nothing after the
    // request.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut head = format!("GET /api/v2/parcels/{id} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in owner.prove(&token).headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let before = closed_too_slow();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    eventually(30, "the service cuts the download nobody takes", || async {
        closed_too_slow() > before
    })
    .await;
    let cut_after = started.elapsed();
    // What was on its way arrives; then the connection ends, short of the
    // parcel.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the cut connection ends")
        .ok();
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(
        received.len() < size,
        "{} of {size} bytes arrived: the answer was not cut",
        received.len()
    );
    eprintln!(
        "a download nobody takes (minimum 100 kB/s over {WINDOW:?}): cut after {cut_after:?}, {} of {size} bytes sent",
        received.len()
    );
    // docs/reliability.md: cut after two windows: the first brings what
    // the sockets' buffers take, the second nothing. No sooner (the second
    // window starts once the first is judged), and within three.
    assert_cut_within_windows("a download nobody takes cut", cut_after, 2, 3);
}

#[tokio::test]
async fn zero_window_http2_clients_hold_neither_their_connections_nor_others_out() {
    let _turn = TOO_SLOW_COUNT.lock().await;
    let app = spawn_with(settings(&[
        ("AMO_MAX_CONNECTIONS", "6"),
        ("AMO_CLIENT_SHARE_PERCENT", "50"),
        ("AMO_MIN_TRANSFER_BYTES_PER_SEC", "1000"),
        ("AMO_MIN_TRANSFER_WINDOW_SECS", &WINDOW_SECS.to_string()),
    ]))
    .await;
    // The attacker opens as many connections as the replica takes, each
    // timed from before it was opened: its answer cannot have waited
    // longer.
    let mut held = Vec::new();
    for _ in 0..6 {
        let opening = Instant::now();
        held.push((opening, zero_window_connection(&app, ATTACKER).await));
    }
    // Another client is served meanwhile.
    let victim = app.client_at(VICTIM);
    expect_json(victim.get("/healthz").await, StatusCode::OK).await;
    // Every attacker connection is closed by the service: past its share
    // at once (a 503), the others once their answer waited a window. All
    // are read at once, so that each close is timed when it comes.
    let closes = futures_util::future::join_all(held.into_iter().map(
        |(opening, mut stream)| async move {
            let mut received = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
                .await
                .expect("the service closes a zero-window connection")
                .ok();
            (received, opening.elapsed())
        },
    ))
    .await;
    let (mut refused, mut cut_after) = (0, Vec::new());
    for (received, open_for) in closes {
        if received.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        } else {
            assert!(!received.is_empty(), "an HTTP/2 connection was served");
            cut_after.push(open_for);
        }
    }
    eprintln!(
        "6 zero-window HTTP/2 connections (window {WINDOW:?}): {refused} refused at once, \
         {} closed after {cut_after:?}",
        cut_after.len()
    );
    assert_eq!((refused, cut_after.len()), (3, 3));
    // docs/threat-model.md: closed once its answer waited a window.
    for took in cut_after {
        assert_cut_within_windows("a zero-window connection closed", took, 1, 2);
    }
}

#[tokio::test]
async fn token_requests_in_a_victims_name_never_revoke_the_victims_token() {
    let app = spawn_with(settings(&[
        ("AMO_MAX_OUTSTANDING_TOKENS", "3"),
        ("AMO_AUTH_RATE_PER_IP", "0"),
    ]))
    .await;
    let victim = app.client_at(VICTIM);
    let owner = Account::new();
    let data = random_body(2048);
    let (token, proof) = victim.upload_token(&owner, &data).await;
    // While the victim signs, strangers at 16 addresses ask for tokens in
    // its name, far past the cap.
    let mut strangers = Vec::new();
    for host in 10..26 {
        let stranger = app.client_at(&format!("127.0.0.{host}"));
        let mut tokens = Vec::new();
        for _ in 0..5 {
            tokens.push(stranger.token(&owner.address, json!("upload")).await);
        }
        strangers.push(tokens);
    }
    // Each stranger's partition is capped: its own oldest were revoked.
    for tokens in &strangers {
        assert_eq!(app.token_record(&tokens[0]).await, None);
        assert_eq!(app.token_record(&tokens[4]).await.as_deref(), Some("issued"));
    }
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    let response = victim.upload_v2(Some(&proof), data, None).await;
    expect_json(response, StatusCode::CREATED).await;
}
