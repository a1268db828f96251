//! The write path, shared by v1 (a whole body) and v2 (a stream).
//!
//! A parcel becomes visible only once its whole body arrived and matched its
//! SHA-256. Bodies stream straight through to the store, hashed on the way,
//! with no part buffer:
//!
//! - **A known length up to the single-PUT limit** goes up in one
//!   `PutObject` with `If-None-Match: *`, whose body is the client's body as
//!   it arrives. Its last chunk is held back until the client's body ended
//!   and matched: on a mismatch, a short body or a client that goes away,
//!   the `PutObject` is failed before S3 has its `Content-Length` bytes, and
//!   S3 stores nothing.
//! - **A longer known length** goes up as a multipart upload whose parts
//!   stream straight from the client's body, each an `UploadPart` of known
//!   length. It is completed only after the body matched, and aborted
//!   otherwise.
//! - **A body of unknown length** (chunked) is the one case that buffers,
//!   at most one part: if it ends within a part it goes up in one
//!   `PutObject`, else part by part.
//!
//! Ceph ignores `If-None-Match` on `CompleteMultipartUpload`, so every
//! commit (the release of a `PutObject`'s last chunk, or the
//! `CompleteMultipartUpload`) holds a per-parcel write lock in the shared
//! state (`amo:lock:{<parcel id>}`); a multipart commit looks for an existing
//! parcel under it. The lock is taken only once the whole body arrived and
//! matched, and only for the commit: a client that trickles a body, or
//! declares someone else's content, holds nothing that stops the rightful
//! upload. Until then, uploads of the same content go on side by side, and
//! exactly one commit wins.
//!
//! A multipart upload in progress is marked live in the shared state
//! (`amo:multipart:{<upload id>}`), a lease its writer renews while the body
//! streams. The sweep (`super::sweep`) aborts the multipart uploads whose
//! mark lapsed and that S3 saw no part of for a grace: their replica died.

use std::{future::Future, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Parcels;
use crate::{
    auth::Spend,
    domain::{Address, ParcelId, ParcelMetadata, Sha256Hex},
    error::{Error, PARCEL_STORE, with_sources},
    state::{Lease, StateError},
    storage::{PartUpload, PutOutcome, StoreError, StoredParcel},
};

/// S3 allows at most this many parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// The part size of a body of declared `length`: `base`
/// (`AMO_S3_PART_SIZE_BYTES`), or, when [`MAX_PARTS`] of those cannot hold
/// it, its length ÷ [`MAX_PARTS`] rounded up to a MiB, as the AWS SDKs do;
/// never past `max` (`AMO_S3_MAX_PART_SIZE_BYTES`, which start-up checks
/// holds the largest parcel).
pub fn part_size_for(length: u64, base: usize, max: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let grown = length.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    grown.max(base as u64).min(max.max(base as u64))
}

/// How long a commit waits for another commit of the same parcel to end
/// before it answers 409 `upload_in_progress`. A commit is the last chunk
/// of a `PutObject`, or one `CompleteMultipartUpload`: seconds at most.
const COMMIT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long a commit waits for the shared state to answer again once it
/// failed: as long as one Redis operation may take. A blip passes within
/// it; a failover (seconds) does not, and the request answers 503 rather
/// than hold its client (issue 26: one upload waited 6 s for its 503, as
/// this wait was the whole [`COMMIT_LOCK_WAIT`] and its last attempt and
/// the token's release each added a Redis timeout).
const STATE_FAILURE_WAIT: Duration = Duration::from_secs(2);

/// The pause between two attempts to take a commit lock.
const COMMIT_LOCK_POLL: Duration = Duration::from_millis(50);

/// Chunks in flight between the client's body and the store's request.
pub(super) const FEED_DEPTH: usize = 4;

/// The pieces a part held in memory is handed to S3 in.
const HELD_PIECE: usize = 256 * 1024;

/// The shared-state key of a parcel's write lock.
pub fn lock_key(id: &ParcelId) -> String {
    format!("amo:lock:{{{id}}}")
}

/// The shared-state key that marks a multipart upload live.
pub fn multipart_mark_key(upload_id: &str) -> String {
    format!("amo:multipart:{{{upload_id}}}")
}

/// What a new parcel is made of.
pub(super) struct NewParcel<'a> {
    pub id: &'a ParcelId,
    pub owner: &'a Address,
    pub metadata: &'a ParcelMetadata,
    /// What its commit spends (the gate, `parcels/gate.rs`).
    pub spend: &'a Spend<'a>,
    /// Where a commit that reached the store leaves the parcel's write
    /// lock, for the caller to end together with the token.
    pub lock_after: &'a LockAfter,
}

