//! [`SharedState`] in this process, for the embedded one-replica mode.
//!
//! The same rules as in Redis (lifetimes, atomic take, compare-and-delete),
//! under one mutex that is never held across an `await`. Expired keys are
//! treated as absent at once and swept out as the map grows.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{ISSUED, SharedState, StateError, Taken, claimed_by, unix_now_micros};

enum Value {
    Text(String),
    Counter(u64),
    /// Members and their expiry (Unix microseconds).
    Set(HashMap<String, u64>),
}

struct Entry {
    value: Value,
    expires: Instant,
}

#[derive(Default)]
struct Keys {
    entries: HashMap<String, Entry>,
    /// Map size at which expired entries are swept next.
    sweep_at: usize,
}

impl Keys {
    /// The live entry at `key`; an expired one is removed.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = Instant::now();
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires <= now)
        {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn text(&mut self, key: &str) -> Option<&str> {
        match self.live(key) {
            Some(Entry {
                value: Value::Text(text),
                ..
            }) => Some(text),
            _ => None,
        }
    }

    fn put(&mut self, key: &str, value: Value, ttl: Duration) {
        if self.entries.len() >= self.sweep_at {
            let now = Instant::now();
            self.entries.retain(|_, entry| entry.expires > now);
            self.sweep_at = (self.entries.len() * 2).max(1024);
        }
        let expires = Instant::now() + ttl;
        self.entries
            .insert(key.to_owned(), Entry { value, expires });
    }

    /// Takes the members of the set at `key` out (none if it is not a set).
    fn members(&mut self, key: &str) -> HashMap<String, u64> {
        match self.entries.remove(key) {
            Some(Entry {
                value: Value::Set(members),
                expires,
            }) if expires > Instant::now() => members,
            _ => HashMap::new(),
        }
    }

    /// Puts a set back at `key`, living as long as its last member (`now`
    /// in Unix microseconds); an empty one is gone.
    fn put_set(&mut self, key: &str, members: HashMap<String, u64>, now: u64) {
        if let Some(last) = members.values().max().copied() {
            let ttl = Duration::from_micros(last.saturating_sub(now) + 1_000_000);
            self.put(key, Value::Set(members), ttl);
        }
    }

    fn held_by(&mut self, key: &str, holder: &str) -> bool {
        self.text(key) == Some(claimed_by(holder).as_str())
    }
}

/// The shared state of a single replica, in memory. Cheap to clone; clones
/// share the keys.
#[derive(Clone, Default)]
pub struct MemoryState {
    keys: Arc<Mutex<Keys>>,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> MutexGuard<'_, Keys> {
        // A panic while holding the lock cannot leave a key half-written
        // (every change is one map operation), so a poisoned lock is usable.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SharedState for MemoryState {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }

