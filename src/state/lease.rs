//! Leases: keys whose value names their holder (`claimed:<holder id>`) and
//! that expire unless the holder keeps renewing them. Token claims and
//! parcel write locks are both leases, so a replica that dies lets them
//! lapse.

use std::time::Duration;

use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Shared, StateError, Taken, claimed_by, unix_now};
use crate::error::with_sources;

/// Why an issued key could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The key is absent: never issued, expired or used up.
    Absent,
    /// Another request holds it now.
    Held,
}

/// A key this request holds. It is renewed in the background, every third
/// of its term, while held.
/// [`Lease::end`] deletes it (the work is done); [`Lease::give_up`] restores
/// it if it was taken from `issued`, else deletes it. Dropped, it gives up.
pub struct Lease {
    state: Shared,
    key: String,
    holder: String,
    restore_until: Option<u64>,
    term: Duration,
    renewal: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes `key` as a new lease of `term` if nobody holds it. `None`: it
    /// is taken.
    pub async fn try_take(
        state: &Shared,
        key: String,
        term: Duration,
    ) -> Result<Option<Self>, StateError> {
        let holder = Uuid::new_v4().to_string();
        let taken = state.set_new(&key, &claimed_by(&holder), term).await?;
        Ok(taken.then(|| Self::held(state.clone(), key, holder, None, term)))
    }

    /// Takes a lease on `key` if it holds `issued`, atomically: of any number
    /// of concurrent attempts on any replicas, at most one succeeds. Given up
    /// without being ended, the key returns to `issued` until `restore_until`
    /// (Unix seconds).
    pub async fn take_issued(
        state: Shared,
        key: String,
        restore_until: u64,
        term: Duration,
    ) -> Result<Result<Self, TakeOutcome>, StateError> {
        let holder = Uuid::new_v4().to_string();
        Ok(match state.take_issued(&key, &holder, term).await? {
            Taken::Now => Ok(Self::held(state, key, holder, Some(restore_until), term)),
            Taken::ByAnother => Err(TakeOutcome::Held),
            Taken::Absent => Err(TakeOutcome::Absent),
        })
    }

    /// A lease on `key` already taken by `holder`; starts renewing it.
    fn held(
        state: Shared,
        key: String,
        holder: String,
        restore_until: Option<u64>,
        term: Duration,
    ) -> Self {
        let renewal = {
            let (state, key, holder) = (state.clone(), key.clone(), holder.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(term / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match state.renew(&key, &holder, term).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(err) => {
                            tracing::warn!(err = %with_sources(&err), "could not renew a lease")
                        }
                    }
                }
            })
        };
        Self {
            state,
            key,
            holder,
            restore_until,
            term,
            renewal: Some(renewal),
        }
    }

    /// Fencing: renews the lease for a full term now, and answers whether
    /// this holder still held it. A holder that lost its lease (it lapsed
    /// while renewals failed, or a Redis failover lost the claim) must
    /// not commit: another may hold the key now.
    pub async fn confirm(&self) -> Result<bool, StateError> {
        self.state.renew(&self.key, &self.holder, self.term).await
    }

    /// Deletes the key if this lease still holds it; answers whether it did.
    pub async fn end(mut self) -> Result<bool, StateError> {
        self.stop_renewal();
        self.state.end(&self.key, &self.holder).await
    }

    /// Replaces the key, if this lease still holds it, by `value` for
    /// `ttl`: the key outlives the lease. Answers whether it did.
    pub async fn replace(mut self, value: &str, ttl: Duration) -> Result<bool, StateError> {
        self.stop_renewal();
        self.state
            .swap(&self.key, &claimed_by(&self.holder), Some(value), ttl)
            .await
    }

    /// Gives the key up: back to `issued` for the rest of its lifetime, or
    /// deleted.
    pub async fn give_up(mut self) -> Result<bool, StateError> {
        self.stop_renewal();
        give_up(&self.state, &self.key, &self.holder, self.restore_until).await
    }

    fn stop_renewal(&mut self) -> bool {
        match self.renewal.take() {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

async fn give_up(
    state: &Shared,
    key: &str,
    holder: &str,
    restore_until: Option<u64>,
) -> Result<bool, StateError> {
    let remaining = restore_until
        .map(|deadline| Duration::from_secs(deadline.saturating_sub(unix_now())))
        .unwrap_or_default();
    state.restore(key, holder, remaining).await
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.stop_renewal() {
            let (state, key, holder, restore_until) = (
                self.state.clone(),
                self.key.clone(),
                self.holder.clone(),
                self.restore_until,
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = give_up(&state, &key, &holder, restore_until).await {
                        tracing::warn!(err = %with_sources(&err), "could not give up a lease; it lapses by itself");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::{ISSUED, MemoryState};

    #[tokio::test]
    async fn a_held_lease_is_renewed_past_its_term_and_lapses_once_dropped_unrenewed() {
        let state: Shared = Arc::new(MemoryState::new());
        let term = Duration::from_millis(300);
        let lease = Lease::try_take(&state, "lock".into(), term)
            .await
            .unwrap()
            .expect("free");
        assert!(
            Lease::try_take(&state, "lock".into(), term)
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::sleep(term * 4).await;
        assert!(
            state.value("lock").await.unwrap().is_some(),
            "renewed past four terms"
        );
        assert!(lease.end().await.unwrap());
        assert_eq!(state.value("lock").await.unwrap(), None);

        state
            .set_new("token", ISSUED, Duration::from_secs(60))
            .await
            .unwrap();
        let claim = Lease::take_issued(state.clone(), "token".into(), unix_now() + 60, term)
            .await
            .unwrap()
            .expect("issued");
        tokio::time::sleep(term * 4).await;
        assert!(
            state
                .value("token")
                .await
                .unwrap()
                .is_some_and(|value| value.starts_with("claimed:"))
        );
        assert!(claim.give_up().await.unwrap());
        assert_eq!(state.value("token").await.unwrap().as_deref(), Some(ISSUED));
    }
}
