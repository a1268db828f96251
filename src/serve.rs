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
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use http_body::{Body as HttpBody, Frame, SizeHint};
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
    let open = Arc::new(AtomicUsize::new(0));
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
        let Some(slot) = OpenSlot::take(&open, limits.max_connections) else {
            refuse(stream);
            continue;
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
    let open_now = open.load(Ordering::Relaxed);
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
            connections = open.load(Ordering::Relaxed),
            "the drain timeout passed; closing the connections left"
        );
        forced.cancel();
        all_closed.recv().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// One of the `max_connections` places; freed when dropped.
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now < max).then_some(now + 1)
        })
        .ok()?;
        crate::metrics::connections_open(1);
        Some(Self(open.clone()))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// Closes a connection past the cap at once, after writing it a 503 if the
/// socket takes it without waiting.
fn refuse(stream: TcpStream) {
    crate::metrics::connection_closed("refused");
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
}

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
            self.changed.notify_waiters();
        }
    }

    /// hyper parsed a head and hands the request to the service.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(UNSET, Ordering::Release);
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

/// A request in flight, until its answer is sent (or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = activity.request_started();
                let request = Request::from((
                    request,
                    LocalAddr(local.into()),
                    RemoteAddr(remote.into()),
                    Scheme::HTTP,
                ));
                let endpoint = endpoint.clone();
                async move {
                    let response: http::Response<_> = endpoint.get_response(request).await.into();
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
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
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
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
