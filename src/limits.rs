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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

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
    /// Uploads: v1, v2 and tus `PATCH`.
    Upload,
    /// Memory of v1 upload bodies, in KiB: each is held whole, and holds
    /// what arrived of it.
    V1UploadMemory,
    /// Client connections.
    Connection,
    /// Downloads: v1 and v2, held while their body streams.
    Download,
}

impl SlotKind {
    /// The `limit` label of its refusals.
    fn label(self) -> &'static str {
        match self {
            Self::Upload => "concurrent_uploads",
            Self::V1UploadMemory => "v1_upload_memory",
            Self::Connection => "connections",
            Self::Download => "concurrent_downloads",
        }
    }

    /// The `resource` label of its gauges, and the bytes of one unit.
    fn resource(self) -> (&'static str, u64) {
        match self {
            Self::Upload => ("uploads", 1),
            Self::V1UploadMemory => ("v1_upload_memory_bytes", 1 << 10),
            Self::Connection => ("connections", 1),
            Self::Download => ("downloads", 1),
        }
    }

    /// What is done, for the refusal's text.
    fn doing(self) -> &'static str {
        match self {
            Self::Upload => "uploads",
            Self::V1UploadMemory => "KiB of v1 upload bodies",
            Self::Connection => "connections",
            Self::Download => "downloads",
        }
    }
}

/// How many units of a kind each client holds now.
type Holders = Arc<Mutex<HashMap<ClientAddress, usize>>>;

/// The slots of one kind of work on one replica, shared fairly: one client
/// holds at most its share of them, so that no client, however many
/// requests it sends, holds what every other client needs.
#[derive(Clone)]
pub struct Slots {
    kind: SlotKind,
    slots: Option<Arc<Semaphore>>,
    cap: usize,
    /// The most one client may hold, if less than the cap.
    per_client: Option<usize>,
    holders: Holders,
}

/// What one piece of work holds of the slots it took; freed on drop.
pub struct Slot(Vec<Held>);

/// Units taken by one client; given back on drop.
struct Held {
    /// `None` once absorbed by another holding.
    permit: Option<OwnedSemaphorePermit>,
    gauge: crate::metrics::InFlight,
    units: usize,
    client: ClientAddress,
    holders: Holders,
}

impl Held {
    /// Holds what `other` (of the same slots and client) held, too.
    fn absorb(&mut self, mut other: Held) {
        let units = std::mem::take(&mut other.units);
        self.units += units;
        self.gauge.absorb(&mut other.gauge);
        match (&mut self.permit, other.permit.take()) {
            (Some(permit), Some(more)) => permit.merge(more),
            (mine, more) => *mine = mine.take().or(more),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holders = lock(&self.holders);
        if let Some(held) = holders.get_mut(&self.client) {
            *held = held.saturating_sub(self.units);
            if *held == 0 {
                holders.remove(&self.client);
            }
        }
    }
}

fn lock(holders: &Holders) -> std::sync::MutexGuard<'_, HashMap<ClientAddress, usize>> {
    holders
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Slot {
    /// This and `other`, held and freed together.
    pub fn join(mut self, mut other: Slot) -> Slot {
        self.0.append(&mut other.0);
        self
    }
}

impl Slots {
    /// At most `cap` at once (0: no cap); one client at most
    /// `share_percent` of them, but never less than `client_floor` (what
    /// the largest single piece of work needs).
    pub fn new(kind: SlotKind, cap: usize, share_percent: u64, client_floor: usize) -> Self {
        let (resource, unit) = kind.resource();
        crate::metrics::capacity(resource, cap as u64 * unit);
        let share = (cap as u128 * u128::from(share_percent.min(100)) / 100) as usize;
        let per_client = share.max(client_floor).max(1);
        Self {
            kind,
            slots: (cap > 0).then(|| Arc::new(Semaphore::new(cap))),
            cap,
            per_client: (cap > 0 && per_client < cap).then_some(per_client),
            holders: Holders::default(),
        }
    }

