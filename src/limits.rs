//! Limits against abuse (issue: scale-out and operations).
//!
//! Token requests are counted per client address (per /64 for IPv6, the
//! block one subscriber gets) in the shared state, so the limit holds across
//! every replica. They are not counted per account: `/auth` needs no proof,
//! so a per-account limit would let anyone lock an account's owner out (the
//! outstanding-token cap evicts instead, see `auth::tokens`). Uploads and v1
//! downloads are counted per replica: past the cap, a replica answers 503
//! rather than take on more than its memory and connections allow.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::AbuseLimits, error::Error, state::Shared};

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

    /// Whether `X-Forwarded-For` names the client.
    pub fn trusts_forwarded_for(&self) -> bool {
        self.limits.trust_forwarded_for
    }

    /// Counts a token request from `client`; refuses it (429) if the
    /// client is over its limit for the current minute.
    pub async fn admit_token_request(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let Some(client) = client else {
            return Ok(());
        };
        self.count(
            format!("amo:rate:ip:{{{}}}", rate_key_of(client)),
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

/// The key a client address is counted under: the address itself for
/// IPv4, its /64 for IPv6 (one subscriber commonly holds a whole /64).
pub fn rate_key_of(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                format!("{}/64", std::net::Ipv6Addr::from(segments))
            }
        },
    }
}

/// A kind of work one replica does a bounded number of at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Uploads, v1 and v2.
    Upload,
    /// v1 downloads, each held whole in memory.
    V1Download,
}

impl SlotKind {
    /// The `limit` label of its refusals.
    fn label(self) -> &'static str {
        match self {
            Self::Upload => "concurrent_uploads",
            Self::V1Download => "concurrent_v1_downloads",
        }
    }

    /// What is done, for the refusal's text.
    fn doing(self) -> &'static str {
        match self {
            Self::Upload => "uploads",
            Self::V1Download => "v1 downloads",
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

/// A slot held for one piece of work; freed on drop.
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

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
        let Some(slots) = &self.slots else {
            return Ok(Slot(None));
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot(Some(permit))),
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

    #[tokio::test]
    async fn token_requests_over_the_limit_are_refused_with_a_retry_time() {
        let limits = AbuseLimits {
            auth_per_ip_per_minute: 2,
            ..AbuseLimits::default()
        };
        let limiter = RateLimiter::new(Arc::new(MemoryState::new()), limits);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        limiter.admit_token_request(Some(ip)).await.unwrap();
        limiter.admit_token_request(Some(ip)).await.unwrap();
        let refused = limiter.admit_token_request(Some(ip)).await;
        assert!(
            matches!(refused, Err(Error::RateLimited { retry_after, .. }) if (1..=60).contains(&retry_after))
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        limiter.admit_token_request(Some(other)).await.unwrap();
        limiter.admit_token_request(None).await.unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_client_is_counted_per_64() {
        let limits = AbuseLimits {
            auth_per_ip_per_minute: 1,
            ..AbuseLimits::default()
        };
        let limiter = RateLimiter::new(Arc::new(MemoryState::new()), limits);
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limiter.admit_token_request(Some(first)).await.unwrap();
        assert!(matches!(
            limiter.admit_token_request(Some(same_64)).await,
            Err(Error::RateLimited { .. })
        ));
        limiter.admit_token_request(Some(next_64)).await.unwrap();
        assert_eq!(rate_key_of(same_64), "2001:db8:1:2::/64");
        assert_eq!(rate_key_of("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[test]
    fn work_past_the_cap_is_busy_until_a_slot_frees() {
        let slots = Slots::new(SlotKind::Upload, 1);
        let first = slots.take().unwrap();
        assert!(matches!(slots.take(), Err(Error::Busy(_))));
        drop(first);
        assert!(slots.take().is_ok());
        let unlimited = Slots::new(SlotKind::V1Download, 0);
        let _held: Vec<_> = (0..100).map(|_| unlimited.take().unwrap()).collect();
    }
}