/// The parcel's write lock of a commit (an upload or a remove) that reached
/// the store, ended by the request while its token is settled, in the same
/// round trip ([`LockAfter::end_with`]); a commit that failed before the
/// store ends its lock itself.
#[derive(Default)]
pub(super) struct LockAfter(std::sync::Mutex<Option<Lease>>);

impl LockAfter {
    /// Keeps `lock` for [`LockAfter::end_with`].
    pub(super) fn keep(&self, lock: Lease) {
        let previous = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(lock);
        debug_assert!(previous.is_none(), "one commit, one lock");
    }

    /// Runs `settle` and ends the kept lock, if any, at the same time;
    /// answers what `settle` answers.
    pub(super) async fn end_with<T>(self, settle: impl Future<Output = T>) -> T {
        let kept = self
            .0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unlocked = async {
            if let Some(lock) = kept {
                unlock(lock).await;
            }
        };
        futures_util::future::join(unlocked, settle).await.1
    }
}

/// A client's body as it arrives: counted and bounded as it is read,
/// hashed as it is handed out, in pieces of at most a given size.
pub(super) struct Incoming<S> {
    pub(super) body: S,
    /// What was read but not handed out yet.
    pub(super) carry: Option<Bytes>,
    pub(super) hasher: Sha256,
    pub(super) received: u64,
    pub(super) max: u64,
    pub(super) idle: Duration,
    /// How long the store may take to accept a chunk.
    pub(super) store_wait: Duration,
}

impl<S> Incoming<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
{
    /// The next piece of at most `limit` bytes; `None` at the end.
    pub(super) async fn next(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        let mut chunk = match self.carry.take() {
            Some(chunk) => chunk,
            None => match self.read().await? {
                Some(chunk) => chunk,
                None => return Ok(None),
            },
        };
        if chunk.len() > limit {
            self.carry = Some(chunk.split_off(limit));
        }
        // Hashed as handed out: the hash never covers bytes held back.
        self.hasher.update(&chunk);
        Ok(Some(chunk))
    }

