//! The server loop: accepts TCP connections and serves HTTP/1.1 and h2c on
//! each with hyper's connection builder, driven here because poem's `Server`
//! has no header read timeout and no cap on connections.
//!
//! Per replica:
//! - at most `max_connections` connections are open; past it a new
//!   connection gets a bare `503` with a JSON body (best effort, never
//!   waited for) and is closed at once, while the open ones go on;
//! - a request head (the request line and every header) must arrive whole
//!   within `header_read_timeout` of its first byte, and a new connection
//!   must send its first head within that time of being accepted;
//! - a connection with no request in flight (none being read, handled or
//!   answered) is closed after `idle_timeout`.
//!
//! The timers are watched per connection from what its socket reads and
//! which requests are in flight (the response body is tracked until hyper
//! has sent it all), so a long upload or download is never cut by them:
//! its body has its own timeouts (`AMO_BODY_IDLE_TIMEOUT_SECS`, the S3
//! timeout).
//!
//! hyper answers some malformed requests itself (`400`, `414`, `431`),
//! with an empty body. On a connection's first request those answers are
//! rewritten into this service's JSON error format on their way to the
//! socket; on later requests of a keep-alive connection they go out as
//! hyper wrote them (nothing else tells them apart from the bytes of a
//! response body).

use std::{
    convert::Infallible,
    future::Future,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Buf;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use poem::{
    Endpoint, Request,
    http::{self, uri::Scheme},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::ClientAddress,
    error::Error,
    limits::{Slot, SlotKind, Slots},
    transfer_rate::{MeteredRequestBody, MinTransferRate, ResponseMeter, ResponseMeters},
};

/// How one replica treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The longest a request head may take to arrive, from its first byte
    /// (or from the accept, for a connection's first request).
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// The most connections open at once; more are closed at once.
    pub max_connections: usize,
    /// The streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// The slowest a request or response body may move while the service
    /// waits on its client; `None`: no minimum.
    pub min_transfer: Option<MinTransferRate>,
    /// The share of `max_connections` one client (a peer address, IPv4 or
    /// IPv6 /64) may hold open, in percent; 100: no share (as behind a
    /// trusted proxy, whose own address every connection has).
    pub client_share_percent: u64,
}

/// The most headers an HTTP/2 request may carry, in bytes (as poem's
/// `Server`).
const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// HTTP/2 streams a client may reset before they were answered (as poem's
/// `Server`): bounds the "rapid reset" attack.
const HTTP2_MAX_PENDING_RESET_STREAMS: usize = 20;
/// The pause after a failed accept (such as no file descriptor left), so
/// that a full table does not spin the accept loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `endpoint` on `listener` until `shutdown` completes; then stops
/// accepting, lets the requests in flight finish for up to `drain`, and
/// closes what is left.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = listener.local_addr()?;
    let open = Slots::new(
        SlotKind::Connection,
        limits.max_connections,
        limits.client_share_percent,
        1,
    );
    let draining = CancellationToken::new();
    let forced = CancellationToken::new();
    // Every connection task holds a sender; `recv` answers `None` once
    // they all ended.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    tracing::info!(addr = %local, "listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let slot = match OpenSlot::take(&open, ClientAddress::of(remote.ip())) {
            Ok(slot) => slot,
            Err(reason) => {
                refuse(stream, reason);
                continue;
            }
        };
        // hyper writes a streamed answer's head and its first body chunk
        // apart: without TCP_NODELAY the chunk waits for the client's
        // delayed ACK of the head.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            endpoint: endpoint.clone(),
            local,
            remote,
            limits,
            draining: draining.clone(),
            forced: forced.clone(),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            connection.serve(stream).await;
            drop((slot, alive));
        });
    }
    drop(listener);
    drop(alive);
    draining.cancel();
    let open_now = open.in_use();
    if open_now > 0 {
        tracing::info!(
            connections = open_now,
            drain_secs = drain.as_secs_f32(),
            "draining"
        );
    }
    if tokio::time::timeout(drain, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = open.in_use(),
            "the drain timeout passed; closing the connections left"
        );
        forced.cancel();
        all_closed.recv().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// One of the `max_connections` places, and of its client's share; freed
