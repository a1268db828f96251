//! The minimum transfer rate (`AMO_MIN_TRANSFER_BYTES_PER_SEC` over
//! `AMO_MIN_TRANSFER_WINDOW_SECS`): a body that keeps the service waiting on
//! its client must move at least that many bytes per second, or it is cut.
//!
//! Only the time the service waits on the client counts: for a request
//! body, from the moment a read finds nothing until bytes arrive; for a
//! response body, from the moment it is handed to the connection (and
//! after each piece the connection took) until the connection asks for
//! more. Time the service itself spends (on S3, Redis, hashing) never
//! counts against the client. Each window of such waiting must bring at
//! least `bytes_per_sec × window` bytes, as Apache's `mod_reqtimeout`
//! `MinRate` and nginx's `send_timeout` bound a slow client.
//!
//! A request body that falls below the rate fails with [`TooSlow`]: the
//! handler answers 408 `too_slow` and frees what it held (its upload slot,
//! its share of the v1 budget), and the connection closes. A response that
//! falls below it (a client that stops reading, or an HTTP/2 client that
//! keeps its flow-control window at zero) closes its connection, watched by
//! [`ResponseMeters::too_slow`] in the server loop.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    sync::Notify,
    time::{Instant, Sleep},
};

/// The slowest a body may move while the service waits on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinTransferRate {
    /// Bytes per second, on average over each window.
    pub bytes_per_sec: u64,
    /// The window: the waiting time over which the rate is judged.
    pub window: Duration,
}

impl MinTransferRate {
    /// The bytes one window must bring.
    fn bytes_per_window(&self) -> u64 {
        (self.bytes_per_sec as f64 * self.window.as_secs_f64()).ceil() as u64
    }

    /// What a cut says.
    fn too_slow(&self) -> TooSlow {
        TooSlow {
            bytes_per_sec: self.bytes_per_sec,
            window_secs: self.window.as_secs(),
        }
    }
}

/// A body moved more slowly than the minimum transfer rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the body moved less than {bytes_per_sec} bytes per second over {window_secs} s; it was cut"
)]
pub struct TooSlow {
    /// The minimum rate.
    pub bytes_per_sec: u64,
    /// Its window, in seconds.
    pub window_secs: u64,
}

impl TooSlow {
    /// The [`TooSlow`] an I/O error carries, however deeply it was wrapped
    /// (bodies wrap their errors in `io::Error`s).
    pub fn within(err: &io::Error) -> Option<TooSlow> {
        let mut inner = err.get_ref()?;
        loop {
            if let Some(too_slow) = inner.downcast_ref::<TooSlow>() {
                return Some(*too_slow);
            }
            inner = inner.downcast_ref::<io::Error>()?.get_ref()?;
        }
    }
}

/// How a window was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fast enough so far; judge again at the instant given, if the body
    /// is waiting on its client.
    Fine(Option<Instant>),
    /// Below the rate: cut it.
    TooSlow,
}

/// One body's waiting and progress in the current window.
#[derive(Debug)]
pub struct RateWindow {
    /// Waiting on the client since then, if it is.
    waiting_since: Option<Instant>,
    /// Waited in this window, before `waiting_since`.
    waited: Duration,
    /// Bytes moved in this window.
    bytes: u64,
}