    async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if keys.live(key).is_some() {
            return Ok(false);
        }
        keys.put(key, Value::Text(value.to_owned()), ttl);
        Ok(true)
    }

    async fn take_issued(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Taken, StateError> {
        let mut keys = self.keys();
        Ok(match keys.text(key) {
            None => Taken::Absent,
            Some(ISSUED) => {
                keys.put(key, Value::Text(claimed_by(holder)), lease);
                Taken::Now
            }
            Some(_) => Taken::ByAnother,
        })
    }

    async fn renew(&self, key: &str, holder: &str, lease: Duration) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if !keys.held_by(key, holder) {
            return Ok(false);
        }
        keys.put(key, Value::Text(claimed_by(holder)), lease);
        Ok(true)
    }

    async fn end(&self, key: &str, holder: &str) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if !keys.held_by(key, holder) {
            return Ok(false);
        }
        keys.entries.remove(key);
        Ok(true)
    }

    async fn restore(
        &self,
        key: &str,
        holder: &str,
        remaining: Duration,
    ) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if !keys.held_by(key, holder) {
            return Ok(false);
        }
        if remaining.is_zero() {
            keys.entries.remove(key);
        } else {
            keys.put(key, Value::Text(ISSUED.to_owned()), remaining);
        }
        Ok(true)
    }

    async fn value(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self.keys().text(key).map(str::to_owned))
    }

    async fn remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        let now = Instant::now();
        Ok(self
            .keys()
            .live(key)
            .map(|entry| entry.expires.saturating_duration_since(now)))
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StateError> {
        let mut keys = self.keys();
        if let Some(Entry {
            value: Value::Counter(count),
            ..
        }) = keys.live(key)
        {
            *count += 1;
            return Ok(*count);
        }
        keys.put(key, Value::Counter(1), window);
        Ok(1)
    }

    async fn add_evicting(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<Vec<String>, StateError> {
        let now = unix_now_micros();
        let mut keys = self.keys();
        let mut members = keys.members(key);
        members.retain(|name, until| *until > now && name != member);
        let mut by_expiry: Vec<(u64, String)> = members
            .iter()
            .map(|(name, until)| (*until, name.clone()))
            .collect();
        by_expiry.sort();
        let over = (members.len() + 1).saturating_sub(cap.max(1) as usize);
        let evicted: Vec<String> = by_expiry
            .into_iter()
            .take(over)
            .map(|(_, name)| name)
            .collect();
        for name in &evicted {
            members.remove(name);
        }
        members.insert(member.to_owned(), expires_us);
        keys.put_set(key, members, now);
        Ok(evicted)
    }

    async fn add_capped(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<bool, StateError> {
        let now = unix_now_micros();
        let mut keys = self.keys();
        let mut members = keys.members(key);
        members.retain(|_, until| *until > now);
        let admitted = members.contains_key(member) || (members.len() as u64) < cap;
        if admitted {
            members.insert(member.to_owned(), expires_us);
        }
        keys.put_set(key, members, now);
        Ok(admitted)
    }

    async fn rescore(&self, key: &str, member: &str, expires_us: u64) -> Result<(), StateError> {
        let now = unix_now_micros();
        let mut keys = self.keys();
        let mut members = keys.members(key);
        if let Some(until) = members.get_mut(member) {
            *until = expires_us;
        }
        keys.put_set(key, members, now);
        Ok(())
    }

    async fn end_issued(&self, key: &str) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if keys.text(key) != Some(ISSUED) {
            return Ok(false);
        }
        keys.entries.remove(key);
        Ok(true)
    }

    async fn swap(
        &self,
        key: &str,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let mut keys = self.keys();
        if keys.text(key) != Some(expected) {
            return Ok(false);
        }
        match new {
            Some(new) => keys.put(key, Value::Text(new.to_owned()), ttl),
            None => {
                keys.entries.remove(key);
            }
        }
        Ok(true)
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<(), StateError> {
        if let Some(Entry {
            value: Value::Set(members),
            ..
        }) = self.keys().live(key)
        {
            members.remove(member);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_issued_key_is_taken_once_and_restored_only_by_its_holder() {
        let state = MemoryState::new();
        let ttl = Duration::from_secs(60);
        assert!(state.set_new("k", ISSUED, ttl).await.unwrap());
        assert!(!state.set_new("k", ISSUED, ttl).await.unwrap());
        assert_eq!(state.take_issued("k", "a", ttl).await.unwrap(), Taken::Now);
        assert_eq!(
            state.take_issued("k", "b", ttl).await.unwrap(),
            Taken::ByAnother
        );
        assert!(!state.restore("k", "b", ttl).await.unwrap());
        assert!(state.restore("k", "a", ttl).await.unwrap());
        assert_eq!(state.take_issued("k", "b", ttl).await.unwrap(), Taken::Now);
        assert!(!state.end("k", "a").await.unwrap());
        assert!(state.end("k", "b").await.unwrap());
        assert_eq!(
            state.take_issued("k", "c", ttl).await.unwrap(),
            Taken::Absent
        );
    }

    #[tokio::test]
    async fn keys_expire() {
        let state = MemoryState::new();
        assert!(
            state
                .set_new("k", ISSUED, Duration::from_millis(1))
                .await
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(state.value("k").await.unwrap(), None);
        assert_eq!(
            state.take_issued("k", "a", LEASE_FOR_TEST).await.unwrap(),
            Taken::Absent
        );
    }

    const LEASE_FOR_TEST: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_capped_set_evicts_the_members_that_expire_first() {
        let state = MemoryState::new();
        let now = unix_now_micros();
        let added = |member: &'static str, expires: u64| {
            let state = state.clone();
            async move { state.add_evicting("s", member, expires, 2).await.unwrap() }
        };
        assert!(added("a", now + 60_000_000).await.is_empty());
        assert!(added("b", now + 60_000_001).await.is_empty());
        assert_eq!(added("c", now + 60_000_002).await, vec!["a".to_owned()]);
        // Adding a member again does not evict another.
        assert!(added("c", now + 60_000_003).await.is_empty());
        state.remove_member("s", "b").await.unwrap();
        assert!(added("d", now + 60_000_004).await.is_empty());
        assert_eq!(added("e", now + 60_000_005).await, vec!["c".to_owned()]);
        assert_eq!(state.hit("h", Duration::from_secs(60)).await.unwrap(), 1);
        assert_eq!(state.hit("h", Duration::from_secs(60)).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_capped_set_refuses_a_new_member_past_its_cap_until_one_leaves_or_expires() {
        let state = MemoryState::new();
        let now = unix_now_micros();
        let later = now + 60_000_000;
        assert!(state.add_capped("s", "a", later, 2).await.unwrap());
        assert!(state.add_capped("s", "b", now + 50_000, 2).await.unwrap());
        assert!(!state.add_capped("s", "c", later, 2).await.unwrap());
        // A member already there is given its new expiry, not refused.
        assert!(state.add_capped("s", "a", later + 1, 2).await.unwrap());
        state.remove_member("s", "a").await.unwrap();
        assert!(state.add_capped("s", "c", later, 2).await.unwrap());
        // "b" expires: its place is free; moved on, it would have stayed.
        state.rescore("s", "c", later + 2).await.unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(state.add_capped("s", "d", later, 2).await.unwrap());
        assert!(!state.add_capped("s", "e", later, 2).await.unwrap());
        // A cap of 0 admits nothing new.
        assert!(!state.add_capped("t", "a", later, 0).await.unwrap());
    }

    #[tokio::test]
    async fn only_an_issued_key_is_ended_unclaimed() {
        let state = MemoryState::new();
        let ttl = Duration::from_secs(60);
        state.set_new("k", ISSUED, ttl).await.unwrap();
        state.set_new("held", ISSUED, ttl).await.unwrap();
        state.take_issued("held", "a", ttl).await.unwrap();
        assert!(state.end_issued("k").await.unwrap());
        assert!(!state.end_issued("held").await.unwrap());
        assert!(!state.end_issued("absent").await.unwrap());
        assert_eq!(state.value("k").await.unwrap(), None);
        assert_eq!(state.value("held").await.unwrap(), Some(claimed_by("a")));
    }
}