    /// The cap (0: none).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The most one client may hold (the cap when there is no share).
    pub fn per_client(&self) -> usize {
        self.per_client.unwrap_or(self.cap)
    }

    /// How many are taken now.
    pub fn in_use(&self) -> usize {
        self.slots
            .as_ref()
            .map_or(0, |slots| self.cap - slots.available_permits())
    }

    /// A slot for `client`: 429 `client_share` past its share, 503 `busy`
    /// if all are taken.
    pub fn take(&self, client: ClientAddress) -> Result<Slot, Error> {
        self.take_many(client, 1)
    }

    /// `count` slots at once for `client` (at most the cap: a piece of
    /// work as large as the cap takes all): 429 `client_share` if the
    /// client would then hold more than its share (a client that holds
    /// none may take what one piece of work needs), 503 `busy` if that
    /// many are not free.
    pub fn take_many(&self, client: ClientAddress, count: usize) -> Result<Slot, Error> {
        let Some(slots) = &self.slots else {
            return Ok(Slot(Vec::new()));
        };
        let count = count.clamp(1, self.cap);
        let mut holders = lock(&self.holders);
        let held = holders.get(&client).copied().unwrap_or(0);
        if let Some(share) = self.per_client {
            if held > 0 && held + count > share {
                crate::metrics::limited("client_share");
                return Err(Error::ClientShare(format!(
                    "this client holds {held} of this replica's {} {}, its share; retry once \
                     one of its requests ends",
                    self.cap,
                    self.kind.doing()
                )));
            }
        }
        let permits = u32::try_from(count).unwrap_or(u32::MAX);
        match slots.clone().try_acquire_many_owned(permits) {
            Ok(permit) => {
                holders.insert(client, held + count);
                let (resource, unit) = self.kind.resource();
                Ok(Slot(vec![Held {
                    permit: Some(permit),
                    gauge: crate::metrics::InFlight::new(resource, count as u64 * unit),
                    units: count,
                    client,
                    holders: self.holders.clone(),
                }]))
            }
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

    /// An empty reservation for `client`, to grow as its work needs.
    pub fn reserve(&self, client: ClientAddress) -> Reservation {
        Reservation {
            slots: self.clone(),
            client,
            units: 0,
            slot: Slot(Vec::new()),
        }
    }
}

/// Units of one kind held by one piece of work, grown as it goes (a v1
/// body's memory, as its bytes arrive): what a client holds never runs
/// ahead of what it sent.
pub struct Reservation {
    slots: Slots,
    client: ClientAddress,
    units: usize,
    slot: Slot,
}

impl Reservation {
    /// Holds at least `units` in all, taking what is missing (refused as
    /// [`Slots::take_many`] refuses). A refused reservation gives back all
    /// it held at once, not when its work ends: the work it served is
    /// refused, and two reservations growing together must not both be
    /// refused for what the loser still held while it wound up (a v1
    /// upload refused for memory releases its token in Redis before it
    /// ends).
    pub fn grow_to(&mut self, units: usize) -> Result<(), Error> {
        if units > self.units {
            let more = match self.slots.take_many(self.client, units - self.units) {
                Ok(more) => more,
                Err(refused) => {
                    self.slot = Slot(Vec::new());
                    self.units = 0;
                    return Err(refused);
                }
            };
            self.units = units;
            // One holding, however often it grew.
            for more in more.0 {
                match self.slot.0.first_mut() {
                    Some(held) => held.absorb(more),
                    None => self.slot.0.push(more),
                }
            }
        }
        Ok(())
    }

    /// What it holds, to keep with the work.
    pub fn into_slot(self) -> Slot {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    /// The client of `text`.
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
        let slots = Slots::new(SlotKind::Upload, 1, 100, 1);
        let first = slots.take(client("10.0.0.1")).unwrap();
        assert!(matches!(
            slots.take(client("10.0.0.2")),
            Err(Error::Busy(_))
        ));
        drop(first);
        assert!(slots.take(client("10.0.0.2")).is_ok());
        let unlimited = Slots::new(SlotKind::Upload, 0, 25, 1);
        let _held: Vec<_> = (0..100)
            .map(|_| unlimited.take(client("10.0.0.1")).unwrap())
            .collect();
    }

    #[test]
    fn weighted_work_takes_its_share_and_frees_it_with_what_it_joined() {
        let memory = Slots::new(SlotKind::V1UploadMemory, 10, 100, 1);
        let uploads = Slots::new(SlotKind::Upload, 2, 100, 1);
        let one = client("10.0.0.1");
        let large = memory
            .take_many(one, 7)
            .unwrap()
            .join(uploads.take(one).unwrap());
        assert!(matches!(memory.take_many(one, 4), Err(Error::Busy(_))));
        let small = memory.take_many(one, 3).unwrap();
        assert_eq!(memory.in_use(), 10);
        drop(large);
        assert!(
            uploads.take(one).is_ok(),
            "the joined upload slot is freed too"
        );
        assert!(memory.take_many(one, 7).is_ok());
        drop(small);
        // Work larger than the cap takes all of it, once it is all free.
        let _all = memory.take_many(one, 1_000).unwrap();
        assert!(matches!(memory.take(one), Err(Error::Busy(_))));
    }

    #[test]
    fn one_client_holds_at_most_its_share_while_others_are_served() {
        let uploads = Slots::new(SlotKind::Upload, 8, 25, 1);
        assert_eq!(uploads.per_client(), 2);
        let (greedy, other) = (client("10.0.0.1"), client("2001:db8::1"));
        let held = [uploads.take(greedy).unwrap(), uploads.take(greedy).unwrap()];
        assert!(matches!(uploads.take(greedy), Err(Error::ClientShare(_))));
        let served: Vec<_> = (0..2).map(|_| uploads.take(other).unwrap()).collect();
        // Another address of the same /64 is the same client; the next /64
        // is another one.
        assert!(matches!(
            uploads.take(client("2001:db8::2:1")),
            Err(Error::ClientShare(_))
        ));
        assert!(uploads.take(client("2001:db8:0:1::1")).is_ok());
        drop(held);
        assert!(uploads.take(greedy).is_ok(), "a share frees with its work");
        drop(served);
    }

    #[test]
    fn a_client_holding_nothing_may_take_the_largest_piece_of_work() {
        // A budget of 10 MiB, a 25 % share, and a largest body needing 6.
        let memory = Slots::new(SlotKind::V1UploadMemory, 10, 25, 6);
        assert_eq!(memory.per_client(), 6);
        let one = client("10.0.0.1");
        let mut growing = memory.reserve(one);
        growing.grow_to(2).unwrap();
        growing.grow_to(6).unwrap();
        assert_eq!(memory.in_use(), 6);
        let other = client("10.0.0.2");
        assert!(matches!(memory.take_many(other, 5), Err(Error::Busy(_))));
        let held = memory.take_many(other, 4).unwrap();
        drop(growing.into_slot());
        drop(held);
        assert_eq!(memory.in_use(), 0, "everything grown is freed");
        let mut growing = memory.reserve(one);
        growing.grow_to(6).unwrap();
        assert!(matches!(growing.grow_to(7), Err(Error::ClientShare(_))));
    }

    #[test]
    fn a_refused_reservation_holds_nothing_so_another_may_grow() {
        // Two v1 bodies grow in a budget of 10: the one refused frees its
        // memory at once, not when its upload has wound up.
        let memory = Slots::new(SlotKind::V1UploadMemory, 10, 100, 10);
        let (mut first, mut second) = (
            memory.reserve(client("10.0.0.1")),
            memory.reserve(client("10.0.0.2")),
        );
        first.grow_to(5).unwrap();
        second.grow_to(4).unwrap();
        assert!(matches!(first.grow_to(7), Err(Error::Busy(_))));
        assert_eq!(memory.in_use(), 4, "the refused reservation holds nothing");
        second.grow_to(9).unwrap();
        drop((first, second));
        assert_eq!(memory.in_use(), 0);
    }
}
