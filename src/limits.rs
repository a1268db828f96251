//! Limits against abuse (issue: scale-out and operations).
//!
//! Token requests are counted per client address and per account in the
//! shared state, so a limit holds across every replica. Uploads are counted
//! per replica: past the cap, a replica answers 503 rather than take on more
//! than its memory and connections allow.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::AbuseLimits, domain::Address, error::Error, state::Shared};

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

    /// Counts a token request from `client` for `user`; refuses it (429) if
    /// either is over its limit for the current minute.
    pub async fn admit_token_request(
        &self,
        client: Option<IpAddr>,
        user: &Address,
    ) -> Result<(), Error> {
        if let Some(client) = client {
            self.count(
                format!("amo:rate:ip:{{{client}}}"),
                self.limits.auth_per_ip_per_minute,
                "auth_per_ip",
                "too many token requests from this address",
            )
            .await?;
        }
        self.count(
            format!("amo:rate:user:{{{user}}}"),
            self.limits.auth_per_user_per_minute,
            "auth_per_user",
            "too many token requests for this account",
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

/// The uploads one replica streams at once.
#[derive(Clone)]
pub struct UploadSlots {
    slots: Option<Arc<Semaphore>>,
    cap: usize,
}

/// A slot held for one upload; freed on drop.
pub struct UploadSlot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl UploadSlots {
    /// At most `cap` uploads at once; 0: no cap.
    pub fn new(cap: usize) -> Self {
        Self {
            slots: (cap > 0).then(|| Arc::new(Semaphore::new(cap))),
            cap,
        }
    }

    /// A slot for one more upload, or 503 `busy` if all are taken.
    pub fn take(&self) -> Result<UploadSlot, Error> {
        let Some(slots) = &self.slots else {
            return Ok(UploadSlot(None));
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(UploadSlot(Some(permit))),
            Err(_) => {
                crate::metrics::limited("concurrent_uploads");
                Err(Error::Busy(format!(
                    "this replica is streaming its maximum of {} uploads; retry shortly",
                    self.cap
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
            auth_per_ip_per_minute: 3,
            auth_per_user_per_minute: 2,
            ..AbuseLimits::default()
        };
        let limiter = RateLimiter::new(Arc::new(MemoryState::new()), limits);
        let user = Address::parse(&"ab".repeat(20)).unwrap();
        let other = Address::parse(&"cd".repeat(20)).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        limiter.admit_token_request(Some(ip), &user).await.unwrap();
        limiter.admit_token_request(Some(ip), &user).await.unwrap();
        let refused = limiter.admit_token_request(Some(ip), &user).await;
        assert!(
            matches!(refused, Err(Error::RateLimited { retry_after, .. }) if (1..=60).contains(&retry_after))
        );
        // The fourth request from the address is over its limit of 3,
        // whoever it is for.
        let refused = limiter.admit_token_request(Some(ip), &other).await;
        assert!(
            matches!(refused, Err(Error::RateLimited { .. })),
            "{refused:?}"
        );
        limiter.admit_token_request(None, &other).await.unwrap();
    }

    #[test]
    fn uploads_past_the_cap_are_busy_until_a_slot_frees() {
        let slots = UploadSlots::new(1);
        let first = slots.take().unwrap();
        assert!(matches!(slots.take(), Err(Error::Busy(_))));
        drop(first);
        assert!(slots.take().is_ok());
        let unlimited = UploadSlots::new(0);
        let _held: Vec<_> = (0..100).map(|_| unlimited.take().unwrap()).collect();
    }
}
