//! Work that must run to its end even if the request that started it is
//! dropped (a client that resets an HTTP/2 stream or closes its
//! connection drops the request's future wherever it is).

use std::future::Future;

use crate::error::Error;

/// Runs `work` in a task of its own and waits for it. Dropping the waiting
/// future does not stop the work: whatever it began runs to its end, and
/// what it answers is dropped in order (a claim it took is given back).
pub async fn detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|err| Error::Internal(format!("an operation's task failed: {err}")))
}
