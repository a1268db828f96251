//! The state replicas share: token records, parcel write locks and rate
//! counters, as keys with lifetimes.
//!
//! [`SharedState`] is the small set of atomic key operations the service
//! needs. [`RedisState`] keeps them in Redis or a Redis Cluster, shared by
//! every replica; [`MemoryState`] keeps them in this process, for the
//! one-replica embedded mode. The rules built on them ([`Lease`], the token
//! store, the limits) are written once, above the trait.

mod error;
mod lease;
mod memory;
mod redis;
mod redis_access;
mod redis_checks;
mod sentinel;

pub use self::{
    error::StateError,
    lease::{Lease, TakeOutcome},
    memory::MemoryState,
    redis::{RedisConfig, RedisState, RedisTopology},
    redis_access::{RedisAccess, RedisAccessFiles, has_password, redacted_url},
    redis_checks::{NO_EVICTION, RedisNodeReport, RedisReport},
};

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

/// The value of a token record between issue and first use.
pub const ISSUED: &str = "issued";

/// The value of a key held by `holder`.
pub fn claimed_by(holder: &str) -> String {
    format!("claimed:{holder}")
}

/// How an attempt to take an issued key went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The key held [`ISSUED`]; it is now held by the caller.
    Now,
    /// Another holder has it.
    ByAnother,
    /// The key is absent: never set, expired or deleted.
    Absent,
}

/// Atomic operations on keys with lifetimes. Every operation is atomic
/// with respect to every other one on the same key, from any replica.
#[async_trait]
pub trait SharedState: Send + Sync {
    /// What this is, for logs (`redis`, `redis cluster`, `memory`).
    fn kind(&self) -> &'static str;

    /// Checks that the state answers.
    async fn ping(&self) -> Result<(), StateError>;

    /// What the Redis behind the state says of its eviction policy,
    /// persistence and replicas; `None` for state that is not Redis.
    async fn redis_report(&self) -> Result<Option<RedisReport>, StateError> {
        Ok(None)
    }

    /// Sets `key` to `value` for `ttl` unless it exists; answers whether it
    /// was set.
    async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StateError>;

    /// If `key` holds [`ISSUED`], sets it to [`claimed_by`]`(holder)` for
    /// `lease`.
    async fn take_issued(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Taken, StateError>;

    /// Extends `key` to `lease` from now if `holder` holds it.
    async fn renew(&self, key: &str, holder: &str, lease: Duration) -> Result<bool, StateError>;

    /// Deletes `key` if `holder` holds it.
    async fn end(&self, key: &str, holder: &str) -> Result<bool, StateError>;

    /// If `holder` holds `key`: sets it back to [`ISSUED`] for `remaining`,
    /// or deletes it when `remaining` is zero.
    async fn restore(
        &self,
        key: &str,
        holder: &str,
        remaining: Duration,
    ) -> Result<bool, StateError>;

    /// The value of `key`, if any (for inspection and tests).
    async fn value(&self, key: &str) -> Result<Option<String>, StateError>;

    /// How long `key` has left to live, if it exists (for inspection and
    /// tests).
    async fn remaining(&self, key: &str) -> Result<Option<Duration>, StateError>;

    /// Counts one hit on the counter `key`, which starts at zero and lives
    /// for `window` from its first hit; answers the count so far.
    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StateError>;

    /// Adds `member` to the set `key` until `expires_us` (Unix
    /// microseconds), after
    /// dropping the members that expired. If the set would then hold more
    /// than `cap` members, the ones that expire first (other than `member`)
    /// are taken out to make room; they are answered.
    async fn add_evicting(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<Vec<String>, StateError>;

    /// Adds `member` to the set `key` until `expires_us` (Unix
    /// microseconds), after dropping the members that expired, unless the
    /// set holds `cap` live members already (a member there already is
    /// given its new expiry). Answers whether `member` is in the set now.
    /// The set lives as long as its last member.
    async fn add_capped(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<bool, StateError>;

    /// Gives `member` of the set `key` the expiry `expires_us`, if it is
    /// there; the set lives as long as its last member.
    async fn rescore(&self, key: &str, member: &str, expires_us: u64) -> Result<(), StateError>;

    /// Deletes `key` if it holds [`ISSUED`]; answers whether it did.
    async fn end_issued(&self, key: &str) -> Result<bool, StateError>;

    /// Removes `member` from the set `key`.
    async fn remove_member(&self, key: &str, member: &str) -> Result<(), StateError>;

    /// If `key` holds `expected`: sets it to `new` for `ttl`, or deletes it
    /// when `new` is `None`. Answers whether it did.
    async fn swap(
        &self,
        key: &str,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StateError>;
}

/// The shared state of a replica.
pub type Shared = Arc<dyn SharedState>;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_micros() / 1_000_000
}

/// Microseconds since the Unix epoch.
pub fn unix_now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