/// when dropped.
struct OpenSlot(#[allow(dead_code)] Slot);

impl OpenSlot {
    /// A place for a connection of `client` in `open`, or why there is
    /// none: the client holds its share (`client_share`), or the replica
    /// is full (`refused`).
    fn take(open: &Slots, client: ClientAddress) -> Result<Self, &'static str> {
        match open.take(client) {
            Ok(slot) => {
                crate::metrics::connections_open(1);
                Ok(Self(slot))
            }
            Err(Error::ClientShare(_)) => Err("client_share"),
            Err(_) => Err("refused"),
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        crate::metrics::connections_open(-1);
    }
}

/// What a connection past the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json; charset=utf-8\r\n\
    retry-after: 2\r\n\
    connection: close\r\n\
    content-length: 101\r\n\r\n\
    {\"error\":\"this replica has too many open connections; try again later\",\"code\":\"too_many_connections\"}";

/// Closes a connection past the cap (or its client's share of it) at once,
/// after writing it a 503 if the socket takes it without waiting.
fn refuse(stream: TcpStream, reason: &'static str) {
    crate::metrics::connection_closed(reason);
    let _ = stream.try_write(REFUSAL);
    drop(stream);
}

/// Why a connection was closed by its timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderTimeout,
    Idle,
}

impl Expired {
    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
        }
    }
}

/// "Not set", in the millisecond fields of [`Activity`].
const UNSET: u64 = u64::MAX;

/// What a connection is doing, as its timers see it.
struct Activity {
    opened: Instant,
    /// Requests whose answer is not sent yet.
    in_flight: AtomicUsize,
    /// Requests the service was given on this connection.
    requests: AtomicUsize,
    /// Milliseconds from `opened` to the first byte of the head being read,
    /// or [`UNSET`].
    head_since: AtomicU64,
    /// Milliseconds from `opened` to the end of the last answer.
    idle_since: AtomicU64,
    /// Woken when a timer may have to be set again.
    changed: Notify,
    /// The responses being sent, held to the minimum transfer rate.
    responses: ResponseMeters,
    /// Its state, as `amo_http_connections` counts it (an index of
    /// [`STATES`]).
    state: AtomicU8,
}

