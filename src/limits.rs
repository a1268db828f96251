//! Limits against abuse (issue: scale-out and operations).
//!
//! Token requests are counted per client address (per /64 for IPv6, the
//! block one subscriber gets) in the shared state, so the limit holds across
//! every replica. They are not counted per account: `/auth` needs no proof,
//! so a per-account limit would let anyone lock an account's owner out (the
//! outstanding-token cap evicts instead, see `auth::tokens`). Uploads, and the
//! memory of v1 upload bodies (held whole), are counted per replica: past
//! the cap, a replica answers 503 rather than take on more than its memory
//! and connections allow.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::AbuseLimits, domain::ClientAddress, error::Error, state::Shared};

/// The window of the token-request rate limits.
const WINDOW: Duration = Duration::from_secs(60);

/// The token-request rate limits.
#[derive(Clone)]
pub struct RateLimiter {
    state: Shared,
    limits: AbuseLimits,
}

impl RateLimiter {
    /// Limits `limits`, counted in `state`.
    pub fn new(state: Shared, limits: AbuseLimits) -> Self {
        Self { state, limits }
    }

    /// Counts a token request from `client`; refuses it (429) if the
    /// client is over its limit for the current minute.
    pub async fn admit_token_request(&self, client: ClientAddress) -> Result<(), Error> {
        self.count(
            format!("amo:rate:ip:{{{}}}", client.key()),
            self.limits.auth_per_ip_per_minute,
            "auth_per_ip",
            "too many token requests from this address",
        )
        .await
    }

    async fn count(
        &self,
        key: String,
        limit: u64,
        name: &'static str,
        what: &str,
    ) -> Result<(), Error> {
        if limit == 0 {
            return Ok(());
        }
        let count = self.state.hit(&key, WINDOW).await?;
        if count <= limit {
            return Ok(());
        }
        crate::metrics::limited(name);
        let retry_after = self
            .state
            .remaining(&key)
            .await?
            .map_or(WINDOW.as_secs(), |left| left.as_secs() + 1);
        Err(Error::RateLimited {
            message: format!("{what} (at most {limit} a minute); retry in {retry_after} s"),
            retry_after,
        })
    }
}

/// A kind of work one replica does a bounded number of at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Uploads, v1 and v2.
    Upload,
    /// Memory of v1 upload bodies, in MiB: each is held whole.
    V1UploadMemory,
}

impl SlotKind {
    /// The `limit` label of its refusals.
    fn label(self) -> &'static str {
        match self {
            Self::Upload => "concurrent_uploads",
            Self::V1UploadMemory => "v1_upload_memory",
        }
    }

    /// What is done, for the refusal's text.
    fn doing(self) -> &'static str {
        match self {
            Self::Upload => "uploads",
            Self::V1UploadMemory => "MiB of v1 upload bodies",
        }
    }
}

/// The slots of one kind of work on one replica.
#[derive(Clone)]
pub struct Slots {
    kind: SlotKind,
    slots: Option<Arc<Semaphore>>,
    cap: usize,
}

/// What one piece of work holds of the slots it took; freed on drop.
pub struct Slot(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

impl Slot {
    /// This and `other`, held and freed together.
    pub fn join(mut self, mut other: Slot) -> Slot {
        self.0.append(&mut other.0);
        self
    }
}

impl Slots {
    /// At most `cap` at once; 0: no cap.
    pub fn new(kind: SlotKind, cap: usize) -> Self {
        Self {
            kind,
            slots: (cap > 0).then(|| Arc::new(Semaphore::new(cap))),
            cap,
        }
    }

    /// The cap (0: none).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether every slot is taken: the next request would answer 503.
    pub fn is_full(&self) -> bool {
        self.slots
            .as_ref()
            .is_some_and(|slots| slots.available_permits() == 0)
    }

    /// A slot, or 503 `busy` if all are taken.
    pub fn take(&self) -> Result<Slot, Error> {
        self.take_many(1)
    }

    /// `count` slots at once (at most the cap: a piece of work as large
    /// as the cap takes all), or 503 `busy` if that many are not free.
    pub fn take_many(&self, count: usize) -> Result<Slot, Error> {
        let Some(slots) = &self.slots else {
            return Ok(Slot(Vec::new()));
        };
        let count = u32::try_from(count.clamp(1, self.cap)).unwrap_or(u32::MAX);
        match slots.clone().try_acquire_many_owned(count) {
            Ok(permit) => Ok(Slot(vec![permit])),
            Err(_) => {
                crate::metrics::limited(self.kind.label());
                Err(Error::Busy(format!(
                    "this replica serves its maximum of {} {} at once; retry shortly",
                    self.cap,
                    self.kind.doing()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    fn client(text: &str) -> ClientAddress {
        ClientAddress::of(text.parse().unwrap())
    }

    #[tokio::test]
    async fn token_requests_over_the_limit_are_refused_with_a_retry_time() {
        let limits = AbuseLimits {
            auth_per_ip_per_minute: 2,
            ..AbuseLimits::default()
        };
        let limiter = RateLimiter::new(Arc::new(MemoryState::new()), limits);
        let ip = client("127.0.0.1");
        limiter.admit_token_request(ip).await.unwrap();
        limiter.admit_token_request(ip).await.unwrap();
        let refused = limiter.admit_token_request(ip).await;
        assert!(
            matches!(refused, Err(Error::RateLimited { retry_after, .. }) if (1..=60).contains(&retry_after))
        );
        limiter
            .admit_token_request(client("127.0.0.2"))
            .await
            .unwrap();
        limiter
            .admit_token_request(ClientAddress::UNKNOWN)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_client_is_counted_per_64() {
        let limits = AbuseLimits {
            auth_per_ip_per_minute: 1,
            ..AbuseLimits::default()
        };
        let limiter = RateLimiter::new(Arc::new(MemoryState::new()), limits);
        limiter
            .admit_token_request(client("2001:db8:1:2::1"))
            .await
            .unwrap();
        assert!(matches!(
            limiter
                .admit_token_request(client("2001:db8:1:2:ffff:1:2:3"))
                .await,
            Err(Error::RateLimited { .. })
        ));
        limiter
            .admit_token_request(client("2001:db8:1:3::1"))
            .await
            .unwrap();
    }

    #[test]
    fn work_past_the_cap_is_busy_until_a_slot_frees() {
        let slots = Slots::new(SlotKind::Upload, 1);
        let first = slots.take().unwrap();
        assert!(matches!(slots.take(), Err(Error::Busy(_))));
        drop(first);
        assert!(slots.take().is_ok());
        let unlimited = Slots::new(SlotKind::Upload, 0);
        let _held: Vec<_> = (0..100).map(|_| unlimited.take().unwrap()).collect();
    }

    #[test]
    fn weighted_work_takes_its_share_and_frees_it_with_what_it_joined() {
        let memory = Slots::new(SlotKind::V1UploadMemory, 10);
        let uploads = Slots::new(SlotKind::Upload, 2);
        let large = memory.take_many(7).unwrap().join(uploads.take().unwrap());
        assert!(matches!(memory.take_many(4), Err(Error::Busy(_))));
        let small = memory.take_many(3).unwrap();
        assert!(memory.is_full());
        drop(large);
        assert!(
            uploads.take().is_ok(),
            "the joined upload slot is freed too"
        );
        assert!(memory.take_many(7).is_ok());
        drop(small);
        // Work larger than the cap takes all of it, once it is all free.
        let _all = memory.take_many(1_000).unwrap();
        assert!(matches!(memory.take(), Err(Error::Busy(_))));
    }
}