impl RateWindow {
    /// A window that starts now, waiting on the client if `waiting`.
    pub fn new(now: Instant, waiting: bool) -> Self {
        Self {
            waiting_since: waiting.then_some(now),
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// The body waits on its client from `now`.
    pub fn wait(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// The client moved `bytes` at `now`: the waiting ends.
    pub fn moved(&mut self, now: Instant, bytes: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.bytes += bytes;
    }

    /// Judges the window at `now` against `rule`: once a whole window of
    /// waiting has passed, its bytes must reach the rule's, and a new window
    /// starts.
    pub fn judge(&mut self, now: Instant, rule: &MinTransferRate) -> Verdict {
        let waited = self.waited
            + self
                .waiting_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if waited >= rule.window {
            if self.bytes < rule.bytes_per_window() {
                return Verdict::TooSlow;
            }
            self.waited = Duration::ZERO;
            self.bytes = 0;
            if self.waiting_since.is_some() {
                self.waiting_since = Some(now);
            }
            return Verdict::Fine(self.waiting_since.map(|since| since + rule.window));
        }
        Verdict::Fine(self.waiting_since.map(|_| now + (rule.window - waited)))
    }
}

/// A request body held to the minimum rate: it fails with [`TooSlow`] when
/// a window of waiting brings too few bytes.
pub struct MeteredRequestBody<B> {
    body: B,
    rule: MinTransferRate,
    window: RateWindow,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> MeteredRequestBody<B> {
    /// `body`, held to `rule` from now.
    pub fn new(body: B, rule: MinTransferRate) -> Self {
        Self {
            body,
            rule,
            window: RateWindow::new(Instant::now(), false),
            timer: None,
        }
    }
}

impl<B> MeteredRequestBody<B> {
    /// Fails the body: it fell below the rate.
    fn cut(&mut self) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        crate::metrics::limited("min_transfer_rate");
        Poll::Ready(Some(Err(io::Error::other(self.rule.too_slow()))))
    }
}

impl<B> HttpBody for MeteredRequestBody<B>
where
    B: HttpBody<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let bytes = frame
                    .as_ref()
                    .and_then(|frame| frame.as_ref().ok())
                    .and_then(Frame::data_ref)
                    .map_or(0, |data| data.len() as u64);
                let now = Instant::now();
                this.window.moved(now, bytes);
                this.timer = None;
                if this.window.judge(now, &this.rule) == Verdict::TooSlow {
                    return this.cut();
                }
                Poll::Ready(frame)
            }
            Poll::Pending => loop {
                let now = Instant::now();
                this.window.wait(now);
                let Verdict::Fine(Some(next)) = this.window.judge(now, &this.rule) else {
                    return this.cut();
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                timer.as_mut().reset(next);
                ready!(timer.as_mut().poll(cx));
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The response bodies of one connection, held to the minimum rate.
#[derive(Default)]
pub struct ResponseMeters {
    meters: Mutex<Vec<Weak<Mutex<RateWindow>>>>,
    added: Notify,
}

/// One response's meter: the body reports to it; dropped with the body.
pub struct ResponseMeter(Arc<Mutex<RateWindow>>);

impl ResponseMeter {
    /// The connection asked for the next piece.
    pub fn asked(&self) -> MeterGuard<'_> {
        MeterGuard(&self.0)
    }
}

/// A poll of a response body in progress: reports what it gave.
pub struct MeterGuard<'a>(&'a Mutex<RateWindow>);

impl MeterGuard<'_> {
    /// The body gave `bytes` (the connection took them), and now waits on
    /// the client until asked again.
    pub fn gave(self, bytes: u64) {
        let now = Instant::now();
        let mut window = lock(self.0);
        window.moved(now, bytes);
        window.wait(now);
    }

    /// The body had nothing yet (it waits on the service, not the client),
    /// or ended.
    pub fn nothing(self) {
        lock(self.0).moved(Instant::now(), 0);
    }
}

fn lock(window: &Mutex<RateWindow>) -> std::sync::MutexGuard<'_, RateWindow> {
    window
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ResponseMeters {
    /// A meter for a response handed to the connection now: it waits on
    /// the client until the connection first asks for it.
    pub fn add(&self) -> ResponseMeter {
        let meter = Arc::new(Mutex::new(RateWindow::new(Instant::now(), true)));
        lock_meters(&self.meters).push(Arc::downgrade(&meter));
        self.added.notify_waiters();
        ResponseMeter(meter)
    }

    /// Resolves when a response of this connection falls below `rule`.
    pub async fn too_slow(&self, rule: MinTransferRate) {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            {
                let mut meters = lock_meters(&self.meters);
                meters.retain(|meter| meter.strong_count() > 0);
                for meter in meters.iter().filter_map(Weak::upgrade) {
                    match lock(&meter).judge(now, &rule) {
                        Verdict::TooSlow => return,
                        Verdict::Fine(Some(at)) => {
                            next = Some(next.map_or(at, |next| next.min(at)));
                        }
                        Verdict::Fine(None) => {}
                    }
                }
                if !meters.is_empty() {
                    // A body that is not waiting now may start to without
                    // telling: look again within half a window.
                    let soon = now + rule.window / 2;
                    next = Some(next.map_or(soon, |next| next.min(soon)));
                }
            }
            match next {
                None => added.await,
                Some(at) => {
                    tokio::select! {
                        () = added => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }
}

fn lock_meters(
    meters: &Mutex<Vec<Weak<Mutex<RateWindow>>>>,
) -> std::sync::MutexGuard<'_, Vec<Weak<Mutex<RateWindow>>>> {
    meters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: MinTransferRate = MinTransferRate {
        bytes_per_sec: 100,
        window: Duration::from_secs(10),
    };

    #[test]
    fn a_window_of_waiting_must_bring_its_bytes() {
        let start = Instant::now();
        let mut window = RateWindow::new(start, true);
        assert_eq!(
            window.judge(start, &RULE),
            Verdict::Fine(Some(start + RULE.window))
        );
        window.moved(start + Duration::from_secs(4), 999);
        window.wait(start + Duration::from_secs(4));
        // 9 s waited, 999 bytes: not judged yet.
        let at = start + Duration::from_secs(9);
        assert_eq!(
            window.judge(at, &RULE),
            Verdict::Fine(Some(at + Duration::from_secs(1)))
        );
        // A whole window with 999 bytes of the 1,000 due.
        assert_eq!(
            window.judge(start + Duration::from_secs(10), &RULE),
            Verdict::TooSlow
        );
    }

    #[test]
    fn time_the_service_spends_does_not_count_and_a_full_window_starts_anew() {
        let start = Instant::now();
        let mut window = RateWindow::new(start, true);
        window.moved(start + Duration::from_secs(5), 1_000);
        // Not waiting on the client for a minute (the service works).
        let later = start + Duration::from_secs(65);
        assert_eq!(window.judge(later, &RULE), Verdict::Fine(None));
        window.wait(later);
        let end = later + Duration::from_secs(5);
        assert_eq!(
            window.judge(end, &RULE),
            Verdict::Fine(Some(end + RULE.window))
        );
        // The next window starts empty.
        window.moved(end, 0);
        window.wait(end);
        assert_eq!(window.judge(end + RULE.window, &RULE), Verdict::TooSlow);
    }

    #[test]
    fn a_cut_is_found_through_wrapped_io_errors() {
        let err = io::Error::other(io::Error::other(RULE.too_slow()));
        assert_eq!(TooSlow::within(&err), Some(RULE.too_slow()));
        assert_eq!(TooSlow::within(&io::Error::other("other")), None);
        assert_eq!(
            TooSlow::within(&io::Error::from(io::ErrorKind::BrokenPipe)),
            None
        );
    }
}
