//! A shared state that records every call made to it, then passes it on to
//! the real one: a test reads what a piece of work asked of Redis (the
//! token records a refused request did not create, the calls of one sweep
//! pass).

use std::{sync::Mutex, time::Duration};

use amo_storage::state::{Shared, SharedState, StateError, Taken};

/// One call to the shared state, noted once it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The trait method called (`"set_new"`, `"value"`, …).
    pub operation: &'static str,
    /// The key it named (empty for `ping`).
    pub key: String,
    /// The member it named, for the calls on a set.
    pub member: Option<String>,
    /// Whether it answered `Ok(true)` (the calls that answer a boolean:
    /// the key was set, the lease renewed, the member added), or `Ok` (the
    /// others).
    pub yes: bool,
}

/// `inner`, with every call recorded.
pub struct RecordedState {
    inner: Shared,
    calls: Mutex<Vec<Call>>,
}

impl RecordedState {
    /// `inner`, recorded from now on.
    pub fn new(inner: Shared) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            inner,
            calls: Mutex::default(),
        })
    }

    /// The state the calls are passed on to.
    pub fn inner(&self) -> &Shared {
        &self.inner
    }

    /// Every call so far, in the order they answered.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Notes a call to `operation` on `key` (and `member`) that answered
    /// `answer`, and gives the answer back.
    fn note<T>(
        &self,
        operation: &'static str,
        key: &str,
        member: Option<&str>,
        answer: Result<T, StateError>,
        yes: impl FnOnce(&T) -> bool,
    ) -> Result<T, StateError> {
        let call = Call {
            operation,
            key: key.to_owned(),
            member: member.map(str::to_owned),
            yes: answer.as_ref().is_ok_and(yes),
        };
        self.calls.lock().unwrap().push(call);
        answer
    }
}

/// An answer that counts as yes whatever it is.
fn any<T>(_: &T) -> bool {
    true
}

/// A boolean answer.
fn is_true(answer: &bool) -> bool {
    *answer
}

#[async_trait::async_trait]
impl SharedState for RecordedState {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.note("ping", "", None, self.inner.ping().await, any)
    }

    async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StateError> {
        let answer = self.inner.set_new(key, value, ttl).await;
        self.note("set_new", key, None, answer, is_true)
    }

    async fn take_issued(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Taken, StateError> {
        let answer = self.inner.take_issued(key, holder, lease).await;
        self.note("take_issued", key, None, answer, any)
    }

    async fn renew(&self, key: &str, holder: &str, lease: Duration) -> Result<bool, StateError> {
        let answer = self.inner.renew(key, holder, lease).await;
        self.note("renew", key, None, answer, is_true)
    }

    async fn end(&self, key: &str, holder: &str) -> Result<bool, StateError> {
        let answer = self.inner.end(key, holder).await;
        self.note("end", key, None, answer, is_true)
    }

    async fn restore(
        &self,
        key: &str,
        holder: &str,
        remaining: Duration,
    ) -> Result<bool, StateError> {
        let answer = self.inner.restore(key, holder, remaining).await;
        self.note("restore", key, None, answer, is_true)
    }

    async fn value(&self, key: &str) -> Result<Option<String>, StateError> {
        let answer = self.inner.value(key).await;
        self.note("value", key, None, answer, any)
    }

    async fn remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        let answer = self.inner.remaining(key).await;
        self.note("remaining", key, None, answer, any)
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StateError> {
        let answer = self.inner.hit(key, window).await;
        self.note("hit", key, None, answer, any)
    }

    async fn add_evicting(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<Vec<String>, StateError> {
        let answer = self.inner.add_evicting(key, member, expires_us, cap).await;
        self.note("add_evicting", key, Some(member), answer, any)
    }

    async fn add_capped(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<bool, StateError> {
        let answer = self.inner.add_capped(key, member, expires_us, cap).await;
        self.note("add_capped", key, Some(member), answer, is_true)
    }

    async fn rescore(&self, key: &str, member: &str, expires_us: u64) -> Result<(), StateError> {
        let answer = self.inner.rescore(key, member, expires_us).await;
        self.note("rescore", key, Some(member), answer, any)
    }

    async fn end_issued(&self, key: &str) -> Result<bool, StateError> {
        let answer = self.inner.end_issued(key).await;
        self.note("end_issued", key, None, answer, is_true)
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<(), StateError> {
        let answer = self.inner.remove_member(key, member).await;
        self.note("remove_member", key, Some(member), answer, any)
    }

    async fn swap(
        &self,
        key: &str,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let answer = self.inner.swap(key, expected, new, ttl).await;
        self.note("swap", key, None, answer, is_true)
    }
}
