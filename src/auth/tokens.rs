//! The one-use record of every token, in the shared state (docs/protocol.md, "Token lifecycle").
//!
//! Key layout (part of the contract between versions, docs/protocol.md,
//! "Shared state: the Redis key layout"):
//! `amo:token:{<jti>}` holds `issued` from issue until first use, with the
//! token's TTL. A request that uses the token takes it as a lease
//! (`claimed:<holder id>`, `AMO_LEASE_SECS`, renewed while the request
//! works). Consuming
//! deletes the key; releasing puts `issued` back for the token's remaining
//! lifetime. The braces make the jti the Redis Cluster hash tag.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{
    domain::{Address, ClientAddress},
    error::{Error, with_sources},
    state::{ISSUED, Lease, Shared, StateError, TakeOutcome, unix_now_micros},
    tasks::detached,
};

/// The Redis key of a token's record.
pub fn token_key(jti: &str) -> String {
    format!("amo:token:{{{jti}}}")
}

/// The value of a token record bound to the resumable upload `upload`.
pub fn bound_to(upload: &str) -> String {
    format!("bound:{upload}")
}

/// The key of the set of an account's outstanding tokens that were asked
/// for by the clients of `partition` (tokens issued before partitions
/// count in the account's unpartitioned set).
pub fn outstanding_key(user: &Address, partition: Option<&str>) -> String {
    match partition {
        Some(partition) => format!("amo:outstanding:{{{user}}}:{partition}"),
        None => format!("amo:outstanding:{{{user}}}"),
    }
}

/// The outstanding-token partition of the tokens `client` asks for: the
/// first 8 bytes of the SHA-256 of its name, in hex. Opaque, so that a
/// token does not carry its client's address in the clear.
pub fn partition_of(client: ClientAddress) -> String {
    let digest = Sha256::digest(client.key().as_bytes());
    hex::encode(&digest[..8])
}

/// The answer to a token that is expired, unknown or used.
pub fn token_used() -> Error {
    Error::unauthenticated(
        "token_used",
        "the token is expired, unknown or already used; get a new token",
    )
}

/// The shared token store.
#[derive(Clone)]
pub struct TokenStore {
    state: Shared,
    max_outstanding: u64,
    lease: Duration,
}

impl TokenStore {
    /// A store on `state`; an account holds at most `max_outstanding`
    /// unused, unexpired tokens (0: no cap); a claim is a lease of `lease`.
    pub fn new(state: Shared, max_outstanding: u64, lease: Duration) -> Self {
        Self {
            state,
            max_outstanding,
            lease,
        }
    }

    /// The shared state, for readiness checks.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Records a new token's `jti` for `user`, asked for by the clients of
    /// `partition`, valid for `ttl`. When that partition of the account
    /// then counts more than the cap of outstanding tokens, its oldest
    /// leave the count, and those not in use by a request are revoked:
    /// `/auth` needs no proof, so refusing would let anyone lock the
    /// account's owner out, and counting per client means a stranger's
    /// requests only ever evict the stranger's own tokens. The record and
    /// the count are written at once (one round trip).
    pub async fn issue(
        &self,
        jti: &str,
        user: &Address,
        partition: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        let key = token_key(jti);
        let record = self.state.set_new(&key, ISSUED, ttl);
        let count = async {
            if self.max_outstanding == 0 {
                return Ok(Vec::new());
            }
            self.state
                .add_evicting(
                    &outstanding_key(user, Some(partition)),
                    jti,
                    unix_now_micros() + ttl.as_micros() as u64,
                    self.max_outstanding,
                )
                .await
        };
        let (recorded, evicted) = futures_util::future::try_join(record, count).await?;
        if !recorded {
            return Err(Error::Internal(format!("jti {jti} already recorded")));
        }
        for old in evicted {
            // A token in use is not revoked: its request settles it.
            if self.state.end_issued(&token_key(&old)).await? {
                crate::metrics::limited("outstanding_tokens");
            }
        }
        Ok(())
    }

    /// What the record of token `jti` holds, if it exists.
    pub async fn binding(&self, jti: &str) -> Result<Option<String>, Error> {
        Ok(self.state.value(&token_key(jti)).await?)
    }

    /// Claims the token `jti` (expiring at `exp`, counted in the outstanding
    /// `partition` of `user`) for one request, atomically. Of concurrent
    /// claims on any replicas, at most one succeeds. The claim is taken in
    /// a task of its own: a request dropped while Redis takes it gives it
    /// back, rather than leave it to lapse.
    pub async fn claim(
        &self,
        jti: &str,
        user: &Address,
        partition: Option<&str>,
        exp: u64,
    ) -> Result<TokenClaim, Error> {
        let taken = detached(Lease::take_issued(
            self.state.clone(),
            token_key(jti),
            exp,
            self.lease,
        ))
        .await??;
        match taken {
            Ok(lease) => Ok(TokenClaim {
                lease,
                jti: jti.to_owned(),
                outstanding: (self.max_outstanding > 0).then(|| {
                    (
                        self.state.clone(),
                        outstanding_key(user, partition),
                        jti.to_owned(),
                    )
                }),
            }),
            Err(TakeOutcome::Held) => Err(Error::TokenInUse),
            Err(TakeOutcome::Absent) => Err(token_used()),
        }
    }
}

/// A token claimed by this request. Finish it with [`TokenClaim::consume`]
/// once the operation had its effect, or [`TokenClaim::release`] if it failed
/// before anything became visible. Dropped unfinished (a client that went
/// away, a handler that failed), it releases itself.
pub struct TokenClaim {
    lease: Lease,
    jti: String,
    /// Where the token counts as outstanding: state, set key, member.
    outstanding: Option<(Shared, String, String)>,
}

impl TokenClaim {
    /// The token's `jti`.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The claim's lease, for fencing before a commit.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Binds the token to the resumable upload `upload` for `lifetime`: it
    /// leaves the account's outstanding tokens, and its record names the
    /// upload (docs/protocol.md, "Resumable uploads").
    pub async fn bind(self, upload: &str, lifetime: Duration) -> Result<(), Error> {
        uncount(&self.outstanding).await;
        if self.lease.replace(&bound_to(upload), lifetime).await? {
            Ok(())
        } else {
            Err(StateError::Unexpected("a token's claim lapsed before it was bound".into()).into())
        }
    }

    /// The operation succeeded: the token can never be used again.
    pub async fn consume(self) {
        crate::metrics::token_consumed();
        let (_, ended) =
            futures_util::future::join(uncount(&self.outstanding), self.lease.end()).await;
        match ended {
            Ok(true) => {}
            Ok(false) => tracing::warn!("a token's claim had lapsed before it was consumed"),
            Err(err) => {
                tracing::warn!(err = %with_sources(&err), "could not consume a token; it expires by itself")
            }
        }
    }

    /// The operation failed before anything became visible: the token may
    /// be used again until it expires.
    pub async fn release(self) {
        if let Err(err) = self.lease.give_up().await {
            tracing::warn!(err = %with_sources(&err), "could not release a token claim; it lapses by itself");
        }
    }
}

/// Takes a used token out of its account's outstanding tokens.
async fn uncount(outstanding: &Option<(Shared, String, String)>) {
    if let Some((state, key, jti)) = outstanding {
        if let Err(err) = state.remove_member(key, jti).await {
            tracing::warn!(err = %with_sources(&err), "could not uncount a used token; it expires by itself");
        }
    }
}
