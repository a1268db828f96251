//! The answers hyper writes itself, before the service sees a request: on
//! a connection's first request they come in the JSON error format; on a
//! later request of a keep-alive connection hyper's bare answer goes out
//! (README, "Errors"). A body whose chunked framing breaks is the service's
//! to answer, in JSON. A `HEAD` never reaches a handler that spends a token.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    adversarial::{assert_nothing_stored, assert_token_unused, exchange},
    helpers::*,
};

fn upload_head(proof: &Proof, extra: &str, framing: &str) -> String {
    format!(
        "POST /api/v2/parcels HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\n{framing}{}{extra}\r\n",
        proof_lines(proof)
    )
}

#[tokio::test]
async fn too_many_headers_and_control_characters_answer_json_on_a_first_request() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(64);
    let (token, proof) = app.upload_token(&owner, &data).await;
    let many: String = (0..120).map(|i| format!("X-Junk-{i}: j\r\n")).collect();
    let cases = [
        (many, 431, "headers_too_large"),
        ("X-Note: a\x01b\r\n".to_owned(), 400, "bad_request"),
        ("X-Note: a\x7fb\r\n".to_owned(), 400, "bad_request"),
        ("X Note: spaced name\r\n".to_owned(), 400, "bad_request"),
    ];
    for (extra, status, code) in cases {
        let length = format!("Content-Length: {}\r\n", data.len());
        let mut request = upload_head(&proof, &extra, &length).into_bytes();
        request.extend_from_slice(&data);
        let answers = exchange(&app, &request).await;
        assert_eq!(answers.len(), 1, "{extra:?}: {answers:?}");
        assert_eq!(answers[0].status, status, "{extra:?}: {:?}", answers[0]);
        assert_eq!(answers[0].error_code(), code, "{extra:?}");
        assert_eq!(answers[0].header("connection"), Some("close"));
    }
    assert_nothing_stored(&app).await;
    assert_token_unused(&app, &token).await;
}

#[tokio::test]
async fn a_broken_chunked_body_is_answered_by_the_service_in_json() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(64);
    let (token, proof) = app.upload_token(&owner, &data).await;
    // A chunk size that is not hex, then a chunk longer than it says.
    for body in [
        b"zz\r\nabc\r\n0\r\n\r\n".to_vec(),
        [b"4\r\n".as_slice(), &data, b"\r\n0\r\n\r\n"].concat(),
    ] {
        let mut request = upload_head(&proof, "", "Transfer-Encoding: chunked\r\n").into_bytes();
        request.extend_from_slice(&body);
        let answers = exchange(&app, &request).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].status, 400, "{:?}", answers[0]);
        assert_eq!(answers[0].error_code(), "bad_request");
    }
    assert_nothing_stored(&app).await;
    assert_token_unused(&app, &token).await;
}

#[tokio::test]
async fn on_a_later_request_of_a_connection_hyper_answers_bare() {
    let app = spawn_app().await;
    let many: String = (0..120).map(|i| format!("X-Junk-{i}: j\r\n")).collect();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n"
    );
    let answers = exchange(&app, request.as_bytes()).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    // What the README shows: 431, no body, the connection closed.
    assert_eq!(answers[1].status, 431, "{:?}", answers[1]);
    assert!(answers[1].body.is_empty(), "{:?}", answers[1]);
    assert_eq!(answers[1].header("content-length"), Some("0"));
}

/// poem answers a `HEAD` with the `GET` handler. On a download that would
/// spend the token for an answer without a body: `HEAD` is in neither the
/// protocol nor the spec there, so it answers 405 (naming the methods) and
/// the token stays usable. A `HEAD` on a route without a token is served.
#[tokio::test]
async fn head_on_a_download_route_is_refused_and_spends_no_token() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(100);
    let id = app.store_v2(&owner, &data).await;
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    for path in [format!("/api/v2/parcels/{id}"), format!("/api/v1/parcels/{id}")] {
        let response = owner
            .prove(&token)
            .apply(app.http.head(format!("{}{path}", app.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert_eq!(allow, "GET, DELETE", "{path}");
        assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    }
    let inspected = app
        .http
        .head(format!("{}/api/v2/parcels/{id}/metadata", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(inspected.status(), StatusCode::OK);
    let response = app.download_v2(Some(&owner.prove(&token)), &id, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), data);
}

/// docs/threat-model.md: "at most 64 concurrent streams per connection".
/// On one HTTP/2 connection (h2c, prior knowledge) that announces a window
/// of zero, 65 `GET /healthz` whose answers' bodies can never be sent: the
/// server's SETTINGS say 64, the first 64 streams get their answer's
/// headers, and the 65th is refused (RST_STREAM, REFUSED_STREAM). Frames are
/// written and read by hand here, from RFC 9113.
#[tokio::test]
async fn an_http2_connection_gets_at_most_64_concurrent_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const STREAMS: u32 = 65;
    let app = spawn_app().await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
    bytes.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    for n in 0..STREAMS {
        let id = (2 * n + 1).to_be_bytes();
        // HEADERS, END_STREAM | END_HEADERS: :method GET, :scheme http,
        // :path /healthz (a literal without indexing).
        let mut block = vec![0x82, 0x86, 0x04, 8];
        block.extend_from_slice(b"/healthz");
        bytes.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5]);
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(&block);
    }
    stream.write_all(&bytes).await.unwrap();

    let last = 2 * (STREAMS - 1) + 1;
    let mut max_streams = None;
    let mut answered = std::collections::BTreeSet::new();
    let mut reset = std::collections::BTreeMap::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while answered.len() + reset.len() < STREAMS as usize {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.unwrap();
            match kind {
                // SETTINGS, not an ACK: 6-byte parameters.
                0x4 if flags & 0x1 == 0 => {
                    for parameter in payload.chunks(6) {
                        if parameter[..2] == [0, 3] {
                            max_streams = Some(u32::from_be_bytes(parameter[2..].try_into().unwrap()));
                        }
                    }
                }
                0x1 => {
                    answered.insert(id);
                }
                0x3 => {
                    reset.insert(id, u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x7 => panic!("GOAWAY after streams {answered:?}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no word on stream {last}: answered {answered:?}, reset {reset:?}");
    assert_eq!(max_streams, Some(64), "SETTINGS_MAX_CONCURRENT_STREAMS");
    let first: Vec<u32> = (0..STREAMS - 1).map(|n| 2 * n + 1).collect();
    assert_eq!(answered.iter().copied().collect::<Vec<_>>(), first);
    // RST_STREAM with REFUSED_STREAM (0x7) on the 65th, and on no other.
    assert_eq!(reset.into_iter().collect::<Vec<_>>(), vec![(last, 0x7)]);
}