/// The states of a connection in `amo_http_connections`.
const STATES: [&str; 3] = ["reading_head", "active", "idle"];
const READING_HEAD: u8 = 0;
const ACTIVE: u8 = 1;
const IDLE: u8 = 2;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            // A new connection owes its first head from the start.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            changed: Notify::new(),
            responses: ResponseMeters::default(),
            state: {
                crate::metrics::connection_state(None, Some(STATES[READING_HEAD as usize]));
                AtomicU8::new(READING_HEAD)
            },
        }
    }

    /// The connection is now in state `to`.
    fn enter(&self, to: u8) {
        let from = self.state.swap(to, Ordering::AcqRel);
        if from != to {
            crate::metrics::connection_state(
                Some(STATES[from as usize]),
                Some(STATES[to as usize]),
            );
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// The socket read something: with no request in flight, that is the
    /// start of a head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(UNSET, self.now_ms(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.enter(READING_HEAD);
            self.changed.notify_waiters();
        }
    }

    /// hyper parsed a head and hands the request to the service.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(UNSET, Ordering::Release);
        self.enter(ACTIVE);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// When the connection is to be closed if nothing changes, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expired)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            UNSET => Some((
                self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
                Expired::Idle,
            )),
            since => Some((
                self.at(since) + limits.header_read_timeout,
                Expired::HeaderTimeout,
            )),
        }
    }

    /// Resolves when a timer expires.
    async fn expired(&self, limits: &ConnectionLimits) -> Expired {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline(limits) {
                None => changed.await,
                Some((at, why)) => {
                    if Instant::now() >= at {
                        return why;
                    }
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        let state = self.state.load(Ordering::Acquire);
        crate::metrics::connection_state(Some(STATES[state as usize]), None);
    }
}

/// A request in flight, until its answer is sent (or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.enter(IDLE);
            activity.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it,
/// and reports its progress to the minimum transfer rate.
struct Tracked<B> {
    body: B,
    meter: Option<ResponseMeter>,
    _in_flight: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let asked = this.meter.as_ref().map(ResponseMeter::asked);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(asked) = asked {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    asked.gave(frame.data_ref().map_or(0, |data| data.remaining() as u64));
                }
                _ => asked.nothing(),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One accepted connection.
struct Connection<E> {
    endpoint: Arc<E>,
    local: SocketAddr,
    remote: SocketAddr,
    limits: ConnectionLimits,
    draining: CancellationToken,
    forced: CancellationToken,
}

impl<E: Endpoint + 'static> Connection<E> {
    async fn serve(self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = Watched {
            inner: stream,
            activity: activity.clone(),
            rewritten: None,
        };
        let service = {
            let (endpoint, activity) = (self.endpoint.clone(), activity.clone());
            let (local, remote) = (self.local, self.remote);
            let min_transfer = self.limits.min_transfer;
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = activity.request_started();
                let mut request = Request::from((
                    request,
                    LocalAddr(local.into()),
                    RemoteAddr(remote.into()),
                    Scheme::HTTP,
                ));
                if let Some(rule) = min_transfer {
                    let body = BoxBody::from(request.take_body());
                    request.set_body(poem::Body::from(BoxBody::new(MeteredRequestBody::new(
                        body, rule,
                    ))));
                }
                let endpoint = endpoint.clone();
                let activity = activity.clone();
                async move {
                    let response: http::Response<_> = endpoint.get_response(request).await.into();
                    let meter = min_transfer.map(|_| activity.responses.add());
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        meter,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(self.limits.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESET_STREAMS)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut draining = false;
        let too_slow = async {
            match self.limits.min_transfer {
                Some(rule) => activity.responses.too_slow(rule).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(too_slow);
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                () = too_slow.as_mut() => {
                    // A response the client does not take fast enough (it
                    // stopped reading, or holds an HTTP/2 window at zero):
                    // the connection and everything it holds are let go.
                    crate::metrics::connection_closed("too_slow");
                    tracing::debug!(remote = %self.remote, "closing a connection too slow to take its response");
                    return;
                }
                why = activity.expired(&self.limits) => {
                    // Nothing is in flight, and the connection is not
                    // polled again: closing the socket loses nothing.
                    // (hyper's graceful shutdown would wait for a head
                    // begun.)
                    crate::metrics::connection_closed(why.label());
                    tracing::debug!(remote = %self.remote, reason = why.label(), "closing a connection");
                    return;
                }
                () = self.draining.cancelled(), if !draining => {
                    // HTTP/1.1: closes once the request in flight is
                    // answered; HTTP/2: GOAWAY, then the streams in flight
                    // finish. The timers still cut a head being trickled.
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = self.forced.cancelled() => return,
            }
        }
    }
}

/// A connection's socket, reporting what it reads to the timers, and
/// rewriting hyper's own error answers on a first request into JSON.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A rewritten answer, and how much of it is written.
    rewritten: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// Writes what is left of a rewritten answer.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = self.rewritten.as_mut() {
            if *written == answer.len() {
                self.rewritten = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Replaces `bytes` if they are hyper's own error answer to a first
    /// request: answers how many bytes were taken.
    fn rewrite(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.activity.requests.load(Ordering::Acquire) != 0 {
            return None;
        }
        let answer = json_answer(bytes)?;
        self.rewritten = Some((answer, 0));
        Some(bytes.len())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_rewritten(cx))?;
        if let Some(taken) = this.rewrite(buf) {
            let _ = this.poll_rewritten(cx)?;
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_rewritten(cx))?;
        if this.activity.requests.load(Ordering::Acquire) == 0 {
            let bytes: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            if let Some(taken) = this.rewrite(&bytes) {
                let _ = this.poll_rewritten(cx)?;
                return Poll::Ready(Ok(taken));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rewritten(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rewritten(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON answer that replaces hyper's own answer in `bytes`, if they
/// are one: an HTTP/1 head of status 400, 414 or 431.
fn json_answer(bytes: &[u8]) -> Option<Vec<u8>> {
    let rest = bytes
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?;
    let status = std::str::from_utf8(rest.get(..3)?).ok()?;
    let (message, code) = match status {
        "400" => (
            "the request head is malformed (request line, a header name or value with \
             forbidden characters, or framing)",
            "bad_request",
        ),
        "414" => ("the request URI is too long", "uri_too_long"),
        "431" => (
            "the request head has too many header fields or is too large",
            "headers_too_large",
        ),
        _ => return None,
    };
    let body = format!(
        "{{\"error\":{},\"code\":{}}}",
        serde_json::Value::from(message),
        serde_json::Value::from(code)
    );
    let reason = http::StatusCode::from_bytes(status.as_bytes())
        .ok()?
        .canonical_reason()
        .unwrap_or("Error");
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_to_a_first_request_become_json() {
        let answer = json_answer(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "headers_too_large");
        assert!(json_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(json_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").is_none());
        assert!(json_answer(b"\x00\x00\x12\x04").is_none());
    }

    #[test]
    fn the_refusal_declares_its_length() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "too_many_connections");
    }
}
