//! Work that must run to its end even if the request that started it is
//! dropped (a client that resets an HTTP/2 stream or closes its
//! connection drops the request's future wherever it is).

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::sync::Notify;

use crate::error::Error;

/// Detached work still running in this process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Told when the last detached work ends.
static ALL_DONE: Notify = Notify::const_new();

/// One detached work running; counted out when dropped.
struct Running;

impl Running {
    fn start() -> Self {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if RUNNING.fetch_sub(1, Ordering::SeqCst) == 1 {
            ALL_DONE.notify_waiters();
        }
    }
}

/// Runs `work` in a task of its own and waits for it. Dropping the waiting
/// future does not stop the work: whatever it began runs to its end, and
/// what it answers is dropped in order (a claim it took is given back).
pub async fn detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    let running = Running::start();
    tokio::spawn(async move {
        let _running = running;
        work.await
    })
    .await
    .map_err(|err| Error::Internal(format!("an operation's task failed: {err}")))
}

/// Waits, for at most `within`, until no detached work runs: at shutdown,
/// the requests cut at the drain timeout give their claims back before the
/// process exits. `false` if some work was still running.
pub async fn finish_detached(within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            let done = ALL_DONE.notified();
            if RUNNING.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    })
    .await
    .is_ok()
}