    async fn read(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let chunk = tokio::time::timeout(self.idle, self.body.try_next())
                .await
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "the body sent nothing for {} s; the upload is abandoned",
                        self.idle.as_secs()
                    ))
                })?
                .map_err(|err| Error::body_failed("the body ended early", &err))?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            if chunk.is_empty() {
                continue;
            }
            self.received = self.received.saturating_add(chunk.len() as u64);
            crate::metrics::bytes_received(chunk.len() as u64);
            if self.received > self.max {
                return Err(too_large(self.received, self.max));
            }
            return Ok(Some(chunk));
        }
    }

    /// Checks, at the end of the body, that it matched `declared`.
    fn check(&mut self, declared: &Sha256Hex) -> Result<(), Error> {
        let actual = Sha256Hex::from_digest(&std::mem::take(&mut self.hasher).finalize());
        if actual == *declared {
            Ok(())
        } else {
            Err(Error::HashMismatch {
                declared: declared.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// The next `size` bytes, or fewer at the end of the body.
    async fn fill(&mut self, size: usize) -> Result<BytesMut, Error> {
        let mut part = BytesMut::new();
        while part.len() < size {
            match self.next(size - part.len()).await? {
                Some(piece) => part.extend_from_slice(&piece),
                None => break,
            }
        }
        Ok(part)
    }

    /// Hands exactly `length` bytes to `feed`; fails if the body ends
    /// first.
    async fn feed_exactly(
        &mut self,
        length: u64,
        feed: &mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Result<(), Error> {
        let mut sent: u64 = 0;
        while sent < length {
            let left = usize::try_from(length - sent).unwrap_or(usize::MAX);
            let piece = self
                .next(left)
                .await?
                .ok_or_else(|| short_body(sent, length))?;
            sent += piece.len() as u64;
            self.hand(feed, piece).await?;
        }
        Ok(())
    }

    /// Hands `piece` to the store's request, which must take it within the
    /// store's timeout.
    pub(super) async fn hand(
        &mut self,
        feed: &mpsc::Sender<std::io::Result<Bytes>>,
        piece: Bytes,
    ) -> Result<(), Error> {
        hand_to(feed, piece, self.store_wait).await
    }
}

/// Hands `piece` to the store's request, which must take it within `wait`.
/// A timer is armed only when the feed is full: most chunks find room at
/// once.
async fn hand_to(
    feed: &mpsc::Sender<std::io::Result<Bytes>>,
    piece: Bytes,
    wait: Duration,
) -> Result<(), Error> {
    let piece = match feed.try_send(Ok(piece)) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(store_stopped()),
        Err(mpsc::error::TrySendError::Full(piece)) => piece,
    };
    match tokio::time::timeout(wait, feed.send(piece)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(store_stopped()),
        Err(_) => Err(StoreError::unavailable(format!(
            "S3 took no byte of the body for {} s",
            wait.as_secs()
        ))
        .into()),
    }
}

impl Parcels {
    /// Writes a whole body whose hash is already checked.
    pub(super) async fn write_whole(
        &self,
        parcel: &NewParcel<'_>,
        body: Bytes,
    ) -> Result<PutOutcome, Error> {
        let lock = self.lock_for_commit(parcel.id).await?;
        if let Err(err) = self.pass_gate(parcel.spend, Some(&lock)).await {
            unlock(lock).await;
            return Err(err);
        }
        let outcome = self
            .store
            .put_new(parcel.id, body, parcel.owner, parcel.metadata)
            .await;
        parcel.lock_after.keep(lock);
        self.settle_put(parcel, outcome?).await
    }

    /// Streams `body` into the store, hashing it on the way, and makes it
    /// visible only if its SHA-256 is `parcel.id`'s. `length` is the
    /// declared length, if any.
    pub(super) async fn write_stream<S>(
        &self,
        parcel: NewParcel<'_>,
        body: S,
        length: Option<u64>,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        // A declared length grows its parts up to the largest parcel; a
        // body of unknown length keeps the configured part size.
        let max = self.limits.max_parcel_bytes;
        if let Some(length) = length.filter(|length| *length > max) {
            return Err(too_large(length, max));
        }
        let chunked_max = self.limits.parts_max_bytes();
        let mut incoming = Incoming {
            body,
            carry: None,
            hasher: Sha256::new(),
            received: 0,
            max: length.unwrap_or(chunked_max),
            idle: self.limits.body_idle_timeout,
            store_wait: self.limits.store_timeout,
        };
        match length {
            Some(length) if length > 0 && length <= self.limits.single_put_max_bytes => {
                self.put_streamed(&parcel, &mut incoming, length).await
            }
            Some(length) if length > 0 => {
                if let Some(existing) = self.already_stored(&parcel).await? {
                    return Ok(existing);
                }
                self.parts_streamed(&parcel, &mut incoming, length).await
            }
            _ => {
                if let Some(existing) = self.already_stored(&parcel).await? {
                    return Ok(existing);
                }
                self.buffered(&parcel, &mut incoming)
                    .await
                    .map_err(|err| match err {
                        Error::TooLarge(_) => too_large_chunked(incoming.received, chunked_max),
                        other => other,
                    })
            }
        }
    }

    /// Before a large upload: a parcel with its id already there answers at
    /// once (200 for its owner, 409 for another), without the body.
    async fn already_stored(&self, parcel: &NewParcel<'_>) -> Result<Option<PutOutcome>, Error> {
        match self.store.head(parcel.id).await? {
            Some(existing) => same_owner(parcel.id, &existing, parcel.owner)
                .map(|()| Some(PutOutcome::AlreadyExists)),
            None => Ok(None),
        }
    }

    /// One `PutObject` whose body is the client's, its last chunk held back
    /// until the body ended and matched, and the write lock taken.
    async fn put_streamed<S>(
        &self,
        parcel: &NewParcel<'_>,
        incoming: &mut Incoming<S>,
        length: u64,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let (sender, feed) = mpsc::channel(FEED_DEPTH);
        let put = self
            .store
            .put_fed(parcel.id, length, feed, parcel.owner, parcel.metadata);
        let fed = async move {
            let fed = async {
                let mut held: Option<Bytes> = None;
                while let Some(piece) = incoming.next(usize::MAX).await? {
                    if let Some(ready) = held.replace(piece) {
                        incoming.hand(&sender, ready).await?;
                    }
                }
                if incoming.received != length {
                    return Err(short_body(incoming.received, length));
                }
                incoming.check(&parcel.id.content_hash())?;
                let lock = self.lock_for_commit(parcel.id).await?;
                if let Err(err) = self.pass_gate(parcel.spend, Some(&lock)).await {
                    unlock(lock).await;
                    return Err(err);
                }
                if let Some(last) = held {
                    if let Err(err) = incoming.hand(&sender, last).await {
                        unlock(lock).await;
                        return Err(err);
                    }
                }
                Ok(lock)
            }
            .await;
            end_feed(sender, &fed);
            fed
        };
        let (fed, put) = fed_then_answered(fed, put, self.limits.store_timeout).await;
        // The whole body went up, and S3 did not answer: it may have
        // stored it.
        let put = put.unwrap_or_else(|waited| {
            Err(StoreError::outcome_unknown(format!(
                "PutObject of {} got no answer within {waited:?} of its last byte",
                parcel.id
            )))
        });
        let failed = match fed {
            Ok(lock) => {
                parcel.lock_after.keep(lock);
                return self.settle_put(parcel, put?).await;
            }
            Err(failed) => failed,
        };
        match put {
            // S3 found the parcel there before the body was through.
            Ok(PutOutcome::AlreadyExists) => {
                self.settle_put(parcel, PutOutcome::AlreadyExists).await
            }
            Ok(PutOutcome::Created) => Err(Error::Internal(format!(
                "S3 stored {} from a body that failed: {failed}",
                parcel.id
            ))),
            // The store failed first: its error is the cause.
            Err(store) if is_store_stopped(&failed) => Err(store.into()),
            Err(_) => Err(failed),
        }
    }

    /// A multipart upload whose parts stream straight from the client's
    /// body, each of known length.
    async fn parts_streamed<S>(
        &self,
        parcel: &NewParcel<'_>,
        incoming: &mut Incoming<S>,
        length: u64,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let part_size = part_size_for(length, self.limits.part_size, self.limits.max_part_size);
        let (mut upload, mark) = self.start_multipart(parcel).await?;
        tracing::info!(
            parcel = %parcel.id,
            length,
            part_size,
            parts = length.div_ceil(part_size),
            "a multipart upload of declared length started"
        );
        let written = async {
            let mut left = length;
            while left > 0 {
                let this_part = left.min(part_size);
                let (sender, feed) = mpsc::channel(FEED_DEPTH);
                let fed = async {
                    let fed = incoming.feed_exactly(this_part, &sender).await;
                    end_feed(sender, &fed);
                    fed
                };
                let (fed, pushed) = fed_then_answered(
                    fed,
                    upload.push_part(this_part, feed),
                    self.limits.store_timeout,
                )
                .await;
                part_outcome(fed, pushed)?;
                left -= this_part;
            }
            // Nothing may follow the declared length.
            if incoming.next(1).await?.is_some() {
                return Err(too_large(length.saturating_add(1), length));
            }
            incoming.check(&parcel.id.content_hash())
        }
        .await;
        self.finish_multipart(parcel, upload, mark, written).await
    }

    /// A body of unknown length: one part is buffered at a time. A body
    /// that ends within the first part goes up in one `PutObject`.
    async fn buffered<S>(
        &self,
        parcel: &NewParcel<'_>,
        incoming: &mut Incoming<S>,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let part_size = self.limits.part_size;
        let first = incoming.fill(part_size).await?;
        if first.len() < part_size {
            incoming.check(&parcel.id.content_hash())?;
            return self.write_whole(parcel, first.freeze()).await;
        }
        let (mut upload, mark) = self.start_multipart(parcel).await?;
        let written = async {
            let mut part = first;
            loop {
                self.push_held(upload.as_mut(), part.freeze()).await?;
                part = incoming.fill(part_size).await?;
                if part.is_empty() {
                    break;
                }
                if upload.parts() as u64 >= MAX_PARTS {
                    return Err(too_large(incoming.received, MAX_PARTS * part_size as u64));
                }
            }
            incoming.check(&parcel.id.content_hash())
        }
        .await;
        self.finish_multipart(parcel, upload, mark, written).await
    }

    /// Pushes a part held in memory, handed over in pieces of at most
    /// [`HELD_PIECE`] bytes, each of which S3 must take within its timeout,
    /// as a streamed part's chunks.
    async fn push_held(&self, upload: &mut dyn PartUpload, part: Bytes) -> Result<(), Error> {
        let (sender, feed) = mpsc::channel(FEED_DEPTH);
        let wait = self.limits.store_timeout;
        let length = part.len() as u64;
        let fed = async move {
            let mut rest = part;
            let mut fed = Ok(());
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(HELD_PIECE));
                fed = hand_to(&sender, piece, wait).await;
                if fed.is_err() {
                    break;
                }
            }
            end_feed(sender, &fed);
            fed
        };
        let (fed, pushed) = fed_then_answered(fed, upload.push_part(length, feed), wait).await;
        part_outcome(fed, pushed)
    }

    /// Completes a multipart upload whose parts were `written` (and
    /// matched), or aborts it; ends its live mark either way.
    async fn finish_multipart(
        &self,
        parcel: &NewParcel<'_>,
        upload: Box<dyn PartUpload>,
        mark: Lease,
        written: Result<(), Error>,
    ) -> Result<PutOutcome, Error> {
        let outcome = match written {
            Ok(()) => self.commit_parts(parcel, upload).await,
            // S3 itself failed: the abort, an S3 call too, goes on in the
            // background (the upload's drop), not before the answer.
            Err(
                err @ Error::Unavailable {
                    service: PARCEL_STORE,
                    ..
                },
            ) => {
                drop(upload);
                Err(err)
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        };
        let end = async move {
            if let Err(err) = mark.end().await {
                tracing::debug!(err = %with_sources(&err), "could not end a multipart upload's live mark; it lapses");
            }
        };
        if outcome.is_ok() {
            end.await;
        } else {
            // A failure may be Redis's: ending the mark would wait for its
            // timeout too. The upload is aborted; its mark ends on its own.
            tokio::spawn(end);
        }
        outcome
    }

    /// Starts a multipart upload and marks it live.
    async fn start_multipart(
        &self,
        parcel: &NewParcel<'_>,
    ) -> Result<(Box<dyn PartUpload>, Lease), Error> {
        let upload = self
            .store
            .start_upload(parcel.id, parcel.owner, parcel.metadata)
            .await?;
        let mark = Lease::try_take(
            &self.state,
            multipart_mark_key(upload.upload_id()),
            self.limits.lease,
        )
        .await;
        match mark {
            Ok(Some(mark)) => Ok((upload, mark)),
            Ok(None) => {
                upload.abort().await;
                Err(Error::Internal(format!(
                    "a new multipart upload of parcel {} is marked live already",
                    parcel.id
                )))
            }
            Err(err) => {
                upload.abort().await;
                Err(err.into())
            }
        }
    }

    /// Completes a multipart upload under the parcel's write lock, unless a
    /// parcel with its id exists: then it answers whose that is.
    async fn commit_parts(
        &self,
        parcel: &NewParcel<'_>,
        upload: Box<dyn PartUpload>,
    ) -> Result<PutOutcome, Error> {
        let lock = match self.lock_for_commit(parcel.id).await {
            Ok(lock) => lock,
            Err(err) => {
                upload.abort().await;
                return Err(err);
            }
        };
        if let Err(err) = self.pass_gate(parcel.spend, Some(&lock)).await {
            upload.abort().await;
            unlock(lock).await;
            return Err(err);
        }
        let outcome = match self.store.head(parcel.id).await {
            Ok(None) => upload.complete().await,
            Ok(Some(_)) => {
                upload.abort().await;
                Ok(PutOutcome::AlreadyExists)
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        };
        parcel.lock_after.keep(lock);
        self.settle_put(parcel, outcome?).await
    }

    /// Takes the parcel's write lock, waiting up to [`COMMIT_LOCK_WAIT`]
    /// for another commit to end (409 `upload_in_progress` past that, with
    /// the lock's remaining time), or up to [`STATE_FAILURE_WAIT`] after the
    /// shared state first failed for it to answer again (503 past that): a
    /// whole body is not thrown away for a short blip, and a failover does
    /// not hold the client for long.
    pub(super) async fn lock_for_commit(&self, id: &ParcelId) -> Result<Lease, Error> {
        let mut give_up = tokio::time::Instant::now() + COMMIT_LOCK_WAIT;
        let mut state_failed = false;
        loop {
            let started = tokio::time::Instant::now();
            let take = Lease::try_take(&self.state, lock_key(id), self.limits.lease);
            // Once the state failed, no attempt runs past the deadline; until
            // then each is bounded by the state's own timeout.
            let attempt = if state_failed {
                tokio::time::timeout_at(give_up, take).await
            } else {
                Ok(take.await)
            };
            // `None`: another commit holds the lock.
            let failure = match attempt {
                Ok(Ok(Some(lock))) => return Ok(lock),
                Ok(Ok(None)) => None,
                Ok(Err(err)) => Some(err),
                Err(_) => Some(StateError::unavailable(
                    "no answer from the shared state within the commit's wait",
                )),
            };
            let now = tokio::time::Instant::now();
            if failure.is_some() && !state_failed {
                // Counted from the start of the attempt that failed: one
                // that timed out used the whole wait already.
                state_failed = true;
                give_up = give_up.min(started + STATE_FAILURE_WAIT);
            }
            if now >= give_up {
                return Err(match failure {
                    None => {
                        let left = self.state.remaining(&lock_key(id)).await?;
                        Error::upload_in_progress(id, left)
                    }
                    Some(err) => err.into(),
                });
            }
            tokio::time::sleep_until(give_up.min(now + COMMIT_LOCK_POLL)).await;
        }
    }

    /// A conditional write that found the parcel there: whose is it?
    pub(super) async fn settle_put(
        &self,
        parcel: &NewParcel<'_>,
        outcome: PutOutcome,
    ) -> Result<PutOutcome, Error> {
        if outcome == PutOutcome::Created {
            return Ok(outcome);
        }
        let existing = self.store.head(parcel.id).await?.ok_or_else(|| {
            StoreError::unavailable(format!(
                "{} existed, then vanished during upload",
                parcel.id
            ))
        })?;
        same_owner(parcel.id, &existing, parcel.owner).map(|()| PutOutcome::AlreadyExists)
    }
}

/// Runs the feeding of a body and the store's request that reads it
/// together. Once the body is fed, the store must answer within `within`
/// (`Err(within)` past it); a store that answers first (a refusal, a
/// failure) ends the feeding at its next chunk. A feeding that failed for
/// another reason than the store's stopping (the client's body failed, or
/// S3 took no byte for its timeout) leaves the store's request unfinished:
/// it is dropped unless it already answered, so that a stalled S3 is not
/// waited for twice, and an unfinished body stores nothing.
pub(super) async fn fed_then_answered<F, R, P, T>(
    fed: F,
    store: P,
    within: Duration,
) -> (Result<R, Error>, Result<T, Duration>)
where
    F: Future<Output = Result<R, Error>>,
    P: Future<Output = T>,
{
    let mut store = std::pin::pin!(store);
    let mut fed = std::pin::pin!(fed);
    tokio::select! {
        fed = &mut fed => {
            let within = match &fed {
                Err(err) if !is_store_stopped(err) => Duration::ZERO,
                _ => within,
            };
            let answered = tokio::time::timeout(within, store).await.map_err(|_| within);
            (fed, answered)
        }
        answered = &mut store => (fed.await, Ok(answered)),
    }
}

/// How a part went up, from its feeding and the store's answer: the
/// store's error when it stopped reading, else the feeding's.
fn part_outcome(
    fed: Result<(), Error>,
    pushed: Result<Result<(), StoreError>, Duration>,
) -> Result<(), Error> {
    let pushed = pushed.unwrap_or_else(|waited| {
        Err(StoreError::unavailable(format!(
            "UploadPart got no answer within {waited:?} of its last byte"
        )))
    });
    match (fed, pushed) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(err), Err(store)) if is_store_stopped(&err) => Err(store.into()),
        (Err(err), _) => Err(err),
        (Ok(()), Err(err)) => Err(err.into()),
    }
}

pub(super) async fn unlock(lock: Lease) {
    if let Err(err) = lock.end().await {
        tracing::warn!(err = %with_sources(&err), "could not end a parcel write lock; it lapses by itself");
    }
}

/// Ends a feed once its feeding ended: if that failed, the feed fails too,
/// so that the store never gets the length it announced and stores nothing.
pub(super) fn end_feed<T>(sender: mpsc::Sender<std::io::Result<Bytes>>, fed: &Result<T, Error>) {
    if let Err(err) = fed {
        let _ = sender.try_send(Err(std::io::Error::other(err.to_string())));
    }
}

/// The message of a feed whose store stopped reading.
const STORE_STOPPED: &str = "the store stopped reading the body";

pub(super) fn store_stopped() -> Error {
    Error::Internal(STORE_STOPPED.into())
}

pub(super) fn is_store_stopped(err: &Error) -> bool {
    matches!(err, Error::Internal(message) if message == STORE_STOPPED)
}

pub(super) fn short_body(received: u64, length: u64) -> Error {
    Error::BadRequest(format!(
        "the body ended after {received} of the {length} bytes it declared"
    ))
}

pub(super) fn too_large(size: u64, max: u64) -> Error {
    Error::TooLarge(format!(
        "the body is over {max} bytes, the largest parcel this service stores (got {size})"
    ))
}

/// A body of unknown length past its own maximum: [`MAX_PARTS`] parts of
/// the configured part size.
fn too_large_chunked(size: u64, max: u64) -> Error {
    Error::TooLarge(format!(
        "a body of unknown length (chunked) is at most {max} bytes (10,000 parts of \
         AMO_S3_PART_SIZE_BYTES, never past AMO_MAX_PARCEL_BYTES), got {size}: declare the \
         length (Content-Length) of a longer one"
    ))
}

fn same_owner(id: &ParcelId, existing: &StoredParcel, owner: &Address) -> Result<(), Error> {
    if existing.owner == *owner {
        Ok(())
    } else {
        Err(Error::OwnedByAnother(id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_part_size_grows_with_the_declared_length_as_the_aws_sdks_do() {
        let base = 8 << 20;
        let max = 525 * MIB;
        // Up to 10,000 parts of the base, the base.
        assert_eq!(part_size_for(1, base, max), 8 * MIB);
        assert_eq!(part_size_for(MAX_PARTS * 8 * MIB, base, max), 8 * MIB);
        // Past it, length ÷ 10,000 rounded up to a MiB.
        assert_eq!(part_size_for(MAX_PARTS * 8 * MIB + 1, base, max), 9 * MIB);
        let hundred_gib = 100u64 << 30;
        assert_eq!(part_size_for(hundred_gib, base, max), 11 * MIB);
        assert!(hundred_gib.div_ceil(11 * MIB) <= MAX_PARTS);
        // 5 TiB takes 525 MiB parts, 10,000 of them at most.
        let five_tib = 5u64 << 40;
        assert_eq!(part_size_for(five_tib, base, max), 525 * MIB);
        assert!(five_tib.div_ceil(525 * MIB) <= MAX_PARTS);
        // Never past the largest part.
        assert_eq!(part_size_for(five_tib, base, 64 * MIB), 64 * MIB);
    }
}
