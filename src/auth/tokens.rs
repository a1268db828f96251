//! The one-use record of every token, in the shared state (DESIGN §3).
//!
//! Key layout (part of the contract between versions):
//! `amo:token:{<jti>}` holds `issued` from issue until first use, with the
//! token's TTL. A request that uses the token takes it as a lease
//! (`claimed:<holder id>`, 30 s, renewed while the request works). Consuming
//! deletes the key; releasing puts `issued` back for the token's remaining
//! lifetime. The braces make the jti the Redis Cluster hash tag.

use std::time::Duration;

use crate::{
    error::Error,
    state::{ISSUED, Lease, Shared, TakeOutcome},
};

/// The Redis key of a token's record.
pub fn token_key(jti: &str) -> String {
    format!("amo:token:{{{jti}}}")
}

/// The shared token store.
#[derive(Clone)]
pub struct TokenStore {
    state: Shared,
}

impl TokenStore {
    /// A store on `state`.
    pub fn new(state: Shared) -> Self {
        Self { state }
    }

    /// The shared state, for readiness checks.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Records a new token's `jti` for `ttl`.
    pub async fn issue(&self, jti: &str, ttl: Duration) -> Result<(), Error> {
        if self.state.set_new(&token_key(jti), ISSUED, ttl).await? {
            Ok(())
        } else {
            Err(Error::Internal(format!("jti {jti} already recorded")))
        }
    }

    /// Claims the token `jti` (expiring at `exp`) for one request, atomically.
    /// Of concurrent claims on any replicas, at most one succeeds.
    pub async fn claim(&self, jti: &str, exp: u64) -> Result<TokenClaim, Error> {
        match Lease::take_issued(&self.state, token_key(jti), exp).await? {
            Ok(lease) => Ok(TokenClaim(lease)),
            Err(TakeOutcome::Held) => Err(Error::TokenInUse),
            Err(TakeOutcome::Absent) => Err(Error::unauthenticated(
                "token_used",
                "the token is expired, unknown or already used; get a new token",
            )),
        }
    }
}

/// A token claimed by this request. Finish it with [`TokenClaim::consume`]
/// once the operation had its effect, or [`TokenClaim::release`] if it failed
/// before anything became visible. Dropped unfinished (a client that went
/// away, a handler that failed), it releases itself.
pub struct TokenClaim(Lease);

impl TokenClaim {
    /// The operation succeeded: the token can never be used again.
    pub async fn consume(self) {
        match self.0.end().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("a token's claim had lapsed before it was consumed"),
            Err(err) => tracing::warn!(%err, "could not consume a token; it expires by itself"),
        }
    }

    /// The operation failed before anything became visible: the token may
    /// be used again until it expires.
    pub async fn release(self) {
        if let Err(err) = self.0.give_up().await {
            tracing::warn!(%err, "could not release a token claim; it lapses by itself");
        }
    }
}
